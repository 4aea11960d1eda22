"""The job hash the receiver's Lua writes, pinned against what the installed RQ writes and reads.

RQ saves the job ``Job.create`` builds (``job.save()`` into a real redis-server), the template's hash is
written beside it (from Python, and by the Lua of :meth:`JobTemplate.lua_hset`), both are read back with
``HGETALL`` and ``Job.fetch``, and a real RQ worker runs the template's job. These run again under the newest
RQ 3 in CI (``-m rq_facing``, ``.ci/run``). A template that RQ would read differently stops the receiver:
the last tests make RQ disagree and read the refusal.
"""

from __future__ import annotations

import asyncio
import json
import time
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from rq import Queue, SimpleWorker
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from tests.servers import RedisServer
from tests.stacks import settings_for
from veo_archiver import jsontext
from veo_archiver import redis_keys as keys
from veo_archiver.errors import ConfigError
from veo_archiver.event import TaskEvent, TaskStatus, Verification
from veo_archiver.intake import Delivery, Intake, IntakeResult
from veo_archiver.intake_format import encode_envelope
from veo_archiver.job_template import JobTemplate, build_job
from veo_archiver.settings import Settings

pytestmark = pytest.mark.rq_facing

SETTINGS = {
    "defaults": Settings(),
    "odd": Settings(queue_name='odd "queue" \\ é', job_timeout_s=61, result_ttl_s=99, retry_intervals_s=(7,)),
    "many retries": Settings(job_timeout_s=1234, failure_ttl_s=77, retry_intervals_s=(1, 2, 30, 600)),
}
#: what a restored job is compared on (everything but its id and the times of this run)
COMPARED = (
    "func_name",
    "args",
    "kwargs",
    "timeout",
    "result_ttl",
    "failure_ttl",
    "ttl",
    "retries_left",
    "retry_intervals",
    "number_of_retries",
    "enqueue_at_front_on_retry",
    "origin",
    "description",
    "meta",
    "dependency_ids",
    "started_at",
    "ended_at",
    "worker_name",
)


@pytest.fixture
def rds(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis_server.client()
    try:
        yield client
    finally:
        client.close()


def envelope_for(task_id: str, status: str = "succeeded") -> dict[str, Any]:
    return {
        "v": 2,
        "delivery_id": "0f" * 16,
        "received_ts": 1_790_000_000.5,
        "event": {"provider": "kie", "task_id": task_id, "status": status, "result_urls": ["https://x/v.mp4"]},
    }


def template_args(template: JobTemplate, envelope: dict[str, Any]) -> list[Any]:
    event = envelope["event"]
    return template.hset_args(
        jsontext.dumpb(envelope),
        provider=event["provider"],
        task_id=event["task_id"],
        status=event["status"],
        delivery_id=envelope["delivery_id"],
    )


def saved_by_rq(rds: redis.Redis, settings: Settings, job_id: str, envelope: dict[str, Any]) -> dict[bytes, bytes]:
    """The hash RQ itself writes for the job ``Job.create`` builds."""
    job = build_job(settings, job_id, envelope)
    with rds.pipeline() as pipe:
        job.save(pipeline=pipe)
        pipe.execute()
    return rds.hgetall(keys.rq_job_key(job_id))  # type: ignore[return-value]


def fetch(rds: redis.Redis, job_id: str) -> Job:
    return Job.fetch(job_id, connection=rds, serializer=JSONSerializer)


def assert_same_job(mine: Job, theirs: Job) -> None:
    for name in COMPARED:
        assert getattr(mine, name) == getattr(theirs, name), name
    assert mine.get_status(refresh=False) == theirs.get_status(refresh=False) == JobStatus.QUEUED
    for name in ("created_at", "enqueued_at"):
        stamp = getattr(mine, name)
        assert isinstance(stamp, datetime) and abs(stamp.timestamp() - time.time()) < 600, (name, stamp)


@pytest.mark.parametrize("suffix", ["", "-replay-0123abcd"])
@pytest.mark.parametrize("name", list(SETTINGS))
def test_the_template_hash_is_the_hash_rq_saves_and_reads_back_as_the_same_job(
    rds: redis.Redis, name: str, suffix: str
) -> None:
    settings = SETTINGS[name]
    envelope = envelope_for('veo_pin "odd" \u00e9 \x1b[31m\u2028')
    job_id = keys.job_id("kie", envelope["event"]["task_id"], "succeeded") + suffix
    theirs = saved_by_rq(rds, settings, job_id, envelope)
    template = JobTemplate(settings)
    args = template_args(template, envelope)
    mine = template.written(args)

    # the same fields but RQ's empty ones, which the template leaves out (RQ reads absent and empty alike)
    assert set(mine) == {field for field, value in theirs.items() if value != b""}
    for field, value in theirs.items():
        if field in (b"created_at", b"enqueued_at"):
            assert len(mine[field]) == len(value) and mine[field].endswith(b"Z")
        elif field == b"data":  # RQ compresses the call, the template does not: the same call
            assert mine[field][:1] == b"[" and json.loads(mine[field]) == json.loads(zlib.decompress(value))
        elif field == b"meta":  # compact JSON: the same object
            assert json.loads(mine[field]) == json.loads(value)
        elif value != b"":
            assert mine[field] == value, field
    assert mine[b"created_at"] == mine[b"enqueued_at"]

    copy_id = job_id + "-template"
    rds.hset(keys.rq_job_key(copy_id), mapping=mine)  # type: ignore[arg-type]
    restored, original = fetch(rds, copy_id), fetch(rds, job_id)
    assert_same_job(restored, original)
    assert restored.kwargs == {"envelope": envelope}
    assert restored.func_name == keys.ARCHIVE_JOB
    assert restored.retries_left == len(settings.retry_intervals_s)
    assert restored.retry_intervals == list(settings.retry_intervals_s)
    assert restored.origin == settings.queue_name and restored.timeout == settings.job_timeout_s
    assert restored.meta == {"provider": "kie", "task_id": envelope["event"]["task_id"], "delivery_id": "0f" * 16}
    assert "\x1b" not in (restored.description or "") and "\u2028" not in (restored.description or "")


def test_the_lua_hset_writes_the_hash_the_template_describes(rds: redis.Redis) -> None:
    settings = SETTINGS["odd"]
    envelope = envelope_for("veo_lua")
    template = JobTemplate(settings)
    job_id = "template-lua-job"
    script = f"local a = 2\n{template.lua_hset('KEYS[1]', first_argv='a')}\nreturn 1"
    event = envelope["event"]
    stamp, data, description, meta = template.values(
        jsontext.dumpb(envelope), provider="kie", task_id=event["task_id"], status="succeeded", delivery_id="0f" * 16
    )
    rds.eval(script, 1, keys.rq_job_key(job_id), "unused", stamp, data, description, meta)
    written = rds.hgetall(keys.rq_job_key(job_id))
    expected = template.written(template_args(template, envelope))
    assert set(written) == set(expected)
    for field, value in expected.items():
        if field not in (b"created_at", b"enqueued_at"):
            assert written[field] == value, field
    saved_by_rq(rds, settings, job_id + "-rq", envelope)
    assert_same_job(fetch(rds, job_id), fetch(rds, job_id + "-rq"))


def test_the_intake_writes_the_hash_rq_saves_for_every_status(rds: redis.Redis, redis_server: RedisServer) -> None:
    """The production path: what the intake's script leaves in Redis for a callback (Lua literals for the
    template's constant fields) is what RQ saves for the same job, and restores as the same job."""
    settings = settings_for(redis_server, queue_name='odd "queue" \\ é', job_timeout_s=61, retry_intervals_s=(7,))
    job_ids = []
    for status in (TaskStatus.SUCCEEDED, TaskStatus.FAILED):
        event = TaskEvent(
            "kie",
            f"veo_pin_intake_{status.value}",
            status,
            result_urls=("https://x/v.mp4",) if status is TaskStatus.SUCCEEDED else (),
            verification=Verification.SIGNATURE,
        )
        delivery = Delivery(body=b"{}", headers={}, received_at=1_790_000_000.25, path="/callbacks/kie")
        result = asyncio.run(submit(settings, event, delivery))
        assert result.outcome == "accepted" and result.job_id
        job_ids.append(result.job_id.encode())
        mine = rds.hgetall(keys.rq_job_key(result.job_id))
        envelope = json.loads(mine[b"data"])[3]["envelope"]
        declared = encode_envelope(result.delivery_id, delivery.received_at, jsontext.dumpb(event.to_json()))
        assert envelope == json.loads(declared)  # the declared encoder's envelope, as the job reads it
        theirs = saved_by_rq(rds, settings, result.job_id + "-rq", envelope)
        assert set(mine) == {field for field, value in theirs.items() if value != b""}
        for field, value in theirs.items():
            if field == b"data":
                assert json.loads(mine[field]) == json.loads(zlib.decompress(value))
            elif field == b"meta":
                assert json.loads(mine[field]) == json.loads(value)
            elif value != b"" and field not in (b"created_at", b"enqueued_at"):
                assert mine[field] == value, field
        assert_same_job(fetch(rds, result.job_id), fetch(rds, result.job_id + "-rq"))
        assert fetch(rds, result.job_id).description == f"archive kie:{event.task_id} ({status.value})"
    assert rds.lrange(keys.rq_queue_key(settings.queue_name), 0, -1) == job_ids


async def submit(settings: Settings, event: TaskEvent, delivery: Delivery) -> IntakeResult:
    client = aioredis.Redis.from_url(settings.redis_url)
    try:
        intake = Intake(settings, client)
        await intake.start()
        return await intake.submit(event, delivery)
    finally:
        await client.aclose()


def echo_envelope(envelope: dict[str, Any]) -> dict[str, Any]:
    """The job function of the worker round trip (the archive job would go to the network)."""
    return {"task_id": envelope["event"]["task_id"], "delivery_id": envelope["delivery_id"]}


def test_a_real_rq_worker_runs_a_job_from_the_template(rds: redis.Redis) -> None:
    settings = Settings(queue_name="template-queue", retry_intervals_s=(5, 60))
    envelope = envelope_for("veo_worker")
    template = JobTemplate(settings, func_name=f"{__name__}.echo_envelope")
    job_id = "template-worker-job"
    rds.hset(keys.rq_job_key(job_id), mapping=template.written(template_args(template, envelope)))  # type: ignore[arg-type]
    rds.sadd(keys.RQ_QUEUES_SET, keys.rq_queue_key(settings.queue_name))
    rds.rpush(keys.rq_queue_key(settings.queue_name), job_id)

    queue = Queue(settings.queue_name, connection=rds, serializer=JSONSerializer)
    assert queue.job_ids == [job_id] and Queue.all(connection=rds) == [queue]
    assert SimpleWorker([queue], connection=rds, serializer=JSONSerializer).work(burst=True)
    done = fetch(rds, job_id)
    assert done.get_status() == JobStatus.FINISHED
    assert done.return_value() == {"task_id": "veo_worker", "delivery_id": "0f" * 16}


# ------------------------------------------------------------------------------------ refusing to start


def test_a_hash_rq_reads_differently_stops_the_template_with_the_field_named() -> None:
    class Renamed(JobTemplate):  # as if RQ's meta were read under other names
        def values(self, envelope_json: bytes, **kwargs: str) -> tuple[str, bytes, str, bytes]:
            stamp, data, description, meta = super().values(envelope_json, **kwargs)
            return stamp, data, description, meta.replace(b'"task_id"', b'"task"')

    with pytest.raises(ConfigError) as refused:
        Renamed(Settings())
    message = str(refused.value)
    assert "writes job hashes veo-archiver cannot reproduce: field meta" in message
    assert "pin rq to a tested version" in message


def test_a_time_format_rq_cannot_read_stops_the_template() -> None:
    class Local(JobTemplate):
        def _stamp(self, now: float | None = None) -> str:
            return datetime.fromtimestamp(now or time.time(), UTC).isoformat()

    with pytest.raises(ConfigError, match="cannot reproduce: the hash does not restore"):
        Local(Settings())


def test_rq_keys_under_another_prefix_stop_the_template(monkeypatch: pytest.MonkeyPatch) -> None:
    # what RQ 3's RQ_KEY_PREFIX does to every key RQ names: the receiver writes them itself, under ``rq:``
    monkeypatch.setattr(Job, "redis_job_namespace_prefix", "elsewhere:job:")
    with pytest.raises(ConfigError, match="unset RQ_KEY_PREFIX"):
        JobTemplate(Settings())
