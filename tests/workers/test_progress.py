"""Download progress (``veo:progress:<job_id>``): the writer's throttle and arithmetic on a fake clock and a
real redis-server, and the job's writes while a real download streams (in-process, as in test_job_logic.py)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import replace

import pytest
import redis

from tests.servers import RedisServer
from tests.workers.test_job_logic import NOW, World, succeeded
from tests.workers.test_outcomes import closed_port_client
from veo_archiver import redis_keys
from veo_archiver.clock import iso
from veo_archiver.records import progress
from veo_archiver.records.progress import Progress
from veo_archiver.sim.files import FileHost
from veo_archiver.sim.media import make_mp4
from workers.progress import ProgressWriter
from workers.storage_memory import MemoryArchive

KEY = redis_keys.progress_key("job-1")


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def rds(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis_server.client()
    yield client
    client.close()


@pytest.fixture
def host() -> Iterator[FileHost]:
    with FileHost() as h:
        yield h


def writer(connection: redis.Redis | None, clock: Clock) -> ProgressWriter:
    return ProgressWriter(connection, "job-1", provider="kie", task_id="t1", file=1, files=2, clock=clock)


def stored(rds: redis.Redis) -> Progress | None:
    return Progress.from_fields("job-1", rds.hgetall(KEY))


def test_a_hundred_chunks_in_one_second_write_once_and_two_seconds_later_again(rds: redis.Redis) -> None:
    clock = Clock()
    w = writer(rds, clock)
    written = []
    for n in range(1, 101):  # 100 chunks of 10 kB over one second
        clock.now = NOW + n / 100
        written.append(w.update(n * 10_000, 4_000_000))
    assert written.count(True) == 1 and written[0]
    first = stored(rds)
    assert first is not None and (first.bytes, first.total) == (10_000, 4_000_000)
    assert 0 < rds.ttl(KEY) <= progress.TTL_S

    clock.now = NOW + 2.0  # not yet 2 s since the first write (at NOW + 0.01)
    assert not w.update(1_500_000, 4_000_000)
    clock.now = NOW + 2.01
    assert w.update(2_010_000, 4_000_000)
    second = stored(rds)
    assert second is not None
    # 2,000,000 bytes since the last write, 2 s ago: 1 MB/s, and 1,990,000 bytes left
    assert w.last is not None and (w.last.rate, w.last.eta_s) == (pytest.approx(1e6), pytest.approx(1.99))
    assert (second.bytes, second.rate, second.eta_s) == (2_010_000, 1_000_000.0, 2.0)  # stored to 0.1
    assert (second.file, second.files, second.provider, second.task_id) == (1, 2, "kie", "t1")
    assert (second.started_at, second.updated_at) == (iso(NOW), iso(NOW + 2.01))
    assert second.describe() == "1.9 MiB of 3.8 MiB, 1.0 MB/s, ETA 2 s"
    assert w.writes == 2

    w.close()
    assert not rds.exists(KEY)


def test_an_unknown_total_has_no_eta_and_a_stalled_download_no_rate(rds: redis.Redis) -> None:
    clock = Clock()
    w = writer(rds, clock)
    w.update(0, None)
    clock.now += 5
    w.update(0, None)
    entry = stored(rds)
    assert entry is not None and (entry.total, entry.rate, entry.eta_s) == (None, 0.0, None)
    assert entry.describe() == "0 B (size unknown), 0 B/s"
    assert progress.eta(100, 1000, 0.0) is None and progress.eta(100, 1000, 300.0) == 3.0


def test_a_clock_that_steps_back_opens_a_new_window_instead_of_silencing_the_writer() -> None:
    clock = Clock()
    w = writer(None, clock)  # no connection: counts, writes nothing
    assert w.update(1, 10)
    clock.now -= 30
    assert w.update(2, 10) and w.last is not None and w.last.rate == 0.0


def test_the_text_people_read() -> None:
    gib = 1024**3
    p = Progress("j", "kie", "t", 0, 1, int(3.1 * gib), 4 * gib, 42e6, 21.4, None, None)
    assert p.describe() == "3.1 GiB of 4.0 GiB, 42 MB/s, ETA 21 s"
    assert [progress.eta_text(s) for s in (None, 119, 185, 9000)] == ["?", "119 s", "3 min 05 s", "2.5 h"]
    assert Progress.from_fields("j", p.fields()) == replace(p, eta_s=21.4, rate=42e6)
    assert Progress.from_fields("j", {}) is None


def test_a_redis_error_never_reaches_the_download() -> None:
    client = closed_port_client()
    w = writer(client, Clock())
    chunks = list(w.track([b"a", b"b"], type("S", (), {"size": 2, "declared_length": None})()))
    assert chunks == [b"a", b"b"] and w.writes == 1
    w.close()
    client.close()


class Watching(MemoryArchive):
    """An archive that, after each chunk it takes, reads the job's progress entry from Redis."""

    def __init__(self, rds: redis.Redis) -> None:
        super().__init__()
        self.rds = rds
        self.seen: list[int | None] = []

    def put_stream(self, key: str, chunks: Iterable[bytes], content_type: str | None = None) -> None:
        def watched() -> Iterator[bytes]:
            for chunk in chunks:
                yield chunk
                entry = Progress.from_fields("job-1", self.rds.hgetall(KEY))
                self.seen.append(None if entry is None else entry.bytes)

        super().put_stream(key, watched(), content_type)


def test_a_running_download_shows_growing_bytes_and_leaves_no_entry(host: FileHost, rds: redis.Redis) -> None:
    video = make_mp4(2 * 1024 * 1024, seed=5)
    w = World(host, confirm=False)
    w.settings = replace(w.settings, download_chunk_bytes=64 * 1024)
    w.ctx.fetch_policy = replace(w.ctx.fetch_policy, chunk_bytes=64 * 1024)
    watching = Watching(rds)
    w.ctx.archive = w.archive = watching
    ticks = iter(range(10_000))
    w.ctx.clock = lambda: NOW + next(ticks)  # every reading of the clock is one second later
    w.job.connection = rds  # type: ignore[assignment]
    result = w.run(succeeded(host.add("/v/big.mp4", video)))
    assert isinstance(result, dict) and result["outcome"] == "archived"
    seen = [n for n in watching.seen if n is not None]
    assert None not in watching.seen  # the entry is there from the first chunk to the last
    # growing, and throttled: the clock moves 1 s per reading, so every other chunk writes
    assert len(set(seen)) > 5 and seen == sorted(seen) and len(set(seen)) < len(seen) and seen[-1] <= len(video)
    assert not rds.exists(KEY)  # gone once the file is archived
