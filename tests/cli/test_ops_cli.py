"""The operator CLI (status, failed, retry, replay, show) on a real Redis holding real jobs in every state.

Jobs are made the way production makes them: signed kie.ai callbacks posted through the app, then a real
ArchiveWorker (``make_worker(settings, connection).work(burst=True)``) against a local-directory archive,
downloading from a loopback file host that answers 200, 404, 503 or HTML. The CLI is called in-process
through ``veo_archiver.cli.main.main``.

The worker runs in a freshly spawned interpreter, not in this one: RQ forks a work horse per job, and
obstore's Tokio runtime does not survive a fork. Once this process has read the archive (``show`` does),
a horse forked from it hangs forever in its first obstore call.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
import redis
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry, FinishedJobRegistry, ScheduledJobRegistry, StartedJobRegistry
from rq.serializers import JSONSerializer
from starlette.testclient import TestClient

from receiver.app import create_app
from veo_archiver import archive_keys, redis_keys, standard_webhooks
from veo_archiver.cli.main import main
from veo_archiver.clock import iso
from veo_archiver.intake_format import decode_entry
from veo_archiver.queue_view import queue_of
from veo_archiver.settings import Settings
from veo_archiver.sim import kie as kie_sim
from veo_archiver.sim.files import FileHost, HostedFile
from veo_archiver.sim.media import make_mp4
from veo_archiver.storage_settings import StorageSettings
from workers import context
from workers.progress import ProgressWriter
from workers.runner import make_worker

pytestmark = pytest.mark.slow  # real redis-server and in-process RQ workers

Capture = pytest.CaptureFixture[str]
KEY = "ops-cli-kie-key"
QUEUE = "veo-archiver"
VIDEO = make_mp4(200_000, seed=7)


def burst_worker(settings: Settings) -> None:
    """The worker entry point's work, in a spawned interpreter: settings installed, one burst run."""
    context.install(settings)
    with redis.Redis.from_url(settings.redis_url) as connection:
        make_worker(settings, connection).work(burst=True)


def busy(request: BaseHTTPRequestHandler, hosted: HostedFile | None) -> bool:
    request.send_error(503)
    return True


@dataclass
class World:
    settings: Settings
    rds: redis.Redis
    files: FileHost
    archive: Path
    urls: dict[str, str] = field(default_factory=dict)

    def job(self, task_id: str, status: str = "succeeded") -> str:
        return redis_keys.job_id("kie", task_id, status)

    def deliver(self, task_id: str, url: str | None = None, *, fail: int | None = None) -> str:
        body = kie_sim.failure_body(task_id, fail) if fail else kie_sim.success_body(task_id, [url or ""])
        with TestClient(create_app(self.settings)) as client:
            response = client.post(
                "/callbacks/kie", content=json.dumps(body).encode(), headers=kie_sim.signed_headers(KEY, task_id)
            )
        assert response.status_code == 200, response.text
        return response.headers["x-archiver-outcome"]

    def work(self) -> None:
        worker = multiprocessing.get_context("spawn").Process(target=burst_worker, args=(self.settings,))
        worker.start()
        worker.join(120)
        if worker.is_alive():
            worker.kill()
            worker.join()
        assert worker.exitcode == 0, f"burst worker exit code {worker.exitcode}"

    def fetch(self, job_id: str) -> Job:
        return Job.fetch(job_id, connection=self.rds, serializer=JSONSerializer)


@pytest.fixture
def world(redis_server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:  # type: ignore[no-untyped-def]
    archive = tmp_path / "archive"
    with FileHost() as files:
        settings = Settings(
            redis_url=redis_server.url,
            kie_hmac_keys=(KEY,),
            storage=StorageSettings(archive_url=str(archive)),
            download_allow_hosts=frozenset({("127.0.0.1", files.port)}),
        )
        for name in ("QUEUE_NAME", "RECONCILE_AFTER", "RETRY_INTERVALS"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("REDIS_URL", redis_server.url)
        monkeypatch.setenv("ARCHIVE_URL", str(archive))
        monkeypatch.setenv("KIE_WEBHOOK_HMAC_KEYS", KEY)
        monkeypatch.setenv("DOWNLOAD_ALLOW_HOSTS", f"127.0.0.1:{files.port}")
        rds = redis_server.client()
        try:
            yield World(settings=settings, rds=rds, files=files, archive=archive)
        finally:
            rds.close()


@pytest.fixture
def populated(world: World) -> World:
    """finished (video + failure manifest), dead letters (404, HTML), a scheduled retry (503), one queued job,
    one duplicate delivery, and two tracked tasks (one overdue)."""
    f = world.files
    world.urls = {
        "ok": f.add("/v/ok.mp4", VIDEO),
        "gone": f.base_url + "/v/gone.mp4",
        "html": f.add("/v/page.mp4", b"<html><body>sign in</body></html>", content_type="text/html"),
        "busy": f.add("/v/busy.mp4", VIDEO),
        "late": f.add("/v/late.mp4", make_mp4(100_000, seed=8)),
    }
    f.behaviours["/v/busy.mp4"] = busy
    assert world.deliver("veo_ok", world.urls["ok"]) == "accepted"
    assert world.deliver("veo_ok", world.urls["ok"]) == "duplicate"
    world.deliver("veo_gone", world.urls["gone"])
    world.deliver("veo_html", world.urls["html"])
    world.deliver("veo_busy", world.urls["busy"])
    world.deliver("veo_flagged", fail=400)
    world.work()
    world.deliver("veo_late", world.urls["late"])  # after the worker ran: stays queued
    now = time.time()
    world.rds.zadd(
        redis_keys.tracked_zset(),
        {
            redis_keys.tracked_member("kie", "veo_lost"): now - 7200,
            redis_keys.tracked_member("kie", "veo_late"): now - 60,
        },
    )
    return world


def run(capsys: Capture, *argv: str) -> tuple[int, str, str]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:  # main() points the root logger at this test's captured stderr: put pytest's handlers back after
        code = main(["--log-format", "text", "--log-level", "WARNING", *argv])
    finally:
        root.handlers[:], root.level = handlers, level
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys: Capture, *argv: str) -> Any:
    code, out, err = run(capsys, *argv, "--json")
    assert code == 0, err
    return json.loads(out)


def redis_snapshot(rds: redis.Redis) -> dict[str, Any]:
    """Every key with its type and content, for "nothing changed" checks."""
    out: dict[str, Any] = {}
    for raw in sorted(rds.keys("*")):
        key = raw.decode()
        kind = rds.type(raw).decode()
        if kind == "string":
            out[key] = rds.get(raw)
        elif kind == "list":
            out[key] = rds.lrange(raw, 0, -1)
        elif kind == "hash":
            out[key] = rds.hgetall(raw)
        elif kind == "set":
            out[key] = sorted(rds.smembers(raw))
        elif kind == "zset":
            out[key] = rds.zrange(raw, 0, -1, withscores=True)
        elif kind == "stream":
            out[key] = rds.xrange(raw)
    return out


# --------------------------------------------------------------------------------------------- status


def test_status_json_counts_every_state(populated: World, capsys: Capture) -> None:
    w = populated
    s = run_json(capsys, "status")
    assert s["queue"] == QUEUE
    assert s["queued"] == 1
    assert s["oldest_waiting"]["job_id"] == w.job("veo_late")
    assert 0 <= s["oldest_waiting"]["age_s"] < 60 and s["oldest_waiting"]["enqueued_at"].endswith("Z")
    assert s["workers"] == []  # the burst worker is gone
    assert (s["started"], s["started_expired"], s["deferred"]) == (0, 0, 0)
    assert s["finished"] == 2  # veo_ok (video) and veo_flagged (failure manifest)
    assert s["failed"] == 2
    assert s["dead_letters"] == {"http_404": 1, "not_a_video": 1}
    assert s["scheduled"] == 1 and s["scheduled_late"] == 0
    (retry,) = s["next_scheduled"]
    assert retry["job_id"] == w.job("veo_busy") and retry["task_id"] == "veo_busy"
    assert retry["attempts"] == 1 and retry["last_reason"] == "http_503"
    assert retry["run_in_s"] <= w.settings.retry_base_s + 1 and retry["run_at"].endswith("Z")
    assert s["tracked"] == 2 and s["tracked_overdue"] == 1
    assert s["oldest_tracked"]["task_id"] == "veo_lost" and s["oldest_tracked"]["age_s"] >= 7200
    assert s["events_last_hour"] == {"accepted": 6, "duplicate": 1, "conflict": 0, "recorded": 0, "replayed": 0}
    assert s["stuck"] is True
    problems = "\n".join(s["problems"])
    assert "2 dead letters (http_404 1, not_a_video 1)" in problems
    assert "1 job waiting and no worker alive" in problems
    assert "1 tracked task without a terminal callback for more than 30m00s" in problems


def test_status_human_output_is_aligned_and_says_what_is_stuck(populated: World, capsys: Capture) -> None:
    code, out, _ = run(capsys, "status")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == f"queue {QUEUE}"
    counts = {line.split()[0]: line for line in lines[1:7]}
    assert counts["queued"].split()[1] == "1" and populated.job("veo_late") in counts["queued"]
    assert counts["scheduled"].split()[1] == "1" and "next retry" in counts["scheduled"]
    assert counts["failed"].split()[1] == "2" and counts["finished"].split()[1] == "2"
    # the numbers of the count block start in one column
    assert len({line.index(line.split()[1], len(line.split()[0])) for line in lines[1:7]}) == 1
    assert "workers: 0 alive" in out and "dead letters: 2" in out
    assert any(line.split()[:2] == ["http_404", "1"] for line in lines)
    assert "tracked tasks: 2 not finished, oldest kie/veo_lost since" in out
    assert "last hour: accepted 6  duplicate 1  conflict 0  recorded 0  replayed 0" in out
    assert "stuck:" in out and "nothing stuck" not in out


def test_status_says_nothing_stuck_and_lists_live_workers(world: World, capsys: Capture) -> None:
    world.deliver("veo_fine", world.files.add("/v/fine.mp4", VIDEO))
    world.work()
    idle = make_worker(world.settings, world.rds, name="ops-test-worker")
    idle.register_birth()
    idle.set_state("idle")
    try:
        s = run_json(capsys, "status")
        (worker,) = s["workers"]
        assert worker["name"] == "ops-test-worker" and worker["state"] == "idle"
        assert worker["current_job"] is None and worker["heartbeat_age_s"] < 30
        assert s["problems"] == [] and s["stuck"] is False and s["finished"] == 1
        code, out, _ = run(capsys, "status")
        assert code == 0 and out.rstrip().endswith("nothing stuck")
        assert "ops-test-worker" in out and "idle" in out
    finally:
        idle.register_death()


def test_status_and_show_report_a_running_download(world: World, capsys: Capture) -> None:
    """A job in RQ's started registry whose worker wrote its progress (the real writer, a fake clock)."""
    world.deliver("veo_long", world.files.add("/v/long.mp4", VIDEO))
    job_id = world.job("veo_long")
    world.rds.zadd(StartedJobRegistry(queue=queue_of(world.rds, QUEUE)).key, {f"{job_id}:exec-1": time.time() + 600})
    gib = 1024**3
    now = [time.time() - 2]
    writer = ProgressWriter(
        world.rds, job_id, provider="kie", task_id="veo_long", file=0, files=1, clock=lambda: now[0]
    )
    writer.update(int(3.1 * gib) - 84_000_000, 4 * gib)
    now[0] += 2
    writer.update(int(3.1 * gib), 4 * gib)  # 84 MB in 2 s

    s = run_json(capsys, "status")
    (download,) = s["downloads"]
    assert (download["job_id"], download["provider"], download["task_id"]) == (job_id, "kie", "veo_long")
    assert (download["bytes"], download["total"], download["rate"]) == (int(3.1 * gib), 4 * gib, 42e6)
    assert download["eta_s"] == pytest.approx((4 - 3.1) * gib / 42e6, abs=0.1)
    code, out, _ = run(capsys, "status")
    assert code == 0 and "downloads: 1 running" in out
    assert f"{job_id}  kie/veo_long  1/1   3.1 GiB of 4.0 GiB, 42 MB/s, ETA 23 s" in out

    (job,) = run_json(capsys, "show", "kie", "veo_long")["jobs"]
    assert job["progress"]["bytes"] == int(3.1 * gib) and job["progress"]["updated_at"].endswith("Z")
    code, out, _ = run(capsys, "show", "kie", "veo_long")
    assert "download 1/1: 3.1 GiB of 4.0 GiB, 42 MB/s, ETA 23 s (updated " in out

    writer.close()  # the file ended: nothing left to show
    assert run_json(capsys, "status")["downloads"] == []
    (job,) = run_json(capsys, "show", "kie", "veo_long")["jobs"]
    assert job["progress"] is None


# --------------------------------------------------------------------------------------------- failed


def test_failed_lists_dead_letters_with_reason_and_error(populated: World, capsys: Capture) -> None:
    w = populated
    letters = run_json(capsys, "failed")
    assert {d["job_id"]: d["reason"] for d in letters} == {
        w.job("veo_gone"): "http_404",
        w.job("veo_html"): "not_a_video",
    }
    gone = next(d for d in letters if d["reason"] == "http_404")
    assert (gone["provider"], gone["task_id"], gone["status"]) == ("kie", "veo_gone", "succeeded")
    assert "HTTP 404" in gone["error"] and gone["at"].endswith("Z") and gone["attempts"] == []

    (only,) = run_json(capsys, "failed", "--reason", "not_a_video")
    assert only["task_id"] == "veo_html" and "text/html" in only["error"]
    assert run_json(capsys, "failed", "--provider", "apixo") == []
    assert len(run_json(capsys, "failed", "--limit", "1")) == 1

    _, out, _ = run(capsys, "failed")
    header, *rows = out.splitlines()
    assert header.split() == ["JOB", "PROVIDER", "TASK", "REASON", "WHEN", "ATTEMPTS", "ERROR"]
    assert any(w.job("veo_gone") in row and "http_404" in row and "ago)" in row for row in rows)
    assert "2 dead letter(s)" in out


def test_failures_without_a_verdict_are_abandoned_or_crashed(world: World, capsys: Capture) -> None:
    w = world
    queue = queue_of(w.rds, QUEUE)
    # crashed: the job's code raised something unexpected (here it cannot read its envelope)
    queue.enqueue(
        redis_keys.ARCHIVE_JOB,
        kwargs={"envelope": {"event": {"provider": "kie"}}},
        job_id="crash-job",
        meta={"provider": "kie", "task_id": "veo_crash"},
    )
    w.work()
    # abandoned: a worker took the job, then died; its heartbeat lapsed
    taken = queue.enqueue(
        redis_keys.ARCHIVE_JOB,
        kwargs={"envelope": {}},
        job_id="lost-job",
        meta={"provider": "kie", "task_id": "veo_lost_worker"},
    )
    w.rds.lrem(queue.key, 0, "lost-job")
    taken.set_status(JobStatus.STARTED)  # as the worker that took it did (RQ 3 fails only started jobs as abandoned)
    w.rds.zadd(StartedJobRegistry(queue=queue).key, {"lost-job:execution-1": time.time() - 5})
    s = run_json(capsys, "status")
    assert (s["started"], s["started_expired"]) == (1, 1)
    assert any("1 started job with no worker heartbeat" in p for p in s["problems"])

    StartedJobRegistry(queue=queue).cleanup()  # what a live worker's maintenance does
    s = run_json(capsys, "status")
    assert s["dead_letters"] == {"abandoned": 1, "crashed": 1} and s["started"] == 0
    letters = {d["job_id"]: d for d in run_json(capsys, "failed")}
    assert letters["crash-job"]["reason"] == "crashed" and "KeyError" in letters["crash-job"]["error"]
    assert letters["crash-job"]["task_id"] == "veo_crash"
    lost = letters["lost-job"]
    assert lost["reason"] == "abandoned" and "AbandonedJobError" in lost["error"]
    code, out, _ = run(capsys, "retry", "--reason", "abandoned")
    assert code == 0 and "requeued lost-job  kie/veo_lost_worker  (abandoned)" in out
    assert queue.get_job_ids() == ["lost-job"]


# --------------------------------------------------------------------------------------------- retry


def test_retry_requeues_a_dead_letter_which_archives_once_the_file_is_fixed(populated: World, capsys: Capture) -> None:
    w = populated
    job_id = w.job("veo_gone")
    before = redis_snapshot(w.rds)
    code, out, _ = run(capsys, "retry", job_id, "--dry-run")
    assert code == 0 and f"would requeue {job_id}  kie/veo_gone  (http_404)" in out
    assert redis_snapshot(w.rds) == before

    w.files.add("/v/gone.mp4", VIDEO)  # the provider's CDN has the file again
    code, out, _ = run(capsys, "retry", job_id)
    assert code == 0 and f"requeued {job_id}" in out and f"requeued 1 job(s) on {QUEUE}" in out
    job = w.fetch(job_id)
    assert job.get_status() == "queued" and "dead_letter" not in job.meta and "attempts" not in job.meta
    assert job.retries_left == len(w.settings.retry_intervals_s) and job.number_of_retries == 0
    queue = queue_of(w.rds, QUEUE)
    assert job_id in queue.get_job_ids()
    assert job_id not in FailedJobRegistry(queue=queue).get_job_ids(cleanup=False)

    w.work()
    assert w.fetch(job_id).get_status() == "finished"
    manifest = json.loads((w.archive / archive_keys.manifest_key("kie", "veo_gone")).read_text())
    assert manifest["status"] == "succeeded"
    assert manifest["files"][0]["sha256"] == hashlib.sha256(VIDEO).hexdigest()
    assert run_json(capsys, "status")["dead_letters"] == {"not_a_video": 1}

    code, out, _ = run(capsys, "retry", job_id)  # no longer a dead letter
    assert code == 1 and "not in the failed registry (state finished)" in out


def test_retry_by_reason_shows_progress_and_leaves_other_reasons(world: World, capsys: Capture) -> None:
    w = world
    html = w.files.add("/v/page.mp4", b"<html></html>", content_type="text/html")
    tasks = [f"veo_missing_{n:02d}" for n in range(12)]
    for task in tasks:
        w.deliver(task, f"{w.files.base_url}/v/{task}.mp4")
    w.deliver("veo_html", html)
    w.work()
    assert run_json(capsys, "status")["dead_letters"] == {"http_404": 12, "not_a_video": 1}

    code, out, err = run(capsys, "retry", "--reason", "http_404")
    assert code == 0
    assert "requeued 12/12" in err and "\r" in err  # one counter line, rewritten in place
    assert out.count("requeued archive-kie-succeeded-") == 12 and "requeued 12 job(s)" in out
    assert set(queue_of(w.rds, QUEUE).get_job_ids()) == {w.job(t) for t in tasks}
    assert run_json(capsys, "failed")[0]["task_id"] == "veo_html"

    code, out, _ = run(capsys, "retry", "--reason", "http_404")
    assert code == 1 and "nothing to requeue" in out  # ran, did nothing: 1
    for task in tasks:
        w.files.add(f"/v/{task}.mp4", VIDEO)
    w.work()
    assert len(FinishedJobRegistry(queue=queue_of(w.rds, QUEUE)).get_job_ids(cleanup=False)) == 12


def test_retry_needs_a_selection(world: World, capsys: Capture) -> None:
    code, _, err = run(capsys, "retry")
    assert code == 2 and "--reason" in err
    code, _, err = run(capsys, "retry", "some-job", "--all")
    assert code == 2 and "not both" in err
    code, out, _ = run(capsys, "retry", "no-such-job")
    assert code == 1 and "skipped no-such-job: no such job" in out


# --------------------------------------------------------------------------------------------- replay


def test_replay_dry_run_prints_the_event_and_changes_nothing(populated: World, capsys: Capture) -> None:
    w = populated
    before = redis_snapshot(w.rds)
    code, out, _ = run(capsys, "replay", "kie", "veo_ok", "--dry-run")
    assert code == 0
    assert "delivery #2 of kie/veo_ok" in out  # the newest terminal delivery (the duplicate)
    assert '"verification": "operator"' in out and w.urls["ok"] in out
    assert f"would enqueue a new job {w.job('veo_ok')}-replay-<random> on {QUEUE}" in out
    plan = run_json(capsys, "replay", "kie", "veo_ok", "--dry-run", "--delivery", "1")
    assert plan["dry_run"] is True and plan["delivery"] == 1 and plan["original_outcome"] == "accepted"
    assert plan["event"]["status"] == "succeeded" and plan["event"]["result_urls"] == [w.urls["ok"]]
    assert redis_snapshot(w.rds) == before


def test_replay_enqueues_a_new_job_that_archives_again(populated: World, capsys: Capture) -> None:
    w = populated
    shutil.rmtree(w.archive / "kie" / "veo_ok")  # the archive lost the task: replay brings it back
    code, out, _ = run(capsys, "replay", "kie", "veo_ok")
    assert code == 0 and "replayed delivery #2 of kie/veo_ok (succeeded)" in out
    records = [decode_entry(r) for r in w.rds.lrange(redis_keys.deliveries_key("kie", "veo_ok"), 0, -1)]
    assert [r["outcome"] for r in records] == ["accepted", "duplicate", "replayed"]
    replay_id = records[-1]["job_id"]
    assert replay_id.startswith(w.job("veo_ok") + "-replay-") and f"enqueued job {replay_id}" in out
    assert records[-1]["event"]["verification"] == "operator" and records[-1]["replayed_at"]
    assert records[-1]["callback"]["received_at"] == records[1]["callback"]["received_at"]
    last_event = w.rds.xrevrange(redis_keys.events_stream(), count=1)[0][1]
    assert last_event[b"outcome"] == b"replayed" and last_event[b"job_id"] == replay_id.encode()
    assert w.fetch(w.job("veo_ok")).get_status() == "finished"  # the original job is untouched

    w.work()
    assert w.files.completed["/v/ok.mp4"] == 2
    assert w.fetch(replay_id).return_value()["outcome"] == "archived"
    manifest = json.loads((w.archive / archive_keys.manifest_key("kie", "veo_ok")).read_text())
    assert manifest["job_id"] == replay_id and manifest["verification"] == "operator"
    assert (w.archive / archive_keys.video_key("kie", "veo_ok", 0)).read_bytes() == VIDEO

    story = run_json(capsys, "show", "kie", "veo_ok")
    assert [(j["job_id"], j["state"], j["replay"]) for j in story["jobs"]] == [
        (w.job("veo_ok"), "finished", False),
        (replay_id, "finished", True),
    ]
    assert run_json(capsys, "status")["events_last_hour"]["replayed"] == 1


def test_replay_of_a_standard_webhooks_source_keeps_its_webhook_id(world: World, capsys: Capture) -> None:
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # noqa: S105  # a test vector, not a credential
    settings = replace(world.settings, standard_webhook_secrets={"acme": (secret,)})
    url = world.files.add("/v/acme.mp4", VIDEO)
    data = {"id": "vid_1", "status": "completed", "video_url": url}
    body = json.dumps({"type": "video.completed", "data": data})
    now = int(time.time())
    headers = {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(now),
        "webhook-signature": standard_webhooks.sign(secret, "msg_1", now, body.encode()),
    }
    with TestClient(create_app(settings)) as client:
        assert client.post("/callbacks/standard/acme", content=body, headers=headers).status_code == 200

    plan = run_json(capsys, "replay", "standard-acme", "vid_1", "--dry-run")
    assert plan["event"]["provider"] == "standard-acme" and plan["event"]["task_id"] == "vid_1"
    assert plan["event"]["extra"]["webhook_id"] == "msg_1" and plan["event"]["verification"] == "operator"
    done = run_json(capsys, "replay", "standard-acme", "vid_1")
    assert done["outcome"] == "replayed"
    assert done["job_id"].startswith(redis_keys.job_id("standard-acme", "vid_1", "succeeded") + "-replay-")
    assert queue_of(world.rds, QUEUE).get_job_ids() == [
        redis_keys.job_id("standard-acme", "vid_1", "succeeded"),
        done["job_id"],
    ]


def test_replay_refuses_what_it_cannot_replay(populated: World, capsys: Capture) -> None:
    code, _, err = run(capsys, "replay", "kie", "veo_never_seen")
    assert code == 1 and "no stored delivery for kie/veo_never_seen" in err
    code, _, err = run(capsys, "replay", "kie", "veo_ok", "--delivery", "9")
    assert code == 1 and "deliveries 1..2, not 9" in err
    with pytest.raises(SystemExit) as usage:  # a usage error: argparse's 2, with the known providers listed
        run(capsys, "replay", "nosuch", "veo_ok")
    err = capsys.readouterr().err
    assert usage.value.code == 2 and "unknown provider 'nosuch'" in err and "kie, apixo, useapi, evolink" in err


# --------------------------------------------------------------------------------------------- show


def test_show_tells_every_delivery_the_job_and_the_manifest(populated: World, capsys: Capture) -> None:
    w = populated
    story = run_json(capsys, "show", "kie", "veo_ok")
    assert [(d["number"], d["outcome"], d["status"], d["verification"]) for d in story["deliveries"]] == [
        (1, "accepted", "succeeded", "signature"),
        (2, "duplicate", "succeeded", "signature"),
    ]
    assert all(d["remote"] == "testclient" and d["received_at"].endswith("Z") for d in story["deliveries"])
    assert json.loads(story["deliveries"][0]["body"])["data"]["taskId"] == "veo_ok"
    (job,) = story["jobs"]
    assert job["job_id"] == w.job("veo_ok") and job["state"] == "finished" and job["status"] == "succeeded"
    assert job["result"]["outcome"] == "archived" and job["dead_letter"] is None and job["attempts"] == []
    assert story["manifest"]["status"] == "succeeded" and story["tracked_since"] is None
    (file,) = story["files"]
    assert file["key"] == archive_keys.video_key("kie", "veo_ok", 0)
    assert file["size"] == file["stored_size"] == len(VIDEO)
    assert file["sha256"] == hashlib.sha256(VIDEO).hexdigest()

    code, out, _ = run(capsys, "show", "kie", "veo_ok")
    assert code == 0
    assert out.startswith("kie/veo_ok\n  tracked: no\ndeliveries: 2\n")
    assert "accepted" in out and "duplicate" in out and "testclient" in out
    assert f"{w.job('veo_ok')}  archived; provider status: succeeded" in out and "result   archived" in out
    assert f"{file['key']}  {len(VIDEO)}  {file['sha256']}  yes" in out


def test_show_explains_a_retry_a_dead_letter_and_a_tracked_task(populated: World, capsys: Capture) -> None:
    w = populated
    busy_story = run_json(capsys, "show", "kie", "veo_busy")
    (job,) = busy_story["jobs"]
    assert job["state"] == "scheduled" and job["next_run_at"].endswith("Z")
    (attempt,) = job["attempts"]
    assert attempt["reason"] == "http_503" and "HTTP 503" in attempt["error"] and attempt["retry_in_s"] > 0
    assert busy_story["manifest"] is None and busy_story["files"] == []
    code, out, _ = run(capsys, "show", "kie", "veo_busy")
    assert "attempt 1 failed" in out and "http_503" in out and "next run" in out and "no manifest" in out

    code, out, _ = run(capsys, "show", "kie", "veo_gone")
    assert "DEAD LETTER http_404" in out and f"veo-archiver retry {w.job('veo_gone')}" in out

    code, out, _ = run(capsys, "show", "kie", "veo_late")
    assert code == 0 and "tracked: since" in out and "queued" in out

    flagged = run_json(capsys, "show", "kie", "veo_flagged")
    assert flagged["jobs"][0]["job_id"] == w.job("veo_flagged", "failed")
    assert flagged["manifest"]["failure"]["code"] == "400" and flagged["files"] == []

    code, out, _ = run(capsys, "show", "kie", "veo_never_seen")
    assert code == 1 and "deliveries: 0" in out and "jobs: 0" in out


def test_scheduled_registry_and_cli_agree(populated: World, capsys: Capture) -> None:
    """The CLI reads RQ's own registries: the figures match what RQ itself reports."""
    w = populated
    queue = queue_of(w.rds, QUEUE)
    s = run_json(capsys, "status")
    scheduled = ScheduledJobRegistry(queue=queue)
    assert s["scheduled"] == scheduled.get_job_count(cleanup=False)
    run_at = scheduled.get_scheduled_time(w.job("veo_busy")).timestamp()
    assert s["next_scheduled"][0]["run_at"] == iso(run_at)  # RQ scores in whole seconds; iso shows ms
    assert s["failed"] == len(FailedJobRegistry(queue=queue).get_job_ids(cleanup=False))
