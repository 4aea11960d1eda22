"""The intake against a real redis-server: what one task may store, conflicting URLs, and job descriptions
that cannot forge a log line."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import redis
import redis.asyncio as aioredis
from rq.job import Job
from rq.serializers import JSONSerializer

from veo_archiver import redis_keys
from veo_archiver.event import TaskEvent, TaskStatus, Verification
from veo_archiver.intake import SMALL_CALLBACK_BYTES, Delivery, Intake
from veo_archiver.intake_script import DELIVERY_BYTES_PER_TASK
from veo_archiver.records import delivery as deliveries
from veo_archiver.settings import Settings


def event(task_id: str, urls: tuple[str, ...] = ("https://cdn.example.com/a.mp4",)) -> TaskEvent:
    return TaskEvent(
        provider="kie",
        task_id=task_id,
        status=TaskStatus.SUCCEEDED,
        result_urls=urls,
        verification=Verification.SIGNATURE,
    )


def delivery(body: bytes, **headers: str) -> Delivery:
    return Delivery(body=body, headers={"content-type": "application/json", **headers}, received_at=1_790_000_000.0)


def submit_all(url: str, calls: list[tuple[TaskEvent, Delivery]]) -> list[str]:
    async def go() -> list[str]:
        client = aioredis.Redis.from_url(url)
        intake = Intake(Settings(redis_url=url), client)
        await intake.start()
        try:
            return [(await intake.submit(e, d)).outcome for e, d in calls]
        finally:
            await client.aclose()

    return asyncio.run(go())


def test_replays_of_a_padded_callback_store_a_bounded_number_of_bytes(redis_server) -> None:  # type: ignore[no-untyped-def]
    """The review sent 30 replays of one signed callback padded to 900 KB: 28.5 MB stored for 30 days. Past
    DELIVERY_BYTES_PER_TASK a record keeps the event and the body's size and sha256, not the body."""
    padded = json.dumps({"code": 200, "data": {"taskId": "veo_pad"}, "pad": "x" * 900_000}).encode()
    outcomes = submit_all(redis_server.url, [(event("veo_pad"), delivery(padded))] * 30)
    assert outcomes == ["accepted"] + ["duplicate"] * 29
    rds: redis.Redis = redis_server.client()
    stored = rds.lrange(redis_keys.deliveries_key("kie", "veo_pad"), 0, -1)
    assert len(stored) == 30  # every delivery is still recorded...
    assert sum(len(r) for r in stored) < DELIVERY_BYTES_PER_TASK + 2 * len(padded)  # ...within the budget
    records = deliveries.stored(rds, "kie", "veo_pad")
    kept = [r for r in records if isinstance(r["callback"]["body"], str)]
    assert 1 <= len(kept) <= DELIVERY_BYTES_PER_TASK // len(padded) + 1
    omitted = records[-1]["callback"]
    assert omitted["body"] is None and omitted["body_omitted"]["bytes"] == len(padded)
    assert records[-1]["outcome"] == "duplicate" and records[-1]["event"]["task_id"] == "veo_pad"


def test_other_urls_for_an_accepted_task_are_a_conflict_never_a_job(redis_server) -> None:  # type: ignore[no-untyped-def]
    body = json.dumps({"code": 200}).encode()
    calls = [
        (event("veo_c", ("https://cdn.example.com/a.mp4",)), delivery(body)),
        (event("veo_c", ("https://evil.example.net/x.mp4",)), delivery(body)),
        (event("veo_c", ("https://cdn.example.com/a.mp4",)), delivery(body)),
    ]
    assert submit_all(redis_server.url, calls) == ["accepted", "conflict", "duplicate"]
    rds: redis.Redis = redis_server.client()
    (job_id,) = [k.decode().removeprefix("rq:job:") for k in rds.keys("rq:job:*")]
    job = Job.fetch(job_id, connection=rds, serializer=JSONSerializer)
    assert job.kwargs["envelope"]["event"]["result_urls"] == ["https://cdn.example.com/a.mp4"]


def test_a_task_id_with_control_characters_gets_an_escaped_job_description(redis_server) -> None:  # type: ignore[no-untyped-def]
    forged = "veo\nINFO rq.worker: forged\x1b[31m"
    submit_all(redis_server.url, [(event(forged), delivery(b"{}"))])
    rds: redis.Redis = redis_server.client()
    job = Job.fetch(redis_keys.job_id("kie", forged, "succeeded"), connection=rds, serializer=JSONSerializer)
    description: Any = job.description
    assert "\n" not in description and "\x1b" not in description and "\\n" in description
    assert job.kwargs["envelope"]["event"]["task_id"] == forged  # the data itself is untouched


def test_small_callbacks_cost_no_byte_accounting(redis_server) -> None:  # type: ignore[no-untyped-def]
    """Callbacks up to SMALL_CALLBACK_BYTES are bounded by the records' cap, not counted: no bytes key, every
    body kept; a large one starts the count."""
    small = json.dumps({"code": 200, "data": {"taskId": "veo_small"}}).encode()
    assert len(small) <= SMALL_CALLBACK_BYTES
    assert submit_all(redis_server.url, [(event("veo_small"), delivery(small))] * 3) == ["accepted"] + ["duplicate"] * 2
    rds: redis.Redis = redis_server.client()
    assert rds.exists(redis_keys.delivery_bytes_key("kie", "veo_small")) == 0
    assert all(r["callback"]["body"] == small.decode() for r in deliveries.stored(rds, "kie", "veo_small"))
    large = json.dumps({"code": 200, "data": {"taskId": "veo_small"}, "pad": "x" * SMALL_CALLBACK_BYTES}).encode()
    submit_all(redis_server.url, [(event("veo_small"), delivery(large))])
    assert int(rds.get(redis_keys.delivery_bytes_key("kie", "veo_small")) or 0) > len(large)
    assert rds.ttl(redis_keys.delivery_bytes_key("kie", "veo_small")) > 0


def test_large_headers_count_against_the_budget_whatever_the_body_size(redis_server) -> None:  # type: ignore[no-untyped-def]
    """Replays of a small signed body with a padded header: the headers are counted in the task's byte budget;
    past it a record keeps the headers' size and sha256 (and the body's), not the headers."""
    body = json.dumps({"code": 200, "data": {"taskId": "veo_hdr"}}).encode()
    pad = "p" * 60_000  # under the 64 KiB head cap of the receiver, over SMALL_CALLBACK_BYTES
    count = DELIVERY_BYTES_PER_TASK // len(pad) + 20
    outcomes = submit_all(redis_server.url, [(event("veo_hdr"), delivery(body, **{"x-pad": pad}))] * count)
    assert outcomes == ["accepted"] + ["duplicate"] * (count - 1)
    rds: redis.Redis = redis_server.client()
    stored = rds.lrange(redis_keys.deliveries_key("kie", "veo_hdr"), 0, -1)
    assert len(stored) == count
    assert sum(len(r) for r in stored) < DELIVERY_BYTES_PER_TASK + 2 * len(pad) + count * 1024
    assert int(rds.get(redis_keys.delivery_bytes_key("kie", "veo_hdr")) or 0) <= DELIVERY_BYTES_PER_TASK + len(pad)
    records = deliveries.stored(rds, "kie", "veo_hdr")
    assert records[0]["callback"]["headers"]["x-pad"] == pad and records[0]["callback"]["body"] == body.decode()
    last = records[-1]["callback"]
    assert last["headers"] == {} and last["headers_omitted"]["bytes"] > len(pad)
    assert last["body"] is None and last["body_omitted"]["bytes"] == len(body)
    # the job's own copy of its record is the first, whole one
    assert deliveries.find(rds, "kie", "veo_hdr", records[0]["delivery_id"]) == records[0]
