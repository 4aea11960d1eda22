"""receiver/spool.py: the local spool on a real filesystem, and its drain through a real Intake and redis-server."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from receiver.spool import (
    REJECTED_DIR,
    TEMP_PREFIX,
    CorruptEntry,
    Spool,
    SpoolDrainer,
    decode_entry,
    drain,
    encode_entry,
)
from veo_archiver import redis_keys
from veo_archiver.errors import QueueUnavailable
from veo_archiver.event import TaskEvent, TaskStatus, Verification
from veo_archiver.intake import Delivery, Intake
from veo_archiver.settings import Settings

URL = "https://tempfile.aiquickdraw.com/v/abc.mp4"


def event(task_id: str = "veo_task_1") -> TaskEvent:
    return TaskEvent(
        provider="kie",
        task_id=task_id,
        status=TaskStatus.SUCCEEDED,
        result_urls=(URL,),
        extra={"code": 200, "msg": "ok"},
        verification=Verification.SIGNATURE,
        provider_status="success",
    )


def delivery(body: bytes = b'{"code": 200}') -> Delivery:
    return Delivery(
        body=body,
        headers={"content-type": "application/json", "x-webhook-timestamp": "1700000000", "authorization": "Bearer s"},
        received_at=1_700_000_000.25,
        remote="203.0.113.9",
        path="/callbacks/kie",
    )


def spool_at(tmp_path: Path, *, max_bytes: int = 1 << 20, max_files: int = 1000) -> Spool:
    return Spool(tmp_path / "spool", max_bytes=max_bytes, max_files=max_files)


# ------------------------------------------------------------------------------------------------ entries


def test_entry_round_trip_keeps_event_and_delivery_but_no_credentials() -> None:
    body = '{"code": 200, "msg": "vidéo"}'.encode() + b"\n"
    ev, dv = decode_entry(encode_entry(event(), delivery(body)))
    assert ev == event()
    assert dv.body == body
    assert (dv.received_at, dv.remote, dv.path) == (1_700_000_000.25, "203.0.113.9", "/callbacks/kie")
    assert dv.headers == {"content-type": "application/json", "x-webhook-timestamp": "1700000000"}
    assert dv.to_json() == delivery(body).to_json()  # what the intake stores is what the live path stored


@pytest.mark.parametrize(
    "data",
    [b"", b"not json", b"[]", b'{"v": 2}', b'{"v": 1, "event": {}}', b'{"v": 1, "event": {"provider": "kie"}}'],
)
def test_undecodable_entries_raise_corrupt_entry(data: bytes) -> None:
    with pytest.raises(CorruptEntry):
        decode_entry(data)


def test_bad_base64_body_is_corrupt() -> None:
    record = json.loads(encode_entry(event(), delivery()))
    record["delivery"]["body_b64"] = "!!not base64!!"
    with pytest.raises(CorruptEntry):
        decode_entry(json.dumps(record).encode())


# ------------------------------------------------------------------------------------------------ the spool


def test_entries_are_kept_in_arrival_order(tmp_path: Path) -> None:
    spool = spool_at(tmp_path)
    written = [spool.append(f"entry-{i}".encode()) for i in range(50)]
    pending = spool.pending()
    assert [e.name for e in pending] == [e.name for e in written]
    assert [e.path.read_bytes() for e in pending] == [f"entry-{i}".encode() for i in range(50)]
    assert spool.depth() == (50, sum(len(f"entry-{i}") for i in range(50)))


def test_a_new_spool_sees_what_an_earlier_one_wrote(tmp_path: Path) -> None:
    spool_at(tmp_path).append(b"kept")
    again = spool_at(tmp_path)
    assert [e.path.read_bytes() for e in again.pending()] == [b"kept"]
    assert again.depth() == (1, 4)


def test_file_bound_raises_queue_unavailable(tmp_path: Path) -> None:
    spool = spool_at(tmp_path, max_files=2)
    spool.append(b"a")
    spool.append(b"b")
    with pytest.raises(QueueUnavailable) as info:
        spool.append(b"c")
    assert info.value.reason == "spool_full"
    assert len(spool.pending()) == 2
    spool.remove(spool.pending()[0])
    spool.append(b"c")  # room again
    assert spool.depth()[0] == 2


def test_byte_bound_raises_queue_unavailable(tmp_path: Path) -> None:
    spool = spool_at(tmp_path, max_bytes=10)
    spool.append(b"123456")
    with pytest.raises(QueueUnavailable) as info:
        spool.append(b"12345")
    assert info.value.reason == "spool_full"
    spool.append(b"1234")
    assert spool.depth() == (2, 10)


def test_a_crash_before_the_rename_leaves_no_visible_entry(tmp_path: Path) -> None:
    spool = spool_at(tmp_path)
    spool.append(b"complete")
    stale = spool.directory / f"{TEMP_PREFIX}00000000000000000001-abc.json"
    stale.write_bytes(b'{"half')  # what a crash between write and rename leaves
    assert [e.path.read_bytes() for e in spool.pending()] == [b"complete"]
    again = spool_at(tmp_path)
    assert not stale.exists()
    assert [e.path.read_bytes() for e in again.pending()] == [b"complete"]


def test_oldest_age(tmp_path: Path) -> None:
    spool = spool_at(tmp_path)
    assert spool.oldest_age_s(1e10) is None
    first = spool.append(b"x")
    spool.append(b"y")
    age = spool.oldest_age_s(first.spooled_at + 7.5)
    assert age == pytest.approx(7.5)


# ------------------------------------------------------------------------------------------------ drain


def test_drain_stops_at_the_first_failure_and_resumes(tmp_path: Path) -> None:
    spool = spool_at(tmp_path)
    for i in range(5):
        spool.append(f"e{i}".encode())
    seen: list[bytes] = []
    down = {b"e2"}

    async def submit(data: bytes) -> None:
        if data in down:
            raise QueueUnavailable("redis down")
        seen.append(data)

    assert asyncio.run(drain(spool, submit)) == 2
    assert seen == [b"e0", b"e1"]
    assert [e.path.read_bytes() for e in spool.pending()] == [b"e2", b"e3", b"e4"]
    down.clear()
    assert asyncio.run(drain(spool, submit)) == 3
    assert seen == [b"e0", b"e1", b"e2", b"e3", b"e4"]
    assert spool.pending() == [] and spool.depth() == (0, 0)


def test_an_entry_is_kept_when_submit_fails_otherwise(tmp_path: Path) -> None:
    spool = spool_at(tmp_path)
    spool.append(b"e0")

    async def submit(data: bytes) -> None:
        raise RuntimeError("bug")

    with pytest.raises(RuntimeError):
        asyncio.run(drain(spool, submit))
    assert len(spool.pending()) == 1


def test_a_corrupt_entry_is_quarantined_not_retried(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    spool = spool_at(tmp_path)
    spool.append(encode_entry(event("a"), delivery()))
    bad = spool.append(b"\x00 garbage")
    spool.append(encode_entry(event("b"), delivery()))
    submitted: list[str] = []

    async def submit(data: bytes) -> None:
        ev, _ = decode_entry(data)
        submitted.append(ev.task_id)

    with caplog.at_level(logging.ERROR, logger="receiver.spool"):
        assert asyncio.run(drain(spool, submit)) == 2
    assert submitted == ["a", "b"]
    assert spool.pending() == []
    quarantined = spool.directory / REJECTED_DIR / bad.name
    assert quarantined.read_bytes() == b"\x00 garbage"
    assert any("quarantined" in r.getMessage() for r in caplog.records)
    assert asyncio.run(drain(spool, submit)) == 0  # not retried
    assert spool_at(tmp_path).pending() == []  # nor seen as pending by a new spool


def test_only_one_drain_at_a_time(tmp_path: Path) -> None:
    spool = spool_at(tmp_path)
    spool.append(b"e0")

    async def submit(data: bytes) -> None:
        raise AssertionError("must not run while another drain holds the lock")

    with spool.draining() as mine:
        assert mine
        assert asyncio.run(drain(spool, submit)) == 0
    assert len(spool.pending()) == 1


# ------------------------------------------------------------------------------------------------ with Redis


def queue_length(redis_server) -> int:  # type: ignore[no-untyped-def]
    with redis_server.client() as client:
        return int(client.llen(redis_keys.rq_queue_key("veo-archiver")))


def test_drainer_replays_what_was_spooled_while_redis_was_down(tmp_path: Path, redis_server) -> None:  # type: ignore[no-untyped-def]
    settings = Settings(redis_url=redis_server.url)
    spool = spool_at(tmp_path)
    drainer = SpoolDrainer(spool)

    async def scenario() -> None:
        client = aioredis.Redis.from_url(redis_server.url, socket_timeout=2, socket_connect_timeout=1)
        try:
            intake = Intake(settings, client)
            await intake.start()
            assert (await intake.submit(event("veo_dup"), delivery())).outcome == "accepted"
            redis_server.stop()
            for task_id in ("veo_1", "veo_2", "veo_3", "veo_dup"):
                with pytest.raises(QueueUnavailable):  # the live path fails: the receiver spools instead
                    await intake.submit(event(task_id), delivery())
                spool.append(encode_entry(event(task_id), delivery()))
            assert await drainer.run_once(intake) == 0  # still down: everything stays
            assert spool.depth()[0] == 4
            redis_server.start()
            assert await drainer.run_once(intake) == 4
        finally:
            await client.aclose()

    asyncio.run(scenario())
    assert spool.pending() == [] and spool.depth() == (0, 0)
    assert drainer.outcomes == {"accepted": 3, "duplicate": 1}
    assert queue_length(redis_server) == 4  # veo_dup's first job and the three spooled ones
    with redis_server.client() as client:
        ids = [v.decode() for v in client.lrange(redis_keys.rq_queue_key("veo-archiver"), 0, -1)]
        records = [json.loads(r) for r in client.lrange(redis_keys.deliveries_key("kie", "veo_1"), 0, -1)]
    assert ids == [redis_keys.job_id("kie", t, "succeeded") for t in ("veo_dup", "veo_1", "veo_2", "veo_3")]
    assert records[0]["callback"]["received_at"] == delivery().to_json()["received_at"]
    assert "authorization" not in records[0]["callback"]["headers"]
