"""A 30 s Redis outage with the spool on: no callback lost, each video fetched once.

Real processes: redis-server (AOF), the receiver under uvicorn with its own SPOOL_DIR, an RQ worker, and a
loopback file host serving 40 distinct small videos. Redis stops; 40 distinct signed kie.ai callbacks are
sent the way a provider sends them (a non-2xx answer is retried after 1, 2 and 4 s: three retries within
7 s, EvoLink's schedule); each must be answered 200 ``spooled`` (on disk before the answer). ``status``
shows the spool while Redis is down. Redis stays down 30 s in all, starts again on the same port and data
directory, and then, without restarting anything, every callback is archived (a manifest per task), each
video path is fetched exactly once from the file host, and the spool is empty.

Prints one ``DRILL ...`` line with what it measured (``-s`` or ``-rP`` to see it).

Then the issue's blocked-spool reproduction, end to end: during an outage a callback too large for Redis's
``proto-max-bulk-len`` is spooled with five others behind it; once Redis is back the five reach the queue in
order at once, the large one is quarantined after its bounded retries (logged, counted in /metrics, shown by
``status``), and ``veo-archiver spool requeue --all`` puts it through once the limit is raised.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from receiver.spool import survey
from receiver.spool_files import LOCK_FILE
from tests.drills_support import KIE_KEY, QUEUE, Answer, Video, post
from tests.procs import REPO, Service, start_receiver, start_worker, wait_for
from tests.servers import RedisServer
from veo_archiver import archive_keys, redis_keys
from veo_archiver.sim import kie as kie_sim
from veo_archiver.sim.files import FileHost
from veo_archiver.sim.media import sample_mp4, sample_mp4_padded

pytestmark = pytest.mark.slow

CALLBACKS = 40
OUTAGE_S = 30.0  # how long Redis stays down, counted from its stop
RETRY_DELAYS_S = (1.0, 2.0, 4.0)  # a provider's retries of a non-2xx answer: 3 within 7 s
SENDERS = 8  # callbacks in flight at once, like a provider's delivery workers


@pytest.fixture
def files() -> Iterator[FileHost]:
    with FileHost() as host:
        yield host


def distinct_videos(files: FileHost, count: int) -> list[Video]:
    """The shipped sample MP4, padded to a different size for each task: distinct bytes, all playable."""
    base_kib = len(sample_mp4()) // 1024 + 1
    out = []
    for n in range(count):
        path = f"/cdn/outage/{n}.mp4"
        data = sample_mp4_padded(base_kib + n)
        out.append(Video(task_id=f"outage-{n:04d}", path=path, url=files.add(path, data), data=data))
    return out


def deliver_like_a_provider(client: httpx.Client, base: str, video: Video) -> list[Answer]:
    """Send, and retry a non-2xx answer (or no answer) on the provider's schedule; every answer, in order."""
    answers = [post(client, base, video)]
    for delay in RETRY_DELAYS_S:
        if 200 <= answers[-1].status < 300:
            break
        time.sleep(delay)
        answers.append(post(client, base, video))
    return answers


def status_json(env: dict[str, str]) -> tuple[int, dict[str, object]]:
    """``veo-archiver status --json`` as an operator runs it on the receiver's host."""
    done = subprocess.run(
        [sys.executable, "-m", "veo_archiver", "status", "--json"],
        env={**os.environ, **env},
        cwd=str(REPO),
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.returncode, json.loads(done.stdout)


def test_callbacks_sent_while_redis_is_down_for_30_s_are_all_archived_once(files: FileHost, tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis", appendonly=True, appendfsync="always")
    server.start()
    spool_dir = tmp_path / "spool"
    archive = tmp_path / "archive"
    env = {
        "REDIS_URL": server.url,
        "ARCHIVE_URL": str(archive),
        "KIE_WEBHOOK_HMAC_KEYS": KIE_KEY,
        "DOWNLOAD_ALLOW_HOSTS": f"127.0.0.1:{files.port}",
        "SPOOL_DIR": str(spool_dir),
        "LOG_FORMAT": "json",
    }
    videos = distinct_videos(files, CALLBACKS)
    services: list[Service] = []
    rds = server.client(socket_timeout=10)
    try:
        receiver, base = start_receiver(env, tmp_path)
        services.append(receiver)
        services.append(start_worker(env, tmp_path))  # runs through the outage, like a deployed worker

        def logs() -> str:
            return "\n".join(f"--- {s.argv[0]} {s.pid}\n{s.log()[-3000:]}" for s in services)

        wait_for(lambda: rds.scard("rq:workers") >= 1, 60, what=f"the worker registered\n{logs()}")
        with httpx.Client(timeout=30) as client:
            assert client.get(base + "/readyz").status_code == 200
            server.stop()
            down_at = time.monotonic()

            with ThreadPoolExecutor(SENDERS) as pool:
                tries = list(pool.map(lambda v: deliver_like_a_provider(client, base, v), videos))
            sent_s = time.monotonic() - down_at
            first = [t[0] for t in tries]
            assert [(a.status, a.outcome) for a in first] == [(200, "spooled")] * CALLBACKS, tries
            assert all(len(t) == 1 for t in tries)  # no provider had to retry
            assert survey(spool_dir, time.time()).entries == CALLBACKS  # each on disk before its 200
            ready = client.get(base + "/readyz")  # ready: a callback sent here is kept (in the spool)
            assert ready.status_code == 200 and ready.json()["redis"] == "unreachable", ready.text

            code, status = status_json(env)  # exit 2: it could not run (Redis unreachable)
            assert code == 2 and status["redis"] == "unreachable", status
            assert status["spool"]["entries"] == CALLBACKS, status  # type: ignore[index]

            scrape = client.get(base + "/metrics").text
            assert 'veo_archiver_callbacks_spooled_total{provider="kie"} 40.0' in scrape
            assert f"veo_archiver_spool_entries {float(CALLBACKS)}" in scrape

            time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - down_at)))  # hold the outage
            outage_s = time.monotonic() - down_at
            server.start()  # same port, same data dir; the receiver and the worker were not restarted
            up_at = time.monotonic()

            def manifests() -> int:
                return sum((archive / archive_keys.manifest_key("kie", v.task_id)).is_file() for v in videos)

            wait_for(lambda: manifests() == CALLBACKS, 180, interval=0.5, what=f"{CALLBACKS} manifests\n{logs()}")
            archived_s = time.monotonic() - up_at
            wait_for(
                lambda: (
                    rds.llen(redis_keys.rq_queue_key(QUEUE)) == 0
                    and rds.zcard(f"rq:wip:{QUEUE}") == 0
                    and rds.zcard(f"rq:scheduled:{QUEUE}") == 0
                ),
                60,
                interval=0.5,
                what=f"an idle queue\n{logs()}",
            )
            assert survey(spool_dir, time.time()).entries == 0
            scrape = client.get(base + "/metrics").text
            assert "veo_archiver_spool_entries 0.0" in scrape
            assert f'veo_archiver_spool_drained_total{{outcome="accepted"}} {float(CALLBACKS)}' in scrape
            # deduplicated as usual: a late retry of a spooled callback creates nothing
            again = post(client, base, videos[0])
            assert (again.status, again.outcome) == (200, "duplicate"), again

        assert receiver.alive() and services[1].alive(), logs()
        for video in videos:
            manifest = json.loads((archive / archive_keys.manifest_key("kie", video.task_id)).read_bytes())
            (entry,) = manifest["files"]
            assert (entry["sha256"], entry["size"]) == (video.sha256, len(video.data)), video.task_id
            assert (archive / entry["key"]).read_bytes() == video.data
        fetched = Counter({v.path: files.hits[v.path] for v in videos})
        assert fetched == Counter({v.path: 1 for v in videos}), fetched  # each video fetched exactly once
        assert all(files.completed[v.path] == 1 for v in videos)
        jobs = set(rds.keys("rq:job:*"))  # one job per callback, none for the late duplicate
        assert jobs == {
            redis_keys.rq_job_key(redis_keys.job_id("kie", v.task_id, "succeeded")).encode() for v in videos
        }
        print(
            "DRILL redis-outage-spool: "
            + json.dumps(
                {
                    "callbacks": CALLBACKS,
                    "all_answered_spooled_within_s": round(sent_s, 2),
                    "outage_s": round(outage_s, 1),
                    "all_archived_after_redis_back_s": round(archived_s, 1),
                    "downloads": sum(files.hits[v.path] for v in videos),
                },
                sort_keys=True,
            )
        )
    finally:
        for service in reversed(services):
            service.stop(timeout=30)
        rds.close()
        server.stop()


def run_cli(env: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "veo_archiver", *argv],
        env={**os.environ, **env},
        cwd=str(REPO),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_callback_redis_refuses_is_quarantined_and_does_not_hold_up_the_others(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis", appendonly=True)
    server.start()
    spool_dir = tmp_path / "spool"
    env = {
        "REDIS_URL": server.url,
        "KIE_WEBHOOK_HMAC_KEYS": KIE_KEY,
        "SPOOL_DIR": str(spool_dir),
        "MAX_BODY_BYTES": str(4 * 1024 * 1024),
        "LOG_FORMAT": "json",
    }
    receiver, base = start_receiver(env, tmp_path)
    rds = server.client(socket_timeout=10)

    def queued() -> list[str]:
        return [v.decode() if isinstance(v, bytes) else v for v in rds.lrange(redis_keys.rq_queue_key(QUEUE), 0, -1)]

    def job(task_id: str) -> str:
        return redis_keys.job_id("kie", task_id, "succeeded")

    def send(client: httpx.Client, task_id: str, pad: int = 0) -> httpx.Response:
        body = kie_sim.success_body(task_id, [f"https://cdn.example.com/{task_id}.mp4"])
        if pad:
            body["pad"] = "x" * pad  # kie.ai signs the task id and time, not the body
        return client.post(
            base + "/callbacks/kie", content=json.dumps(body), headers=kie_sim.signed_headers(KIE_KEY, task_id)
        )

    try:
        with httpx.Client(timeout=30) as client:
            server.stop()
            big = send(client, "veo_big", pad=3 * 1024 * 1024 // 2)
            assert (big.status_code, big.headers.get("x-archiver-outcome")) == (200, "spooled"), big.text
            small = [f"veo_small_{n}" for n in range(5)]
            for task_id in small:
                assert send(client, task_id).headers["x-archiver-outcome"] == "spooled"
            # Redis comes back with a 1 MiB bulk limit: hold the drain lock until it is set, so the receiver's
            # first pass already meets it
            with (spool_dir / LOCK_FILE).open("a+") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                server.start()
                rds.config_set("proto-max-bulk-len", str(1024 * 1024))
                fcntl.flock(lock, fcntl.LOCK_UN)
            wait_for(
                lambda: queued() == [job(t) for t in small], 15, what=f"the five behind it\n{receiver.log()[-3000:]}"
            )
            assert survey(spool_dir, time.time()).entries == 1  # the large one, retried meanwhile

            wait_for(lambda: survey(spool_dir, time.time()).quarantined == 1, 60, what="the quarantine")
            assert survey(spool_dir, time.time()).entries == 0
            logged = [json.loads(line) for line in receiver.log().splitlines() if "quarantined" in line]
            assert logged and logged[-1]["level"] == "warning" and logged[-1]["reason"] == "queue_unavailable"
            scrape = client.get(base + "/metrics").text
            assert 'veo_archiver_spool_quarantined_total{reason="queue_unavailable"} 1.0' in scrape
            assert "veo_archiver_spool_quarantined_entries 1.0" in scrape
            shown = run_cli(env, "status", "--json")
            status = json.loads(shown.stdout)
            assert status["spool"]["quarantined"] == 1, shown
            assert status["spool"]["latest_quarantined"][0]["attempts"] == 5
            assert any("spool requeue" in p for p in status["problems"])
            listing = run_cli(env, "spool", "quarantined")
            assert listing.returncode == 0 and "queue_unavailable" in listing.stdout, listing

            rds.config_set("proto-max-bulk-len", str(512 * 1024 * 1024))  # the cause fixed
            requeued = run_cli(env, "spool", "requeue", "--all")
            assert requeued.returncode == 0 and "requeued 1 entry" in requeued.stdout, requeued
            wait_for(lambda: job("veo_big") in queued(), 15, what=f"the requeued entry\n{receiver.log()[-3000:]}")
            wait_for(lambda: survey(spool_dir, time.time()).entries == 0, 15, what="the entry removed once submitted")
            assert survey(spool_dir, time.time()).quarantined == 0
        assert receiver.alive()
    finally:
        receiver.stop(timeout=30)
        rds.close()
        server.stop()
