"""The intake's group commit against a real redis-server: concurrent callbacks share pipelines, each keeps its
own promise (accepted once, deduplicated, 503 when Redis cannot take it, never left hanging), and the RQ job
hash built from the template is the one ``rq.Job.create`` writes, which a real RQ worker fetches and runs.

No timing thresholds: ``asyncio.wait_for`` bounds are hang guards only.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from rq.job import Job
from rq.serializers import JSONSerializer

from tests.fake_clock import FakeClock
from tests.stacks import settings_for
from veo_archiver import archive_keys, jsontext, redis_keys
from veo_archiver.clock import iso
from veo_archiver.errors import QueueUnavailable
from veo_archiver.event import TaskEvent, TaskStatus, Verification
from veo_archiver.group_commit import FLUSH_AT, FRESH_S, MAX_BATCHES_IN_FLIGHT
from veo_archiver.intake import DELIVERIES_PER_TASK, Delivery, Intake, IntakeResult, JobTemplate
from veo_archiver.intake_format import (
    ENVELOPE_VERSION,
    LAYOUT,
    ScriptLayout,
    decode_entry,
    encode_entry,
    encode_envelope,
    encode_record,
)
from veo_archiver.intake_script import intake_script
from veo_archiver.records import delivery as delivery_records
from veo_archiver.settings import Settings
from workers.storage_memory import MemoryArchive

QUEUE = "veo-archiver"
HANG_GUARD_S = 60.0


def event(task_id: str, status: TaskStatus = TaskStatus.SUCCEEDED, provider: str = "kie") -> TaskEvent:
    return TaskEvent(
        provider=provider,
        task_id=task_id,
        status=status,
        result_urls=(f"https://tempfile.aiquickdraw.com/v/{task_id}.mp4",) if status.terminal else (),
        verification=Verification.SIGNATURE,
        extra={"resolution": "1080p", "note": 'quotes " and \\ and ünïcode'},
    )


def delivery(task_id: str, n: int = 0) -> Delivery:
    body = json.dumps({"code": 200, "data": {"taskId": task_id, "n": n, "text": 'é\u2028"x"'}}).encode()
    return Delivery(
        body=body,
        headers={"content-type": "application/json", "authorization": "Bearer s3cr3t", "x-webhook-timestamp": "1"},
        received_at=1_790_000_000.123 + n,
        remote="127.0.0.1",
        path="/callbacks/kie",
    )


@pytest.fixture
def rds(redis_server) -> Iterator[redis.Redis]:  # type: ignore[no-untyped-def]
    client = redis_server.client()
    yield client
    client.close()


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, HANG_GUARD_S))


async def with_intake(settings: Settings, body: Any, clock: FakeClock | None = None, **client_kwargs: Any) -> Any:
    client = aioredis.Redis.from_url(settings.redis_url, **client_kwargs)
    try:
        intake = Intake(settings, client, clock=clock) if clock is not None else Intake(settings, client)
        await intake.start()
        return await body(intake)
    finally:
        await client.aclose()


def queued(rds: redis.Redis) -> list[str]:
    return [v.decode() for v in rds.lrange(redis_keys.rq_queue_key(QUEUE), 0, -1)]


def envelope_json(event_json: bytes, dl: Delivery, delivery_id: str) -> bytes:
    """The production encoder (intake_format.encode_envelope), as the template tests call it."""
    return encode_envelope(delivery_id, dl.received_at, event_json)


def build_envelope(ev: TaskEvent, dl: Delivery, delivery_id: str) -> dict[str, Any]:
    """The envelope as a dict: the production encoder's output, decoded."""
    value: dict[str, Any] = json.loads(envelope_json(jsontext.dumpb(ev.to_json()), dl, delivery_id))
    return value


def entries(rds: redis.Redis, task_id: str) -> list[dict[str, Any]]:
    """The task's audit list, each entry decoded (record + outcome)."""
    decoded = [decode_entry(raw) for raw in rds.lrange(redis_keys.deliveries_key("kie", task_id), 0, -1)]
    assert all(d is not None for d in decoded)
    return [d for d in decoded if d is not None]


# ------------------------------------------------------------------------------------------ the wire format


def test_the_encoders_write_the_declared_record_envelope_and_entry() -> None:
    ev, dl = event("veo_splice \u00e9 \ud800"), delivery("veo_splice", 3)  # a lone surrogate: the fallback encoder
    event_json, callback_json = jsontext.dumpb(ev.to_json()), jsontext.dumpb(dl.to_json())
    assert json.loads(encode_envelope("d1", dl.received_at, event_json)) == {
        "v": ENVELOPE_VERSION,
        "delivery_id": "d1",
        "received_ts": dl.received_at,
        "received_at": iso(dl.received_at),
        "event": json.loads(event_json),
    }
    record = {"delivery_id": "d1", "event": json.loads(event_json), "callback": json.loads(callback_json)}
    plain = encode_record("d1", event_json, callback_json, job_id="j-1", replayed_at=None)
    assert json.loads(plain) == {**record, "job_id": "j-1"}
    assert decode_entry(encode_entry("accepted", plain)) == {**record, "job_id": "j-1", "outcome": "accepted"}
    replayed = encode_record("d1", event_json, callback_json, job_id=None, replayed_at="2026-11-27T00:00:00.000Z")
    assert decode_entry(encode_entry("replayed", replayed)) == {
        **record,
        "replayed_at": "2026-11-27T00:00:00.000Z",
        "outcome": "replayed",
        "job_id": None,
    }
    # an entry of the previous intake (the outcome inside the JSON) still reads; garbage reads as None
    legacy = json.dumps({**record, "outcome": "duplicate", "job_id": "j-1"})
    assert decode_entry(legacy) == {**record, "outcome": "duplicate", "job_id": "j-1"}
    assert decode_entry(b"accepted not json") is None and decode_entry(b"\xff") is None


# ------------------------------------------------------------------------------------------ group commit


def test_concurrent_distinct_callbacks_are_all_accepted_in_shared_batches(redis_server, rds) -> None:  # type: ignore[no-untyped-def]
    settings = settings_for(redis_server)
    count = 300

    async def body(intake: Intake) -> list[IntakeResult]:
        return list(
            await asyncio.gather(*(intake.submit(event(f"veo_c{n}"), delivery(f"veo_c{n}", n)) for n in range(count)))
        )

    intake_ref: list[Intake] = []

    async def body_keep(intake: Intake) -> list[IntakeResult]:
        intake_ref.append(intake)
        return await body(intake)

    results = run(with_intake(settings, body_keep))
    assert [r.outcome for r in results] == ["accepted"] * count
    assert len({r.delivery_id for r in results}) == count
    intake = intake_ref[0]
    assert intake.batched == count and intake.batches < count  # they shared pipelines
    ids = queued(rds)
    assert sorted(ids) == sorted(r.job_id for r in results if r.job_id)
    for n, result in enumerate(results):
        assert result.job_id == redis_keys.job_id("kie", f"veo_c{n}", "succeeded")
        job = Job.fetch(result.job_id, connection=rds, serializer=JSONSerializer)
        assert job.func_name == redis_keys.ARCHIVE_JOB
        envelope = job.kwargs["envelope"]
        assert envelope["delivery_id"] == result.delivery_id and envelope["event"]["task_id"] == f"veo_c{n}"
        assert envelope["v"] == ENVELOPE_VERSION and "callback" not in envelope  # the job reads its record
        found = delivery_records.for_job(rds, envelope)
        assert found is not None and json.loads(found["callback"]["body"])["data"]["n"] == n
        assert "authorization" not in found["callback"]["headers"]
        (record,) = entries(rds, f"veo_c{n}")
        assert (
            record
            == found
            == {
                "delivery_id": result.delivery_id,
                "event": event(f"veo_c{n}").to_json(),
                "callback": delivery(f"veo_c{n}", n).to_json(),
                "outcome": "accepted",
                "job_id": result.job_id,
            }
        )
    assert rds.xlen(redis_keys.events_stream()) == count


def test_concurrent_duplicates_give_exactly_one_job(redis_server, rds) -> None:  # type: ignore[no-untyped-def]
    settings = settings_for(redis_server)

    async def body(intake: Intake) -> list[IntakeResult]:
        first = await asyncio.gather(*(intake.submit(event("veo_dup"), delivery("veo_dup", n)) for n in range(25)))
        later = await asyncio.gather(*(intake.submit(event("veo_dup"), delivery("veo_dup", n)) for n in range(5)))
        return [*first, *later]

    results = run(with_intake(settings, body))
    outcomes = [r.outcome for r in results]
    assert outcomes.count("accepted") == 1 and outcomes.count("duplicate") == 29
    job_id = redis_keys.job_id("kie", "veo_dup", "succeeded")
    assert {r.job_id for r in results} == {job_id}
    assert queued(rds) == [job_id]
    records = entries(rds, "veo_dup")
    assert len(records) == 30
    assert sorted(r["outcome"] for r in records) == ["accepted"] + ["duplicate"] * 29
    assert all(r["job_id"] == job_id for r in records)


def test_the_delivery_records_of_one_task_are_capped(redis_server, rds) -> None:  # type: ignore[no-untyped-def]
    settings = settings_for(redis_server)
    count = DELIVERIES_PER_TASK + 3

    async def body(intake: Intake) -> list[IntakeResult]:
        submits = (intake.submit(event("veo_cap"), delivery("veo_cap", n)) for n in range(count))
        return list(await asyncio.gather(*submits))

    results = run(with_intake(settings, body))
    records = entries(rds, "veo_cap")
    assert len(records) == DELIVERIES_PER_TASK
    assert [r["delivery_id"] for r in records] == [r.delivery_id for r in results[-DELIVERIES_PER_TASK:]]


def test_record_only_and_replay_in_the_same_batch(redis_server, rds) -> None:  # type: ignore[no-untyped-def]
    settings = settings_for(redis_server)

    async def body(intake: Intake) -> list[IntakeResult]:
        accepted = await intake.submit(event("veo_mix"), delivery("veo_mix"))
        mixed = await asyncio.gather(
            intake.submit(event("veo_mix"), delivery("veo_mix", 1), replay=True),
            intake.submit(event("veo_mix", TaskStatus.IN_PROGRESS), delivery("veo_mix", 2)),
            intake.submit(event("veo_mix"), delivery("veo_mix", 3)),
        )
        return [accepted, *mixed]

    accepted, replayed, recorded, duplicate = run(with_intake(settings, body))
    job_id = redis_keys.job_id("kie", "veo_mix", "succeeded")
    assert (accepted.outcome, accepted.job_id) == ("accepted", job_id)
    assert replayed.outcome == "replayed" and replayed.job_id and replayed.job_id.startswith(f"{job_id}-replay-")
    assert (recorded.outcome, recorded.job_id) == ("recorded", None)
    assert (duplicate.outcome, duplicate.job_id) == ("duplicate", job_id)
    assert queued(rds) == [job_id, replayed.job_id]
    replay_job = Job.fetch(replayed.job_id, connection=rds, serializer=JSONSerializer)
    assert replay_job.kwargs["envelope"]["delivery_id"] == replayed.delivery_id
    records = entries(rds, "veo_mix")
    assert [(r["outcome"], r["job_id"]) for r in records] == [
        ("accepted", job_id),
        ("replayed", replayed.job_id),
        ("recorded", None),
        ("duplicate", job_id),
    ]
    assert "replayed_at" in records[1] and "replayed_at" not in records[0]


def test_script_cache_flushed_between_batches_still_works(redis_server, rds) -> None:  # type: ignore[no-untyped-def]
    settings = settings_for(redis_server)

    async def body(intake: Intake) -> list[IntakeResult]:
        first = await intake.submit(event("veo_flush_0"), delivery("veo_flush_0"))
        await intake._redis.script_flush()  # what a Redis restart does to the script cache
        rest = await asyncio.gather(
            *(intake.submit(event(f"veo_flush_{n}"), delivery(f"veo_flush_{n}")) for n in range(1, 20))
        )
        await intake._redis.script_flush()
        last = await intake.submit(event("veo_flush_0"), delivery("veo_flush_0", 1))
        return [first, *rest, last]

    results = run(with_intake(settings, body))
    assert [r.outcome for r in results] == ["accepted"] * 20 + ["duplicate"]
    assert len(queued(rds)) == 20


def test_one_intake_on_two_event_loops(redis_server, rds) -> None:  # type: ignore[no-untyped-def]
    """The CLI and the sweep call asyncio.run per batch; an Intake's batching follows the running loop."""
    settings = settings_for(redis_server)
    intake = Intake(settings, aioredis.Redis.from_url(settings.redis_url))
    for n in range(2):

        async def once(n: int = n) -> IntakeResult:
            try:
                return await intake.submit(event(f"veo_loop_{n}"), delivery(f"veo_loop_{n}"))
            finally:
                await intake._redis.connection_pool.disconnect()

        assert run(once()).outcome == "accepted"
    assert len(queued(rds)) == 2


def test_started_while_redis_was_down_the_first_batch_probes_it(redis_server, rds) -> None:  # type: ignore[no-untyped-def]
    """start() could not reach Redis: the first batch learns the server's durability (WAITAOF or not) itself."""
    settings = settings_for(redis_server)
    version = tuple(int(p) for p in rds.info("server")["redis_version"].split(".")[:2])
    redis_server.stop()

    async def body(intake: Intake) -> tuple[bool, IntakeResult]:
        redis_server.start()
        result = await intake.submit(event("veo_late"), delivery("veo_late"))
        return intake.waits_for_aof, result

    waits, result = run(with_intake(settings, body))
    assert result.outcome == "accepted"
    assert waits == (version >= (7, 2))
    assert queued(redis_server.client()) == [result.job_id]


# ------------------------------------------------------------------------------------------ failures


def test_redis_killed_mid_way_fails_every_waiter_with_queue_unavailable(redis_server, rds) -> None:  # type: ignore[no-untyped-def]
    settings = settings_for(redis_server, enqueue_timeout_s=2.0)
    senders = 40

    async def body(intake: Intake) -> tuple[list[list[str]], int]:
        killed = asyncio.Event()

        async def sender(s: int) -> list[str]:
            seen: list[str] = []
            n = 0
            while True:
                try:
                    result = await intake.submit(event(f"veo_kill_{s}_{n}"), delivery(f"veo_kill_{s}_{n}"))
                    seen.append(result.outcome)
                except QueueUnavailable:
                    seen.append("unavailable")
                    if killed.is_set():
                        return seen
                n += 1
                if n > 5000:  # Redis never went away: the test is broken, not the intake
                    return seen

        async def killer() -> None:
            while intake.batches < 5:
                await asyncio.sleep(0.001)
            redis_server.kill()  # SIGKILL while batches are in flight and more are gathering
            killed.set()

        results = await asyncio.gather(*(sender(s) for s in range(senders)), killer())
        return results[:senders], intake.batches

    per_sender, batches = run(with_intake(settings, body, socket_timeout=2.0))
    assert batches >= 5
    for seen in per_sender:  # every sender was answered, and its last answer was the refusal
        assert seen[-1] == "unavailable"
        assert set(seen) <= {"accepted", "unavailable"}
    assert sum(seen.count("accepted") for seen in per_sender) > 0


def test_a_frozen_redis_fails_the_batch_instead_of_hanging(redis_server, rds) -> None:  # type: ignore[no-untyped-def]
    """No socket timeout on the client at all: the intake's own guard answers the callers."""
    settings = settings_for(redis_server, enqueue_timeout_s=0.1)  # the batch's guard: 2 x 0.1 s + 1 s
    pid = redis_server._proc.pid

    async def body(intake: Intake) -> list[Any]:
        await intake.submit(event("veo_frozen_warm"), delivery("veo_frozen_warm"))
        os.kill(pid, signal.SIGSTOP)
        try:
            return list(
                await asyncio.gather(
                    *(intake.submit(event(f"veo_frozen_{n}"), delivery(f"veo_frozen_{n}")) for n in range(10)),
                    return_exceptions=True,
                )
            )
        finally:
            os.kill(pid, signal.SIGCONT)

    results = run(with_intake(settings, body))
    assert all(isinstance(r, QueueUnavailable) for r in results), results


def test_a_failed_waitaof_fails_every_caller_of_the_batch(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """WAITAOF gates the batch: on a server without it (< 7.2) the error reply, on a server with it and
    ``appendfsync no`` (never fsyncs by itself) a timed-out [0, 0], fails every caller."""
    from tests.servers import RedisServer

    with RedisServer(tmp_path / "redis", appendfsync="no") as server:
        settings = settings_for(server, enqueue_timeout_s=0.3, redis_durability="none")

        async def body(intake: Intake) -> list[Any]:
            intake._wait_aof = True  # as start() decides for >= 7.2 with AOF on; forced for older servers
            return list(
                await asyncio.gather(
                    *(intake.submit(event(f"veo_aof_{n}"), delivery(f"veo_aof_{n}")) for n in range(8)),
                    return_exceptions=True,
                )
            )

        results = run(with_intake(settings, body, socket_timeout=5.0))
    assert len(results) == 8 and all(isinstance(r, QueueUnavailable) for r in results), results


def test_waitaof_is_used_where_the_server_has_it(redis_server, rds) -> None:  # type: ignore[no-untyped-def]
    """With Redis >= 7.2 and AOF on, a batch is answered only after its WAITAOF (the success path)."""
    settings = settings_for(redis_server)

    async def body(intake: Intake) -> tuple[bool, list[IntakeResult]]:
        results = await asyncio.gather(*(intake.submit(event(f"veo_w{n}"), delivery(f"veo_w{n}")) for n in range(10)))
        return intake.waits_for_aof, list(results)

    waits, results = run(with_intake(settings, body))
    version = tuple(int(p) for p in rds.info("server")["redis_version"].split(".")[:2])
    assert waits == (version >= (7, 2))
    assert [r.outcome for r in results] == ["accepted"] * 10
    assert len(queued(rds)) == 10


class NoStatusAPI:
    """No provider's status API is configured: the job archives what the callback said."""

    def can_confirm(self, provider: str) -> bool:
        return False

    def fetch(self, provider: str, task_id: str) -> TaskEvent:
        raise AssertionError("not called")


def archive_job(settings: Settings, rds: redis.Redis, job_id: str) -> tuple[dict[str, Any], MemoryArchive]:
    """Run the real archive job on the RQ job ``job_id`` as Redis holds it; (its archived callback, the archive).
    The events are failures: the job archives the raw callback and the manifest, and downloads nothing."""
    from workers.context import WorkerContext, fetch_policy
    from workers.egress import EgressPolicy
    from workers.fetch import build_client
    from workers.jobs import run_archive

    archive = MemoryArchive()
    policy = fetch_policy(settings)
    ctx = WorkerContext(
        settings=settings,
        archive=archive,
        client=build_client(policy, EgressPolicy(settings.download_allow_hosts)),
        fetch_policy=policy,
        status=NoStatusAPI(),
    )
    job = Job.fetch(job_id, connection=rds, serializer=JSONSerializer)
    envelope = job.kwargs["envelope"]
    result = run_archive(envelope, ctx, job)
    assert isinstance(result, dict) and result["outcome"] == "provider_failed", result
    event = envelope["event"]
    raw = archive.get_bytes(archive_keys.callback_key(event["provider"], event["task_id"], event["status"]))
    assert raw is not None
    callback: dict[str, Any] = json.loads(raw)
    return callback, archive


def test_the_audit_list_is_trimmed_past_its_cap_and_the_job_still_finds_its_record(redis_server, rds) -> None:  # type: ignore[no-untyped-def]
    """Past the cap the oldest records simply go (LTRIM); the delivery that created a job stored its record
    under its own key, so the job archives its raw callback however many deliveries followed."""
    settings = settings_for(redis_server)
    extra = 5

    async def body(intake: Intake) -> list[IntakeResult]:
        first = [await intake.submit(event("veo_cap", TaskStatus.FAILED), delivery("veo_cap", 0))]
        rest = [
            await intake.submit(event("veo_cap", TaskStatus.IN_PROGRESS), delivery("veo_cap", n))
            for n in range(1, DELIVERIES_PER_TASK + extra)
        ]
        return first + rest

    results = run(with_intake(settings, body))
    accepted = results[0]
    assert accepted.outcome == "accepted" and accepted.job_id and {r.outcome for r in results[1:]} == {"recorded"}
    kept = entries(rds, "veo_cap")
    assert len(kept) == DELIVERIES_PER_TASK and accepted.delivery_id not in {r["delivery_id"] for r in kept}
    # only the delivery that created a job has a key of its own, for RAW_CALLBACK_TTL
    own = redis_keys.delivery_record_key(accepted.delivery_id)
    assert 0 < rds.ttl(own) <= settings.raw_callback_ttl_s
    assert not any(rds.exists(redis_keys.delivery_record_key(r.delivery_id)) for r in results[1:])
    callback, _ = archive_job(settings, rds, accepted.job_id)
    assert json.loads(callback["body"])["data"]["n"] == 0 and callback["delivery_id"] == accepted.delivery_id


def _v2_job(settings: Settings, rds: redis.Redis, ev: TaskEvent, dl: Delivery, delivery_id: str) -> str:
    """A job as the previous intake queued it: envelope version 2, no record key of its own."""
    envelope = {**build_envelope(ev, dl, delivery_id), "v": 2}
    job_id = redis_keys.job_id(ev.provider, ev.task_id, ev.status.value)
    args = JobTemplate(settings).hset_args(
        jsontext.dumpb(envelope),
        provider=ev.provider,
        task_id=ev.task_id,
        status=ev.status.value,
        delivery_id=delivery_id,
    )
    rds.hset(redis_keys.rq_job_key(job_id), mapping=dict(zip(args[0::2], args[1::2], strict=True)))
    return job_id


def _v2_record(ev: TaskEvent, dl: Delivery, delivery_id: str, job_id: str) -> str:
    """A record as the previous intake stored it: one JSON object with the outcome inside."""
    return json.dumps(
        {
            "delivery_id": delivery_id,
            "event": ev.to_json(),
            "callback": dl.to_json(),
            "outcome": "accepted",
            "job_id": job_id,
        }
    )


@pytest.mark.parametrize("where", ["list", "parked"])
def test_a_job_queued_by_the_previous_intake_is_still_archived(redis_server, rds, where: str) -> None:  # type: ignore[no-untyped-def]
    """Envelope version 2 read its record from the task's list, or from the key it was parked under once the
    list was full; both still work (version 1 carried the callback itself: tests/workers/test_job_logic.py)."""
    settings = settings_for(redis_server)
    ev, dl = event("veo_v2", TaskStatus.FAILED), delivery("veo_v2", 7)
    job_id = _v2_job(settings, rds, ev, dl, "d2" * 16)
    record = _v2_record(ev, dl, "d2" * 16, job_id)
    if where == "list":
        rds.rpush(redis_keys.deliveries_key("kie", "veo_v2"), _v2_record(ev, dl, "other", job_id), record)
    else:
        rds.set(redis_keys.delivery_record_key("d2" * 16), record)
    callback, _ = archive_job(settings, rds, job_id)
    assert json.loads(callback["body"])["data"]["n"] == 7 and callback["delivery_id"] == "d2" * 16


def test_the_script_takes_its_positions_from_the_declared_layout(redis_server, rds) -> None:  # type: ignore[no-untyped-def]
    """Another order of the same names (and the job's arguments elsewhere): the script's locals follow it, and
    an intake running that layout records, dedupes and enqueues as the shipped one does."""
    settings = settings_for(redis_server)
    shuffled = ScriptLayout(
        constant_keys=tuple(reversed(LAYOUT.constant_keys)),
        keys=tuple(reversed(LAYOUT.keys)),
        argv=("created_at", "data", "description", "meta", *reversed(LAYOUT.argv[:8])),
    )
    lua = intake_script(settings, layout=shuffled)
    assert lua != intake_script(settings)
    for i, name in enumerate(shuffled.keys, start=1):
        assert f"local key_{name} = KEYS[k + {i}]" in lua
    for i, name in enumerate(shuffled.constant_keys, start=1):
        assert f"local key_{name} = KEYS[{i}]" in lua
    assert "local job_id = ARGV[a + 12]" in lua and "ARGV[a + 1 + 0]" in lua  # created_at first
    assert f"(#KEYS - 3) / {len(LAYOUT.keys)} - 1" in lua and f"{len(LAYOUT.argv)} * i" in lua
    with pytest.raises(ValueError, match="needs the keys"):
        ScriptLayout(keys=LAYOUT.keys[:-1])
    with pytest.raises(ValueError, match="follow each other"):
        ScriptLayout(argv=("created_at", "job_id", "data", "description", "meta", *LAYOUT.argv[1:8]))

    async def body(intake: Intake) -> list[IntakeResult]:
        first = await asyncio.gather(*(intake.submit(event(f"veo_l{n}"), delivery(f"veo_l{n}", n)) for n in range(3)))
        again = await intake.submit(event("veo_l0"), delivery("veo_l0", 9))
        return [*first, again]

    client = aioredis.Redis.from_url(settings.redis_url)

    async def with_layout() -> list[IntakeResult]:
        try:
            return await body(Intake(settings, client, layout=shuffled))
        finally:
            await client.aclose()

    results = run(with_layout())
    assert [r.outcome for r in results] == ["accepted"] * 3 + ["duplicate"]
    assert sorted(queued(rds)) == sorted(r.job_id for r in results[:3] if r.job_id)
    for n, result in enumerate(results[:3]):
        job = Job.fetch(result.job_id or "", connection=rds, serializer=JSONSerializer)
        found = delivery_records.for_job(rds, job.kwargs["envelope"])
        assert found is not None and found["outcome"] == "accepted" and found["job_id"] == result.job_id
        assert json.loads(found["callback"]["body"])["data"]["n"] == n
    assert [r["outcome"] for r in entries(rds, "veo_l0")] == ["accepted", "duplicate"]


def test_one_failing_delivery_fails_only_its_own_caller_in_a_shared_batch(redis_server, rds) -> None:  # type: ignore[no-untyped-def]
    """The script runs every delivery of a batch under pcall: a key of the wrong type fails that one caller
    (503 for it), and the others of the same call are accepted."""
    settings = settings_for(redis_server)
    rds.set(redis_keys.deliveries_key("kie", "veo_wrongtype"), "not a list")

    async def body(intake: Intake) -> list[IntakeResult | BaseException]:
        tasks = [intake.submit(event(f"veo_ok{n}"), delivery(f"veo_ok{n}", n)) for n in range(3)]
        tasks.insert(1, intake.submit(event("veo_wrongtype"), delivery("veo_wrongtype", 9)))
        return await asyncio.gather(*tasks, return_exceptions=True)

    results = run(with_intake(settings, body))
    failed = results[1]
    assert isinstance(failed, QueueUnavailable) and "WRONGTYPE" in failed.message
    assert [r.outcome for r in results if isinstance(r, IntakeResult)] == ["accepted"] * 3
    assert sorted(queued(rds)) == sorted(redis_keys.job_id("kie", f"veo_ok{n}", "succeeded") for n in range(3))


def test_the_writer_keeps_its_connections_and_writes_full_batches_at_once(redis_server, rds) -> None:  # type: ignore[no-untyped-def]
    """Batches reuse the writer's own connections; a batch that reaches FLUSH_AT on a ready connection is
    written in the caller's turn of the loop (``eager``) instead of at the end of it."""
    settings = settings_for(redis_server)
    count = 4 * FLUSH_AT

    async def body(intake: Intake) -> tuple[list[IntakeResult], int, int]:
        await intake.submit(event("veo_warm"), delivery("veo_warm"))  # the writer's first connection
        results = await asyncio.gather(
            *(intake.submit(event(f"veo_e{n}"), delivery(f"veo_e{n}")) for n in range(count))
        )
        clients = int((await intake._redis.info("clients"))["connected_clients"])
        return list(results), intake._writer.eager, clients

    results, eager, clients = run(with_intake(settings, body))
    assert [r.outcome for r in results] == ["accepted"] * count
    assert eager >= 1
    assert clients <= MAX_BATCHES_IN_FLIGHT + 2  # the writer's connections, the INFO one and this test's
    assert len(queued(rds)) == count + 1


def test_a_redis_restart_between_batches_costs_no_callback(redis_server, rds) -> None:  # type: ignore[no-untyped-def]
    """The writer's idle connections die with Redis; the first batch after the restart checks its connection
    (idle past FRESH_S), reconnects, and is accepted: nobody gets a 503 for a Redis that is back."""
    settings = settings_for(redis_server)
    clock = FakeClock()

    async def body(intake: Intake) -> list[IntakeResult]:
        first = await intake.submit(event("veo_before"), delivery("veo_before"))
        redis_server.restart()
        clock.advance(FRESH_S + 0.2)
        later = await asyncio.gather(
            *(intake.submit(event(f"veo_after{n}"), delivery(f"veo_after{n}")) for n in range(20))
        )
        return [first, *later]

    results = run(with_intake(settings, body, clock=clock))
    assert [r.outcome for r in results] == ["accepted"] * 21
    assert len(queued(redis_server.client())) == 21


def test_a_delivery_redis_refuses_on_its_own_fails_alone_in_a_shared_batch(redis_server, rds) -> None:  # type: ignore[no-untyped-def]
    """One delivery whose record is over Redis's proto-max-bulk-len makes Redis refuse the batch's whole command
    (and close the connection): the others of the batch are still accepted, only that one fails."""
    rds.config_set("proto-max-bulk-len", 1024 * 1024)  # the smallest value Redis takes
    settings = settings_for(redis_server)
    big = Delivery(
        body=json.dumps({"code": 200, "data": {"taskId": "veo_big", "pad": "x" * (1200 * 1024)}}).encode(),
        headers={"content-type": "application/json"},
        received_at=1_764_000_000.0,
        remote="127.0.0.1",
        path="/callbacks/kie",
    )

    async def body(intake: Intake) -> list[Any]:
        small = [intake.submit(event(f"veo_s{n}"), delivery(f"veo_s{n}", n)) for n in range(6)]
        return list(await asyncio.gather(intake.submit(event("veo_big"), big), *small, return_exceptions=True))

    refused, *accepted = run(with_intake(settings, body))
    assert isinstance(refused, QueueUnavailable)
    assert [r.outcome for r in accepted] == ["accepted"] * 6
    assert sorted(queued(rds)) == sorted(r.job_id for r in accepted)
