"""The record modules (dead letters, tracked tasks, deliveries) against a real redis-server, and the promise
they exist for: the CLI's queue view, the /metrics snapshot and the /ops page name the same reason for the
same failed job. Jobs fail through a real RQ worker (in-process ``SimpleWorker``, no fork) or RQ's own
started-registry cleanup, so the failed registry, job hashes and result streams are RQ's own."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from rq import Queue
from rq.job import JobStatus
from rq.registry import StartedJobRegistry
from rq.serializers import JSONSerializer
from rq.worker import SimpleWorker

from receiver.metrics import ReceiverMetrics, render
from veo_archiver import queue_view, redis_keys
from veo_archiver.queue_view import OpsData, Snapshot, read_ops, read_snapshot
from veo_archiver.records import dead_letter, delivery, tracked

QUEUE = "records-test"


@pytest.fixture
def rds(redis_server) -> Iterator[redis.Redis]:  # type: ignore[no-untyped-def]
    client = redis_server.client()
    try:
        yield client
    finally:
        client.close()


def _async_read(url: str) -> tuple[Snapshot, OpsData]:
    async def run() -> tuple[Snapshot, OpsData]:
        client = aioredis.Redis.from_url(url)
        try:
            now = time.time()
            return await read_snapshot(client, QUEUE, now=now), await read_ops(client, QUEUE, now=now)
        finally:
            await client.aclose()

    return asyncio.run(run())


def _fail_three_ways(rds: redis.Redis) -> None:
    """``marked``: the job recorded its verdict before failing; ``crash``: an exception escaped (a real
    JSONDecodeError raised in a real worker); ``lost``: its worker died mid-job and RQ's cleanup failed it."""
    queue = Queue(QUEUE, connection=rds, serializer=JSONSerializer)
    letter = {"reason": "http_404", "error": "the result URL answered 404", "at": "2026-01-02T03:04:05.000Z"}
    queue.enqueue("json.loads", "not json", job_id="marked", meta={"provider": "kie", "task_id": "t-marked"})
    job = queue.fetch_job("marked")
    assert job is not None
    job.meta["dead_letter"] = letter
    job.save_meta()
    queue.enqueue("json.loads", "not json", job_id="crash", meta={"provider": "kie", "task_id": "t-crash"})
    SimpleWorker([queue], connection=rds, serializer=JSONSerializer).work(burst=True)
    lost = queue.enqueue("json.loads", "[]", job_id="lost", meta={"provider": "apixo", "task_id": "t-lost"})
    rds.lrem(queue.key, 0, "lost")
    lost.set_status(JobStatus.STARTED)  # as the worker that took it did (RQ 3 fails only started jobs as abandoned)
    rds.zadd(StartedJobRegistry(queue=queue).key, {"lost:execution-1": time.time() - 5})
    StartedJobRegistry(queue=queue).cleanup()


def test_every_reader_classifies_a_dead_letter_the_same(redis_server, rds: redis.Redis) -> None:  # type: ignore[no-untyped-def]
    _fail_three_ways(rds)

    cli = {d.job_id: d for d in queue_view.dead_letters(rds, QUEUE)}
    snapshot, ops = _async_read(redis_server.url)
    page = {f.job_id: f for f in ops.failures}

    assert {job_id: d.reason for job_id, d in cli.items()} == {
        "marked": "http_404",
        "crash": dead_letter.CRASHED,
        "lost": dead_letter.ABANDONED,
    }
    assert {job_id: f.verdict.reason for job_id, f in page.items()} == {j: d.reason for j, d in cli.items()}
    assert snapshot.dead_letters == {"http_404": 1, "crashed": 1, "abandoned": 1}
    for job_id, letter in cli.items():  # not only the reason: the same error and time
        assert (page[job_id].verdict.error, page[job_id].verdict.at) == (letter.error, letter.at)
        assert (page[job_id].provider, page[job_id].task_id) == (letter.provider, letter.task_id)
    assert cli["marked"].error == "the result URL answered 404" and cli["marked"].at == "2026-01-02T03:04:05.000Z"
    assert "JSONDecodeError" in cli["crash"].error and cli["crash"].at is not None
    assert "AbandonedJobError" in cli["lost"].error
    assert queue_view.status(rds, QUEUE, tracked_overdue_s=60).dead_letters == snapshot.dead_letters

    exposition = render(ReceiverMetrics(), snapshot).decode()
    for reason in ("http_404", "crashed", "abandoned"):
        assert f'veo_archiver_dead_letters{{queue="{QUEUE}",reason="{reason}"}} 1.0' in exposition


def test_the_command_line_and_the_pages_read_one_model(redis_server, rds: redis.Redis) -> None:  # type: ignore[no-untyped-def]
    """The same reads on either client give the same snapshot; ``status`` shows its workers, head of queue
    and downloads, and prints a worker with the fields it always printed."""
    _fail_three_ways(rds)
    queue = Queue(QUEUE, connection=rds, serializer=JSONSerializer)
    queue.enqueue("json.loads", "[]", job_id="waiting")
    SimpleWorker([queue], connection=rds, serializer=JSONSerializer, name="w1").register_birth()
    now = time.time()

    async def read() -> Snapshot:
        client = aioredis.Redis.from_url(redis_server.url)
        try:
            return await read_snapshot(client, QUEUE, now=now)
        finally:
            await client.aclose()

    pages, cli = asyncio.run(read()), queue_view.snapshot(rds, QUEUE, now=now)
    pages.read_seconds = cli.read_seconds = 0.0
    assert pages == cli
    assert [w.name for w in cli.workers] == ["w1"] and cli.workers[0].heartbeat_age_s is not None
    status = queue_view.status(rds, QUEUE, tracked_overdue_s=60, now=now)
    assert (status.workers, status.oldest_waiting, status.downloads) == (cli.workers, cli.oldest_waiting, [])
    assert status.oldest_waiting is not None and status.oldest_waiting.job_id == "waiting"
    assert set(status.to_json()["workers"][0]) == {"name", "state", "current_job", "last_heartbeat", "heartbeat_age_s"}


def test_a_failed_job_whose_hash_expired_is_missing_for_the_pages() -> None:
    assert dead_letter.classify({}, exists=False).reason == dead_letter.MISSING
    verdict = dead_letter.classify({"dead_letter": {"error": "x"}})
    assert (verdict.reason, verdict.error) == (dead_letter.PERMANENT, "x")
    no_error = dead_letter.classify({"dead_letter": {"reason": "r"}, "attempts": [{"error": "busy"}]})
    assert no_error.error == "busy"  # the last attempt's error when the verdict has none
    assert dead_letter.classify({}, exc_text=None).reason == dead_letter.CRASHED


def test_tracked_register_list_remove_round_trip(rds: redis.Redis) -> None:
    first = tracked.register(rds, [tracked.TaskRef("kie", "a"), tracked.TaskRef("apixo", "b")], now=100.0)
    again = tracked.register(rds, [tracked.TaskRef("kie", "a")], now=200.0)
    assert [(r.provider, r.task_id, r.registered_at, r.new) for r in first] == [
        ("kie", "a", 100.0, True),
        ("apixo", "b", 100.0, True),
    ]
    assert [(r.registered_at, r.new) for r in again] == [(100.0, False)]  # NX: the first time is kept
    assert [(t.provider, t.task_id) for t in tracked.listing(rds, 10)] == [("apixo", "b"), ("kie", "a")]
    assert tracked.count(rds) == 2 and tracked.since(rds, "kie", "a") == 100.0
    tracked.remove(rds, tracked.TaskRef("kie", "a").member)
    assert [(t.provider, t.task_id) for t in tracked.listing(rds, 10)] == [("apixo", "b")]
    assert tracked.since(rds, "kie", "a") is None


def test_an_undecodable_tracked_member_is_skipped(redis_server, rds: redis.Redis) -> None:  # type: ignore[no-untyped-def]
    rds.zadd(redis_keys.tracked_zset(), {"not json": 1.0, '["only-one"]': 2.0, '["kie", ""]': 3.0})
    tracked.register(rds, [tracked.TaskRef("kie", "good")], now=10.0)

    assert [(t.provider, t.task_id) for t in tracked.listing(rds, 10)] == [("kie", "good")]
    oldest = tracked.oldest(rds)
    assert oldest is not None and oldest.task_id == "good"
    assert tracked.ref("not json") is None and tracked.decode(b'["kie","x"]', 5.0) is not None
    status = queue_view.status(rds, QUEUE, tracked_overdue_s=60)
    assert status.oldest_tracked is not None and status.oldest_tracked.task_id == "good"
    _, ops = _async_read(redis_server.url)
    assert [(t.provider, t.task_id) for t in ops.tracked] == [("kie", "good")]


def test_stored_deliveries_are_read_oldest_first_and_garbage_is_skipped(rds: redis.Redis) -> None:
    key = redis_keys.deliveries_key("kie", "t1")
    records: list[Any] = [
        {"delivery_id": "d1", "event": {"status": "running"}, "outcome": "recorded", "job_id": None},
        "not an object",
        {"delivery_id": "d2", "event": {"status": "succeeded"}, "outcome": "accepted", "job_id": "j"},
    ]
    rds.rpush(key, *[json.dumps(r) for r in records], b"\xff not json")
    stored = delivery.stored(rds, "kie", "t1")
    assert [r["delivery_id"] for r in stored] == ["d1", "d2"]
    assert delivery.terminal_numbers(stored) == [2]
    assert delivery.stored(rds, "kie", "other") == []
