"""receiver/spool.py, spool_files.py and spool_drain.py: the local spool on a real filesystem, and its drain
through a real Intake and redis-server. No entry can hold up the others: an entry that fails on its own while
Redis answers is retried a bounded number of times, then quarantined with its reason; the rest drain in order."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from receiver.spool import (
    QUARANTINE_DIR,
    REJECTED_DIR,
    TEMP_PREFIX,
    CorruptEntry,
    Spool,
    decode_entry,
    encode_entry,
    survey,
)
from receiver.spool_drain import RedisHealth, RetryPolicy, SpoolDrainer, drain
from receiver.spool_files import requeue
from veo_archiver import redis_keys
from veo_archiver.errors import QueueUnavailable
from veo_archiver.event import TaskEvent, TaskStatus, Verification
from veo_archiver.intake import Delivery, Intake
from veo_archiver.records import delivery as delivery_records
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


def health_is(state: RedisHealth):  # type: ignore[no-untyped-def]
    async def health() -> RedisHealth:
        return state

    return health


UP = health_is(RedisHealth.UP)
#: no backoff: each drain pass tries every entry again
EAGER = RetryPolicy(max_attempts=3, first_delay_s=0.0)


def texts(spool: Spool) -> list[bytes]:
    return [e.path.read_bytes() for e in spool.pending()]


def test_drain_stops_while_redis_is_down_and_resumes(tmp_path: Path) -> None:
    spool = spool_at(tmp_path)
    for i in range(5):
        spool.append(f"e{i}".encode())
    seen: list[bytes] = []
    down = {b"e2"}

    async def submit(data: bytes) -> None:
        if data in down:
            raise QueueUnavailable("redis down")
        seen.append(data)

    assert asyncio.run(drain(spool, submit, health_is(RedisHealth.DOWN))) == 2
    assert seen == [b"e0", b"e1"]
    assert texts(spool) == [b"e2", b"e3", b"e4"]
    assert spool.attempts() == {}  # Redis down says nothing about the entry: nothing counted against it
    down.clear()
    assert asyncio.run(drain(spool, submit, UP)) == 3
    assert seen == [b"e0", b"e1", b"e2", b"e3", b"e4"]
    assert spool.pending() == [] and spool.depth() == (0, 0)


def test_redis_refusing_every_write_counts_nothing_against_the_entries(tmp_path: Path) -> None:
    spool = spool_at(tmp_path)
    spool.append(b"e0")
    spool.append(b"e1")
    tried: list[bytes] = []

    async def submit(data: bytes) -> None:
        tried.append(data)
        raise QueueUnavailable("OOM command not allowed when used memory > 'maxmemory'")

    for _ in range(5):
        assert asyncio.run(drain(spool, submit, health_is(RedisHealth.REFUSING), policy=EAGER)) == 0
    assert tried == [b"e0"] * 5  # each pass stops at the first: no entry quarantined, none skipped
    assert texts(spool) == [b"e0", b"e1"] and spool.attempts() == {}
    assert not (spool.directory / QUARANTINE_DIR).exists()


def test_an_entry_failing_on_its_own_is_retried_then_quarantined_while_the_rest_drain_in_order(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool = spool_at(tmp_path)
    bad = [spool.append(b"e0"), spool.append(b"bad"), spool.append(b"e2")][1]
    submitted: list[bytes] = []
    quarantines: list[str] = []

    async def submit(data: bytes) -> None:
        if data == b"bad":
            raise QueueUnavailable("Protocol error: invalid bulk length", reason="queue_unavailable")
        submitted.append(data)

    def one_pass(on: Spool) -> int:
        return asyncio.run(drain(on, submit, UP, policy=EAGER, on_quarantine=quarantines.append))

    with caplog.at_level(logging.WARNING, logger="receiver.spool"):
        assert one_pass(spool) == 2
        assert submitted == [b"e0", b"e2"]  # the entry behind the bad one was not held up
        assert texts(spool) == [b"bad"]
        assert spool.attempts()[bad.name].count == 1
        spool.append(b"e3")
        # the count survives a restart: it is kept beside the entry
        spool = spool_at(tmp_path)
        assert one_pass(spool) == 1
        assert spool.attempts()[bad.name].count == 2
        assert one_pass(spool) == 0
    assert submitted == [b"e0", b"e2", b"e3"]
    assert spool.pending() == [] and spool.attempts() == {}
    assert quarantines == ["queue_unavailable"]
    held = spool.directory / QUARANTINE_DIR / bad.name
    assert held.read_bytes() == b"bad"
    reason = json.loads(held.with_name(bad.name + ".reason").read_text())
    assert (reason["reason"], reason["attempts"]) == ("queue_unavailable", 3)
    assert "invalid bulk length" in reason["error"] and len(reason["errors"]) == 3
    (record,) = [r for r in caplog.records if "quarantined" in r.getMessage()]
    assert record.levelno == logging.WARNING and record.__dict__["reason"] == "queue_unavailable"
    figures = survey(spool.directory, 0.0)
    assert (figures.entries, figures.quarantined) == (0, 1)
    assert figures.latest_quarantined[0].name == bad.name
    assert figures.latest_quarantined[0].reason == "queue_unavailable"
    assert figures.to_json()["latest_quarantined"][0]["attempts"] == 3


def test_an_entry_that_raises_anything_is_quarantined_with_the_exception_type(tmp_path: Path) -> None:
    spool = spool_at(tmp_path)
    spool.append(b"e0")
    spool.append(b"e1")

    async def submit(data: bytes) -> None:
        if data == b"e0":
            raise UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed")

    for _ in range(3):
        asyncio.run(drain(spool, submit, UP, policy=EAGER))
    (held,) = survey(spool.directory, 0.0).latest_quarantined
    assert held.reason == "UnicodeEncodeError" and "surrogates not allowed" in held.error
    assert spool.pending() == []


def test_a_failed_entry_waits_out_its_backoff_and_the_others_go_on(tmp_path: Path) -> None:
    spool = spool_at(tmp_path)
    spool.append(b"bad")
    now = [1000.0]
    tried: list[bytes] = []

    async def submit(data: bytes) -> None:
        tried.append(data)
        if data == b"bad":
            raise RuntimeError("bug")

    policy = RetryPolicy(max_attempts=5, first_delay_s=10.0, max_delay_s=15.0)
    assert [policy.delay_s(n) for n in (1, 2, 3)] == [10.0, 15.0, 15.0]

    def one_pass() -> int:
        return asyncio.run(drain(spool, submit, UP, policy=policy, clock=lambda: now[0]))

    one_pass()
    assert tried == [b"bad", b"bad"]  # tried again at once: one failure could be a connection's, not its own
    spool.append(b"good")
    assert one_pass() == 1  # "bad" is backing off: not tried; "good", behind it, is submitted
    assert tried == [b"bad", b"bad", b"good"]
    now[0] += 10.0
    one_pass()
    assert tried == [b"bad", b"bad", b"good", b"bad", b"bad"]
    assert spool.attempts()[spool.pending()[0].name].count == 2


def test_a_corrupt_entry_is_rejected_into_a_folder_made_on_demand(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool = spool_at(tmp_path)
    assert not (spool.directory / REJECTED_DIR).exists() and not (spool.directory / QUARANTINE_DIR).exists()
    spool.append(encode_entry(event("a"), delivery()))
    bad = spool.append(b"\x00 garbage")
    spool.append(encode_entry(event("b"), delivery()))
    submitted: list[str] = []

    async def submit(data: bytes) -> None:
        ev, _ = decode_entry(data)
        submitted.append(ev.task_id)

    with caplog.at_level(logging.ERROR, logger="receiver.spool"):
        assert asyncio.run(drain(spool, submit, UP)) == 2
    assert submitted == ["a", "b"]
    assert spool.pending() == []
    assert (spool.directory / REJECTED_DIR / bad.name).read_bytes() == b"\x00 garbage"
    assert any("rejected" in r.getMessage() for r in caplog.records)
    assert asyncio.run(drain(spool, submit, UP)) == 0  # not retried
    assert spool_at(tmp_path).pending() == []  # nor seen as pending by a new spool
    assert survey(spool.directory, 0.0).rejected == 1


def test_an_entry_that_cannot_be_moved_aside_stays_and_the_others_drain(tmp_path: Path) -> None:
    spool = spool_at(tmp_path)
    (spool.directory / REJECTED_DIR).write_text("a file where the folder should be")
    bad = spool.append(b"\x00 garbage")
    spool.append(encode_entry(event("b"), delivery()))

    async def submit(data: bytes) -> None:
        decode_entry(data)

    assert asyncio.run(drain(spool, submit, UP)) == 1
    assert [e.name for e in spool.pending()] == [bad.name]  # never lost: still waiting


def test_only_one_drain_at_a_time(tmp_path: Path) -> None:
    spool = spool_at(tmp_path)
    spool.append(b"e0")

    async def submit(data: bytes) -> None:
        raise AssertionError("must not run while another drain holds the lock")

    with spool.draining() as mine:
        assert mine
        assert asyncio.run(drain(spool, submit, UP)) == 0
    assert len(spool.pending()) == 1


def test_requeue_puts_quarantined_entries_back_at_the_head(tmp_path: Path) -> None:
    spool = spool_at(tmp_path)
    first = spool.append(b"bad-1")
    second = spool.append(b"bad-2")
    broken = {b"bad-1", b"bad-2"}

    async def submit(data: bytes) -> None:
        if data in broken:
            raise RuntimeError("not yet")

    for _ in range(3):
        asyncio.run(drain(spool, submit, UP, policy=EAGER))
    assert survey(spool.directory, 0.0).quarantined == 2 and spool.pending() == []
    spool.append(b"later")
    assert requeue(spool.directory, [first.name, "nope.json"]) == ([first.name], ["nope.json"])
    assert spool.pending()[0].name == first.name  # its own name: the oldest waiting
    assert spool.attempts() == {}  # a fresh count
    assert not (spool.directory / QUARANTINE_DIR / (first.name + ".reason")).exists()
    broken.clear()
    assert asyncio.run(drain(spool, submit, UP)) == 2
    assert requeue(spool.directory) == ([second.name], [])
    assert asyncio.run(drain(spool, submit, UP)) == 1
    assert survey(spool.directory, 0.0).quarantined == 0


# ------------------------------------------------------------------------------------------------ writable


def test_a_writable_spool_says_so_and_caches_the_answer(tmp_path: Path) -> None:
    spool = spool_at(tmp_path)
    assert spool.writable() == (True, "")
    assert [p.name for p in spool.directory.iterdir()] == []  # the probe left nothing
    spool.directory.rename(tmp_path / "moved")
    assert spool.writable()[0] is True  # the latest write's result, for WRITE_CHECK_TTL_S
    ok, why = spool.writable(max_age_s=0)
    assert not ok and "No such file or directory" in why


def test_a_spool_directory_replaced_by_a_file_is_unwritable(tmp_path: Path) -> None:
    """Root ignores chmod, so this replaces the directory: what a vanished mount looks like, not a read-only one."""
    spool = spool_at(tmp_path)
    spool.directory.rename(tmp_path / "moved")
    spool.directory.write_text("not a directory")
    ok, why = spool.writable(max_age_s=0)
    assert not ok and "Not a directory" in why
    with pytest.raises(QueueUnavailable) as info:
        spool.append(b"x")
    assert info.value.reason == "spool_unwritable"


@pytest.fixture
def immutable_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory nobody, root included, may create files in: ``chattr +i`` (ext4, xfs, btrfs)."""
    directory = tmp_path / "immutable"
    directory.mkdir()
    if not shutil.which("chattr") or subprocess.run(["chattr", "+i", str(directory)], capture_output=True).returncode:
        pytest.skip("chattr +i is not available here")
    try:
        yield directory
    finally:
        subprocess.run(["chattr", "-i", str(directory)], check=True)


def test_an_immutable_spool_directory_is_unwritable_even_for_root(tmp_path: Path, immutable_dir: Path) -> None:
    subprocess.run(["chattr", "-i", str(immutable_dir)], check=True)
    spool = Spool(immutable_dir, max_bytes=1 << 20, max_files=10)
    subprocess.run(["chattr", "+i", str(immutable_dir)], check=True)
    ok, why = spool.writable(max_age_s=0)
    assert not ok and "Operation not permitted" in why
    with pytest.raises(QueueUnavailable):
        spool.append(b"x")


@pytest.fixture
def tiny_filesystem(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs: a real full disk (needs root with CAP_SYS_ADMIN; skipped otherwise)."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], capture_output=True)
    if os.geteuid() != 0 or done.returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_a_full_disk_makes_the_spool_unwritable(tiny_filesystem: Path) -> None:
    spool = Spool(tiny_filesystem / "spool", max_bytes=1 << 30, max_files=100_000)
    with pytest.raises(OSError), (tiny_filesystem / "filler").open("wb") as filler:
        while True:
            filler.write(b"\0" * 4096)
            filler.flush()
            os.fsync(filler.fileno())
    ok, why = spool.writable(max_age_s=0)
    assert not ok and "No space left on device" in why, why
    with pytest.raises(QueueUnavailable) as info:
        spool.append(b"x" * 8192)
    assert info.value.reason == "spool_unwritable"
    (tiny_filesystem / "filler").unlink()
    assert spool.writable(max_age_s=0) == (True, "")


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
            assert spool.attempts() == {}  # Redis down: nothing counted against the entries
            assert await drainer.run_once(intake) == 4
        finally:
            await client.aclose()

    asyncio.run(scenario())
    assert spool.pending() == [] and spool.depth() == (0, 0)
    assert drainer.outcomes == {"accepted": 3, "duplicate": 1}
    assert queue_length(redis_server) == 4  # veo_dup's first job and the three spooled ones
    with redis_server.client() as client:
        ids = [v.decode() for v in client.lrange(redis_keys.rq_queue_key("veo-archiver"), 0, -1)]
    records = delivery_records.stored(redis_server.client(), "kie", "veo_1")
    assert ids == [redis_keys.job_id("kie", t, "succeeded") for t in ("veo_dup", "veo_1", "veo_2", "veo_3")]
    assert records[0]["callback"]["received_at"] == delivery().to_json()["received_at"]
    assert "authorization" not in records[0]["callback"]["headers"]


def run_drainer(redis_server, spool: Spool, drainer: SpoolDrainer, passes: int) -> list[int]:  # type: ignore[no-untyped-def]
    """``passes`` drain passes through a real Intake, the way the receiver's lifespan wires it."""

    async def scenario() -> list[int]:
        client = aioredis.Redis.from_url(redis_server.url, socket_timeout=5, socket_connect_timeout=1)
        try:
            intake = Intake(Settings(redis_url=redis_server.url), client)
            await intake.start()
            return [await drainer.run_once(intake, client) for _ in range(passes)]
        finally:
            await client.aclose()

    return asyncio.run(scenario())


def queued_jobs(redis_server) -> list[str]:  # type: ignore[no-untyped-def]
    with redis_server.client() as client:
        return [v.decode() for v in client.lrange(redis_keys.rq_queue_key("veo-archiver"), 0, -1)]


def job_of(task_id: str) -> str:
    return redis_keys.job_id("kie", task_id, "succeeded")


def test_an_entry_redis_refuses_on_its_own_is_quarantined_and_the_rest_drain_in_order(  # type: ignore[no-untyped-def]
    tmp_path: Path, redis_server
) -> None:
    """The issue's reproduction: a bulk over ``proto-max-bulk-len`` (lowered to its 1 MiB minimum here) made
    Redis drop the connection at every try, and the entries behind it waited for 10 minutes."""
    with redis_server.client() as client:
        client.config_set("proto-max-bulk-len", str(1024 * 1024))
    spool = spool_at(tmp_path, max_bytes=64 << 20)
    spool.append(encode_entry(event("veo_a"), delivery()))
    big = spool.append(encode_entry(event("veo_big"), delivery(b'{"pad": "' + b"x" * (3 << 19) + b'"}')))
    for task_id in ("veo_b", "veo_c"):
        spool.append(encode_entry(event(task_id), delivery()))
    drainer = SpoolDrainer(spool, policy=RetryPolicy(max_attempts=2, first_delay_s=0.0))
    assert run_drainer(redis_server, spool, drainer, 1) == [3]
    assert queued_jobs(redis_server) == [job_of("veo_a"), job_of("veo_b"), job_of("veo_c")]
    assert [e.name for e in spool.pending()] == [big.name]
    assert spool.attempts()[big.name].count == 1
    assert run_drainer(redis_server, spool, drainer, 1) == [0]
    assert spool.pending() == []
    assert drainer.quarantined == {"queue_unavailable": 1}
    (held,) = survey(spool.directory, 0.0).latest_quarantined
    assert (held.name, held.reason, held.attempts) == (big.name, "queue_unavailable", 2)
    # the cause fixed, an operator puts it back and it goes through like any other
    with redis_server.client() as client:
        client.config_set("proto-max-bulk-len", str(512 * 1024 * 1024))
    assert requeue(spool.directory) == ([big.name], [])
    assert run_drainer(redis_server, spool, drainer, 1) == [1]
    assert queued_jobs(redis_server)[-1] == job_of("veo_big")
    assert survey(spool.directory, 0.0).quarantined == 0 and spool.pending() == []


def test_an_entry_that_decodes_but_cannot_be_submitted_does_not_hold_up_the_others(  # type: ignore[no-untyped-def]
    tmp_path: Path, redis_server, caplog: pytest.LogCaptureFixture
) -> None:
    """The issue's reproduction: a task id with a lone surrogate decodes, then raises UnicodeEncodeError
    while its key is built; it logged a traceback every second and blocked the entries behind it."""
    spool = spool_at(tmp_path)
    spool.append(encode_entry(event("veo_\ud800"), delivery()))
    spool.append(encode_entry(event("veo_after"), delivery()))
    drainer = SpoolDrainer(spool, policy=RetryPolicy(max_attempts=3, first_delay_s=0.0))
    with caplog.at_level(logging.WARNING, logger="receiver"):
        assert run_drainer(redis_server, spool, drainer, 3) == [1, 0, 0]
    assert queued_jobs(redis_server) == [job_of("veo_after")]
    assert spool.pending() == [] and drainer.quarantined == {"UnicodeEncodeError": 1}
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert len(tracebacks) == 1  # the first failure's, not one per try


def test_redis_out_of_memory_quarantines_nothing(tmp_path: Path, redis_server) -> None:  # type: ignore[no-untyped-def]
    """Redis answers PING but refuses every write: the entries wait, none is counted or quarantined."""
    spool = spool_at(tmp_path)
    for task_id in ("veo_oom_1", "veo_oom_2"):
        spool.append(encode_entry(event(task_id), delivery()))
    drainer = SpoolDrainer(spool, policy=RetryPolicy(max_attempts=1, first_delay_s=0.0))
    with redis_server.client() as client:
        client.config_set("maxmemory-policy", "noeviction")
        client.config_set("maxmemory", "1")  # below what is in use: every write is refused with OOM
    try:
        assert run_drainer(redis_server, spool, drainer, 3) == [0, 0, 0]
        assert len(spool.pending()) == 2 and spool.attempts() == {} and drainer.quarantined == {}
    finally:
        with redis_server.client() as client:
            client.config_set("maxmemory", "0")
    assert run_drainer(redis_server, spool, drainer, 1) == [2]
