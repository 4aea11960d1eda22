"""Missing-callback reconciliation with real components: redis-server, SeaweedFS S3, the receiver under
uvicorn (``POST /tasks``), an RQ worker process that sweeps from its maintenance (RECONCILE_AFTER=10,
RECONCILE_INTERVAL=5, WORKER_MAINTENANCE_INTERVAL=1), the ``veo-archiver`` CLI, and the provider cloud
simulator standing in for the providers' status APIs and CDNs."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import redis.asyncio as aioredis
from rq import Queue
from rq.job import Job
from rq.serializers import JSONSerializer
from starlette.testclient import TestClient

from receiver.app import create_app
from tests.fake_clock import FakeClock
from tests.procs import wait_for
from tests.servers import RedisServer
from tests.stacks import DirArchive, S3Archive, Stack
from veo_archiver import archive_keys, redis_keys
from veo_archiver.clock import iso
from veo_archiver.event import TaskEvent, TaskStatus, Verification
from veo_archiver.intake import Delivery, Intake
from veo_archiver.settings import Settings
from veo_archiver.sim.cloud import ProviderCloud
from veo_archiver.sim.media import make_mp4
from workers import reconcile
from workers.status_client import StatusClient

# the tests on the `stack` fixture are slow (SeaweedFS: tests/conftest.py marks them); the in-process ones are not
ADMIN = "admin-token-for-tests"
# useapi.net deliberately has no key here: tracking one of its tasks must be refused
API_KEYS = {"kie": "kie-api-key", "apixo": "apixo-api-key", "evolink": "evolink-key"}
PREFIX = "archive"


@pytest.fixture(scope="module")
def cloud() -> Iterator[ProviderCloud]:
    with ProviderCloud(api_keys={**API_KEYS, "useapi": "x"}) as simulator:
        yield simulator


@pytest.fixture(scope="module")
def stack(tmp_path_factory, seaweed, cloud: ProviderCloud) -> Iterator[Stack]:  # type: ignore[no-untyped-def]
    tmp = tmp_path_factory.mktemp("reconcile")
    bucket = seaweed.create_bucket("reconcile-e2e")
    with RedisServer(tmp / "redis") as redis_server:
        env = {
            "DOWNLOAD_ALLOW_HOSTS": f"127.0.0.1:{cloud.port}",
            "KIE_API_KEY": API_KEYS["kie"],
            "APIXO_API_KEY": API_KEYS["apixo"],
            "EVOLINK_API_KEY": API_KEYS["evolink"],
            **{f"{p.upper()}_API_BASE": cloud.base_url for p in ("kie", "apixo", "useapi", "evolink")},
            "ADMIN_TOKEN": ADMIN,
            "RECONCILE_AFTER": "10",
            "RECONCILE_INTERVAL": "5",
            "WORKER_MAINTENANCE_INTERVAL": "1",
            "RETRY_BASE": "1",
        }
        with Stack(tmp, redis_server.url, S3Archive(seaweed, bucket, PREFIX), **env) as stack:
            stack.start_receiver()
            stack.start_worker()
            yield stack


def post_tasks(base: str, body: Any, token: str | None = ADMIN) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(f"{base}/tasks", content=content, headers=headers, timeout=10)


def tracked(rds: redis.Redis, provider: str, task_id: str) -> float | None:
    return rds.zscore(redis_keys.tracked_zset(), redis_keys.tracked_member(provider, task_id))


def publish(cloud: ProviderCloud, provider: str, seed: int) -> tuple[str, bytes, str]:
    task_id = cloud.new_task_id(provider)
    video = make_mp4(250_000, seed=seed)
    return task_id, video, cloud.add_video(f"/{provider}/reconcile/{seed}.mp4", video)


# --------------------------------------------------------------------------------------------- POST /tasks


def test_post_tasks_requires_the_admin_token(stack: Stack) -> None:
    task = {"provider": "kie", "task_id": "veo_task_auth_probe"}
    for token in (None, "wrong-token", ADMIN + "x"):
        response = post_tasks(stack.base, task, token=token)
        assert response.status_code == 401, response.text
        assert response.json()["reason"] == "unauthenticated"
        assert "Bearer" in response.headers["www-authenticate"]
    basic = httpx.post(f"{stack.base}/tasks", json=task, headers={"Authorization": f"Basic {ADMIN}"})
    assert basic.status_code == 401
    assert tracked(stack.rds, "kie", "veo_task_auth_probe") is None


def test_post_tasks_is_disabled_without_an_admin_token(stack: Stack) -> None:
    base = stack.start_receiver(ADMIN_TOKEN=None)
    try:
        response = post_tasks(base, {"provider": "kie", "task_id": "veo_task_disabled"})
        assert response.status_code == 404
        assert response.json()["reason"] == "disabled"
        assert "ADMIN_TOKEN" in response.json()["msg"]
    finally:
        stack.receivers.pop(base).stop()


@pytest.mark.parametrize(
    ("body", "reason", "words"),
    [
        (b"{not json", "invalid_json", "JSON"),
        ({"provider": "nope", "task_id": "x"}, "unknown_provider", "expected one of"),
        ({"provider": "useapi", "task_id": "user:1-job:2"}, "no_api_key", "USEAPI_API_TOKEN"),
        ({"provider": "kie", "task_id": ""}, "invalid_task_id", "task_id"),
        ({"provider": "kie", "task_id": 42}, "invalid_task_id", "task_id"),
        ({"provider": "kie", "task_id": "a\nb"}, "invalid_task_id", "control"),
        ({"provider": "kie", "task_id": "x", "extra": 1}, "invalid_task", "extra"),
        ([], "no_tasks", "empty"),
        ("kie:x", "invalid_task", "object"),
        ([{"provider": "kie", "task_id": "veo_task_batch_ok"}, {"provider": "apixo"}], "invalid_task_id", "[1]"),
    ],
)
def test_post_tasks_refuses_bad_input_with_a_reason(stack: Stack, body: Any, reason: str, words: str) -> None:
    response = post_tasks(stack.base, body)
    assert response.status_code == 400, response.text
    assert response.json()["reason"] == reason
    assert words in response.json()["msg"]
    assert tracked(stack.rds, "kie", "veo_task_batch_ok") is None  # a bad item refuses the whole batch


def test_post_tasks_is_idempotent_and_keeps_the_first_registration(redis_server: RedisServer) -> None:
    clock = FakeClock()
    settings = Settings.from_env({"REDIS_URL": redis_server.url, "ADMIN_TOKEN": ADMIN, "KIE_API_KEY": "k"})
    rds = redis_server.client()
    ids = [f"veo_task_idem_{n}" for n in range(3)]
    with TestClient(create_app(settings, clock=clock), base_url="http://127.0.0.1") as client:

        def post(body: Any) -> httpx.Response:
            return client.post("/tasks", content=json.dumps(body), headers={"Authorization": f"Bearer {ADMIN}"})

        first = post({"provider": "kie", "task_id": ids[0]})
        assert first.status_code == 200, first.text
        [entry] = first.json()["tracked"]
        assert entry["new"] is True and entry["task_id"] == ids[0]
        assert entry["registered_at"] == iso(clock.now)
        score = tracked(rds, "kie", ids[0])
        assert score == clock.now
        clock.advance(60)
        again = post([{"provider": "kie", "task_id": i} for i in [*ids, ids[1]]])
    assert again.status_code == 200, again.text
    listed = again.json()["tracked"]
    assert [(t["task_id"], t["new"]) for t in listed] == [(ids[0], False), (ids[1], True), (ids[2], True)]
    assert listed[0]["registered_at"] == entry["registered_at"]
    assert listed[1]["registered_at"] == iso(clock.now)
    assert tracked(rds, "kie", ids[0]) == score
    rds.close()


# --------------------------------------------------------------------------------------------- the sweep


def test_a_task_whose_callback_never_comes_is_archived_by_the_sweep(stack: Stack, cloud: ProviderCloud) -> None:
    task_id, video, url = publish(cloud, "kie", 11)
    cloud.set_task("kie", task_id, "in_progress")
    response = post_tasks(stack.base, {"provider": "kie", "task_id": task_id})
    assert response.status_code == 200, response.text
    member = redis_keys.tracked_member("kie", task_id)

    # still generating when the sweep first looks: polled, left tracked, nothing archived
    wait_for(
        lambda: stack.rds.zscore(reconcile.POLLED_ZSET, member),
        40,
        what=f"a sweep polling the task\n{stack.logs()}",
    )
    assert tracked(stack.rds, "kie", task_id) is not None
    assert stack.read(archive_keys.manifest_key("kie", task_id)) is None

    # the provider finishes; its callback is lost; the next sweep reads the status API and archives
    cloud.set_task("kie", task_id, "succeeded", urls=[url])
    manifest = stack.manifest("kie", task_id, timeout=60)
    assert manifest["status"] == "succeeded"
    assert manifest["verification"] == "provider_api"
    [entry] = manifest["files"]
    stored = stack.read(entry["key"])
    assert stored is not None and hashlib.sha256(stored).hexdigest() == hashlib.sha256(video).hexdigest()
    assert entry["source_url"] == url
    callback = json.loads(stack.read(manifest["callback"]["key"]) or b"{}")
    assert callback["path"] == "reconcile"
    assert json.loads(callback["body"])["source"] == "reconcile"
    # the same deterministic job a callback would have made; the worker untracks the task when archived
    job = Job.fetch(redis_keys.job_id("kie", task_id, "succeeded"), connection=stack.rds, serializer=JSONSerializer)
    assert job.kwargs["envelope"]["event"]["verification"] == "provider_api"
    wait_for(lambda: tracked(stack.rds, "kie", task_id) is None, 20, what="the task untracked after archiving")


def test_a_task_the_provider_does_not_know_is_dropped_and_reported(stack: Stack, cloud: ProviderCloud) -> None:
    unknown = [("evolink", cloud.new_task_id("evolink")), ("kie", cloud.new_task_id("kie"))]
    response = post_tasks(stack.base, [{"provider": p, "task_id": t} for p, t in unknown])
    assert response.status_code == 200, response.text

    def dropped() -> dict[tuple[str, str], dict[str, Any]]:
        return {(d["provider"], d["task_id"]): d for d in reconcile.dropped(stack.rds)}

    found = wait_for(
        lambda: all(u in dropped() for u in unknown) and dropped(),
        40,
        what=f"both tasks dropped\n{stack.logs()}",
    )
    for provider, task_id in unknown:
        record = found[(provider, task_id)]
        assert record["reason"] == "unknown_task"
        assert task_id in record["detail"] or "record is null" in record["detail"]
        assert tracked(stack.rds, provider, task_id) is None
    listing = stack.cli("tracked")
    assert listing.returncode == 0, listing.stderr
    assert "dropped" in listing.stdout and "unknown_task" in listing.stdout
    assert unknown[0][1] in listing.stdout


def test_track_and_sweep_once_from_the_cli(stack: Stack, cloud: ProviderCloud) -> None:
    task_id = cloud.new_task_id("apixo")
    cloud.set_task(
        "apixo", task_id, "failed", failure_code="CONTENT_VIOLATION", failure_message="Content violates usage policy"
    )
    first = stack.cli("track", "apixo", task_id)
    assert first.returncode == 0, first.stderr
    assert f"tracking apixo {task_id}" in first.stdout
    again = stack.cli("track", "apixo", task_id)
    assert "already tracked since" in again.stdout

    refused = stack.cli("track", "useapi", "user:1-job:2")
    assert refused.returncode == 2 and "USEAPI_API_TOKEN" in refused.stderr

    swept = stack.cli("sweep", "--once")  # every tracked task, however recent
    assert swept.returncode == 0, swept.stdout + swept.stderr
    assert f"submitted    apixo {task_id}: failed (accepted" in swept.stdout
    manifest = stack.manifest("apixo", task_id)
    assert manifest["status"] == "failed"
    assert manifest["failure"] == {"code": "CONTENT_VIOLATION", "message": "Content violates usage policy"}
    assert manifest["verification"] == "provider_api"
    wait_for(lambda: tracked(stack.rds, "apixo", task_id) is None, 20, what="the task untracked after archiving")
    assert reconcile.last_report(stack.rds) is not None


# --------------------------------------------------------------------------------------------- in process


def _submit_callback(settings: Settings, event: TaskEvent) -> None:
    async def run() -> None:
        client = aioredis.Redis.from_url(settings.redis_url)
        try:
            delivery = Delivery(body=b"{}", headers={}, received_at=time.time(), path="/callbacks/kie")
            await Intake(settings, client).submit(event, delivery)
        finally:
            await client.aclose()

    asyncio.run(run())


@pytest.mark.slow  # a burst worker process
def test_sweep_polls_only_tasks_without_a_terminal_delivery(redis_server: RedisServer, tmp_path: Path) -> None:
    with (
        ProviderCloud(api_keys={"kie": "kie-key"}) as cloud,
        Stack(
            tmp_path,
            redis_server.url,
            DirArchive(tmp_path / "archive"),
            KIE_API_KEY="kie-key",
            KIE_API_BASE=cloud.base_url,
            DOWNLOAD_ALLOW_HOSTS=f"127.0.0.1:{cloud.port}",
            RECONCILE_INTERVAL="60",
        ) as stack,
    ):
        settings = Settings.from_env(stack.env)
        rds = redis_server.client()
        now = time.time()
        lost, called_back, young, running = (cloud.new_task_id("kie") for _ in range(4))
        for n, task_id in enumerate((lost, called_back, young)):
            url = cloud.add_video(f"/v/{n}.mp4", make_mp4(60_000, seed=n))
            cloud.set_task("kie", task_id, "succeeded", urls=[url])
        cloud.set_task("kie", running, "in_progress")
        for task_id in (lost, called_back, running):
            rds.zadd(redis_keys.tracked_zset(), {redis_keys.tracked_member("kie", task_id): now - 3600})
        rds.zadd(redis_keys.tracked_zset(), {redis_keys.tracked_member("kie", young): now})
        _submit_callback(
            settings, TaskEvent("kie", called_back, TaskStatus.SUCCEEDED, verification=Verification.SIGNATURE)
        )

        client = StatusClient(settings.providers)
        try:
            report = reconcile.sweep(rds, settings, client, now=now)
            assert report.examined == 3 and report.waiting == 1
            assert [(s["task_id"], s["status"], s["outcome"]) for s in report.submitted] == [
                (lost, "succeeded", "accepted")
            ]
            assert [s["task_id"] for s in report.in_progress] == [running]
            assert cloud.status_calls["kie"] == 2

            # the job exists now: the next sweep leaves it to the worker and polls only the running task
            second = reconcile.sweep(rds, settings, client, now=now + 1)
            assert second.waiting == 2 and not second.submitted and cloud.status_calls["kie"] == 3
        finally:
            client.close()
        queue = Queue(settings.queue_name, connection=rds, serializer=JSONSerializer)
        assert redis_keys.job_id("kie", lost, "succeeded") in queue.job_ids

        stack.run_burst()
        for task_id in (lost, called_back):
            assert rds.zscore(redis_keys.tracked_zset(), redis_keys.tracked_member("kie", task_id)) is None

        # tracked after its job finished (e.g. registered late): untracked without polling
        rds.zadd(redis_keys.tracked_zset(), {redis_keys.tracked_member("kie", lost): now - 3600})
        calls = cloud.status_calls["kie"]
        client = StatusClient(settings.providers)
        try:
            third = reconcile.sweep(rds, settings, client, now=now + 2)
        finally:
            client.close()
        assert third.finished == 1 and cloud.status_calls["kie"] == calls + 1  # the running task only
        assert rds.zscore(redis_keys.tracked_zset(), redis_keys.tracked_member("kie", lost)) is None


def test_one_sweep_per_interval_across_workers(redis_server: RedisServer) -> None:
    settings = Settings.from_env({"REDIS_URL": redis_server.url, "RECONCILE_INTERVAL": "30"})
    rds = redis_server.client()
    assert reconcile.run_scheduled(rds, settings, owner="w1") is None  # nothing tracked: no lock taken
    assert not rds.exists(reconcile.LOCK_KEY)
    rds.zadd(redis_keys.tracked_zset(), {redis_keys.tracked_member("kie", "veo_task_x"): time.time()})
    report = reconcile.run_scheduled(rds, settings, owner="w1")
    assert report is not None and report.examined == 0  # registered just now: too young to poll
    assert reconcile.run_scheduled(rds, settings, owner="w2") is None
    assert rds.get(reconcile.LOCK_KEY) == b"w1"
    assert 25 < rds.ttl(reconcile.LOCK_KEY) <= 30
    assert reconcile.last_report(rds) is not None
