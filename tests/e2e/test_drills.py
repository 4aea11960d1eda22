"""Fault drills with real processes: the reliability promises, proved by really killing things.

1. Redis goes away between the 200 and the work (graceful restart with ``appendfsync everysec``; SIGKILL
   with ``appendfsync always``): every acknowledged callback is still a queued job afterwards, callbacks
   during the outage get 503 + Retry-After (never 200, never 500), the receiver recovers by itself, and a
   worker started afterwards archives every video exactly once. The receiver runs with ``SPOOL_DIR=off``
   here: this drill is about the answer without a spool (tests/e2e/test_redis_outage_spool.py is the
   same outage with the spool on, where every callback is answered 200 ``spooled``).
2. S3 (SeaweedFS) is SIGKILLed for 30 s while two workers run: jobs fail transiently, are rescheduled,
   and every video ends up archived exactly once with the right sha256.
3. 1,000 concurrent deliveries of one signed callback: one job, one "accepted" and 999 "duplicate"
   events, one download, one archive.

Each drill prints one ``DRILL ...`` line with what it measured (run with ``-s`` or ``-rP`` to see it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from rq.job import Job
from rq.serializers import JSONSerializer

from tests.drills_support import QUEUE, Answer, DrillStack, Video, callback, host_videos, post
from tests.procs import wait_for
from tests.servers import RedisServer
from veo_archiver import redis_keys
from veo_archiver.sim.files import FileHost

pytestmark = pytest.mark.slow

ACKED = 50  # callbacks acknowledged before Redis goes away
DURING = 10  # distinct callbacks a provider tries to deliver while Redis is away (retried afterwards)
OUTAGE_S = 3.0  # how long Redis stays away (the drill keeps delivering and probing /readyz meanwhile)


@pytest.fixture
def files() -> Iterator[FileHost]:
    with FileHost() as host:
        yield host


def report(name: str, **numbers: Any) -> None:
    print(f"DRILL {name}: " + json.dumps(numbers, sort_keys=True))


def job_ids(videos: list[Video]) -> set[str]:
    return {redis_keys.job_id("kie", v.task_id, "succeeded") for v in videos}


def wait_idle(stack: DrillStack, ids: set[str], timeout: float) -> None:
    """Every job finished, none queued, running or scheduled: nothing more can be archived after this."""
    rds = stack.rds

    def idle() -> bool:
        finished = {m.decode() for m in rds.zrange(f"rq:finished:{QUEUE}", 0, -1)}
        return (
            ids <= finished
            and rds.llen(redis_keys.rq_queue_key(QUEUE)) == 0
            and rds.zcard(f"rq:wip:{QUEUE}") == 0
            and rds.zcard(f"rq:scheduled:{QUEUE}") == 0
        )

    wait_for(idle, timeout, interval=0.5, what=f"an idle queue with {len(ids)} finished jobs\n{stack.logs()}")


# ---------------------------------------------------------------------------------------------------------
# 1. Redis restart between the acknowledgement and the work


@pytest.mark.parametrize("crash", ["graceful-restart-everysec", "sigkill-fsync-always"])
def test_redis_restart_between_ack_and_work_loses_nothing(
    crash: str, seaweed: Any, s3_bucket: str, files: FileHost, tmp_path: Path
) -> None:
    fsync = "everysec" if crash.startswith("graceful") else "always"
    server = RedisServer(tmp_path / "redis", appendonly=True, appendfsync=fsync)
    server.start()
    # without the spool: the outage is answered 503 (the spooled variant: test_redis_outage_spool.py)
    stack = DrillStack(tmp_path, server.url, seaweed, s3_bucket, files, extra_env={"SPOOL_DIR": "off"})
    try:
        stack.start_receiver()
        assert stack.receiver is not None
        receiver_pid = stack.receiver.pid
        videos = host_videos(files, f"redis-{fsync}", ACKED + DURING)
        acked, during = videos[:ACKED], videos[ACKED:]
        with httpx.Client(timeout=30) as client:
            assert client.get(stack.base + "/readyz").status_code == 200
            first = [post(client, stack.base, v) for v in acked]
            assert [(a.status, a.outcome) for a in first] == [(200, "accepted")] * ACKED, first

            # Redis goes away right after the last 200, before any worker has seen a job
            if fsync == "everysec":
                server.stop()  # graceful: SHUTDOWN flushes and fsyncs the AOF
            else:
                server.kill()  # SIGKILL: no shutdown work at all
            down_at = time.monotonic()

            # the outage: a provider keeps delivering; the receiver must refuse with 503 + Retry-After
            outage: list[Answer] = []
            readyz: Counter[int] = Counter()
            n = 0
            while time.monotonic() - down_at < OUTAGE_S:
                outage.append(post(client, stack.base, during[n % DURING]))
                readyz[client.get(stack.base + "/readyz").status_code] += 1
                n += 1
            statuses = Counter(a.status for a in outage)
            assert statuses == Counter({503: len(outage)}), statuses  # never 200, never 500, never no answer
            assert all(a.retry_after and a.retry_after.isdigit() for a in outage)
            assert readyz == Counter({503: n}), readyz

            restart_at = time.monotonic()
            server.start()  # same port, same --dir: the AOF is replayed; returns once it answers PING
            up_at = time.monotonic()
            # the receiver was not restarted: it reconnects by itself; the provider retries its 503s
            ready = wait_for(
                lambda: client.get(stack.base + "/readyz").status_code == 200,
                30,
                interval=0.05,
                what="/readyz 200 after Redis came back",
            )
            ready_s = time.monotonic() - up_at
            retried = [post(client, stack.base, v) for v in during]
            first_200_s = time.monotonic() - up_at
            assert ready and [(a.status, a.outcome) for a in retried] == [(200, "accepted")] * DURING, retried
            # the dedupe state survived the restart too: redelivering an acknowledged callback is a duplicate
            again = post(client, stack.base, acked[0])
            assert (again.status, again.outcome) == (200, "duplicate"), again
        assert stack.receiver.alive() and stack.receiver.pid == receiver_pid

        # Every acknowledged callback is a queued job after the restart. Honest limits: a graceful restart
        # loses nothing with any fsync policy (SHUTDOWN fsyncs the AOF). With `appendfsync everysec`, a crash
        # *can* lose acknowledged enqueues: up to ~1 s of them on a host crash or power loss (the page cache
        # goes too), and up to ~2 s even on a plain process SIGKILL when a slow fsync made Redis postpone its
        # AOF write(). That is why the README recommends `appendfsync always` on Redis < 7.2, or Redis >= 7.2
        # where the receiver waits for WAITAOF before the 200; the SIGKILL drill runs with `always`.
        expected = job_ids(acked) | job_ids(during)
        assert stack.job_keys() == {redis_keys.rq_job_key(i) for i in expected}
        queued = stack.queued_ids()
        assert len(queued) == len(expected) and set(queued) == expected  # each pushed once, none lost
        for video in acked[:3]:
            job = Job.fetch(
                redis_keys.job_id("kie", video.task_id, "succeeded"),
                connection=stack.rds,
                serializer=JSONSerializer,
            )
            assert job.get_status() == "queued" and job.kwargs["envelope"]["event"]["result_urls"] == [video.url]

        # only now does a worker run: every video archived exactly once
        started = time.monotonic()
        stack.start_worker(count=2)
        archive_s = stack.wait_archived(videos, timeout=240)
        wait_idle(stack, expected, timeout=60)
        stats = stack.assert_archived_exactly_once(videos)
        assert all(files.completed[v.path] == 1 for v in videos), {v.path: files.completed[v.path] for v in videos}
        report(
            f"redis/{crash}",
            acked_before_crash=ACKED,
            jobs_after_restart=len(expected),
            lost=len(expected) - len(queued),
            outage_s=round(up_at - down_at, 2),
            redis_start_to_ping_s=round(up_at - restart_at, 3),
            outage_callbacks=len(outage),
            outage_503=statuses[503],
            outage_readyz_503=readyz[503],
            outage_answer_ms_max=round(max(a.seconds for a in outage) * 1000, 1),
            readyz_ok_after_redis_up_s=round(ready_s, 3),
            retried_503s_all_200_within_s=round(first_200_s, 3),
            archived=stats["archived"],
            downloads=stats["downloads"],
            archive_all_s=round(archive_s, 1),
            worker_total_s=round(time.monotonic() - started, 1),
        )
    finally:
        stack.close()
        server.stop()


# ---------------------------------------------------------------------------------------------------------
# 2. S3 down for 30 s while jobs run


S3_DOWN_S = 30.0
S3_CALLBACKS = 10


def test_s3_down_for_30_seconds_while_jobs_run(
    redis_server: RedisServer, seaweed: Any, s3_bucket: str, files: FileHost, tmp_path: Path
) -> None:
    # RETRY_BASE/RETRY_CAP make transient retries come every 1-5 s. DOWNLOAD_ATTEMPTS is raised from its
    # default 12: with a 5 s cap, 12 attempts span only ~40-60 s (each failed S3 call also spends ~0.5 s in
    # obstore's own STORAGE_RETRIES=3), about this outage plus SeaweedFS's ~15 s start-up. With the
    # production defaults (base 15 s, cap 1 h) 12 attempts span hours. Before STORAGE_RETRIES, obstore's
    # default (10 retries, up to 15 s apart) held one HEAD for 3-50 s, and 5 jobs per worker did not all fail
    # once within the outage (CI, 2026-11-27).
    stack = DrillStack(
        tmp_path,
        redis_server.url,
        seaweed,
        s3_bucket,
        files,
        extra_env={"RETRY_BASE": "1", "RETRY_CAP": "5", "DOWNLOAD_ATTEMPTS": "40"},
    )
    videos = host_videos(files, "s3down", S3_CALLBACKS, size=256 * 1024)
    try:
        stack.start_receiver()
        stack.start_worker()
        stack.start_worker()
        wait_for(lambda: stack.rds.scard("rq:workers") >= 2, 60, what=f"two workers\n{stack.logs()}")

        seaweed.kill()
        down_at = time.monotonic()
        with httpx.Client(timeout=30) as client:
            answers = [post(client, stack.base, v) for v in videos]  # the receiver never needs S3
        assert [(a.status, a.outcome) for a in answers] == [(200, "accepted")] * S3_CALLBACKS, answers
        ids = job_ids(videos)

        def failed_attempts() -> dict[str, list[dict[str, Any]]]:
            out = {}
            for job_id in ids:
                with contextlib.suppress(Exception):
                    out[job_id] = Job.fetch(job_id, connection=stack.rds, serializer=JSONSerializer).meta.get(
                        "attempts", []
                    )
            return out

        # every job has already failed at least once while S3 is down (and is waiting for its retry)
        wait_for(
            lambda: all(failed_attempts().get(i) for i in ids),
            S3_DOWN_S,
            interval=0.5,
            what=f"a failed attempt for every job\n{stack.logs()}",
        )
        first_round_s = time.monotonic() - down_at
        time.sleep(max(0.0, S3_DOWN_S - (time.monotonic() - down_at)))
        assert not any(stack.outcomes()), stack.outcomes()  # nothing "archived" while S3 was down
        seaweed.start()
        up_at, up_wall = time.monotonic(), time.time()
        archive_s = stack.wait_archived(videos, timeout=240)
        wait_idle(stack, ids, timeout=60)
        stats = stack.assert_archived_exactly_once(videos)
        attempts = failed_attempts()
    finally:
        stack.close()
        if not seaweed.running:  # the session's SeaweedFS must outlive this drill
            seaweed.start()
    reasons = Counter(a["reason"] for atts in attempts.values() for a in atts)
    assert set(reasons) <= {"storage_unavailable"}, reasons
    per_job = [len(a) for a in attempts.values()]
    after_up = [
        a
        for atts in attempts.values()
        for a in atts
        if datetime.fromisoformat(a["at"].replace("Z", "+00:00")).timestamp() > up_wall
    ]
    report(
        "s3-down-30s",
        callbacks=S3_CALLBACKS,
        s3_down_s=round(up_at - down_at, 1),
        every_job_failed_once_within_s=round(first_round_s, 1),
        failed_attempts_total=sum(per_job),
        failed_attempts_per_job_min_max=[min(per_job), max(per_job)],
        reasons=dict(reasons),
        failed_after_s3_ready=[(a["retry_in_s"], a["error"][:160]) for a in after_up],
        archived=stats["archived"],
        downloads=stats["downloads"],
        all_archived_after_s3_ready_s=round(archive_s, 1),
    )


# ---------------------------------------------------------------------------------------------------------
# 3. A thousand concurrent deliveries of one callback


STORM = 1000
CONNECTIONS = 64
# 64 connections in all, spread over 16 AsyncClients of 4: httpcore 1.0.9's async pool slows down sharply with
# many connections in one pool (measured here: one 64-connection client ~100 req/s, 16 x 4 ~480 req/s, while
# the receiver alone answers ~3,600 req/s on 64 raw keep-alive sockets), and a slow client would turn the
# "storm" into a trickle the receiver never sees concurrently.
CLIENTS = 16


async def _storm(url: str, body: bytes, headers: dict[str, str]) -> list[dict[str, Any]]:
    per_client = CONNECTIONS // CLIENTS
    limits = httpx.Limits(max_connections=per_client, max_keepalive_connections=per_client)
    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(30, pool=120)))
            for _ in range(CLIENTS)
        ]

        in_flight = asyncio.Semaphore(CONNECTIONS)  # latency = time on a connection, not queueing for one

        async def deliver(n: int) -> dict[str, Any]:
            client = clients[n % CLIENTS]
            tries: list[int] = []
            latencies: list[float] = []
            for _ in range(20):  # like a provider: retry a 503 or a dropped connection, bounded
                try:
                    async with in_flight:
                        started = time.monotonic()
                        response = await client.post(url, content=body, headers=headers)
                except httpx.HTTPError:
                    tries.append(0)
                    await asyncio.sleep(0.5)
                    continue
                latencies.append(time.monotonic() - started)
                tries.append(response.status_code)
                if response.status_code == 503:
                    await asyncio.sleep(min(1.0, float(response.headers.get("retry-after", "1"))))
                    continue
                return {
                    "tries": tries,
                    "outcome": response.headers.get("x-archiver-outcome"),
                    "latency": latencies,
                }
            return {"tries": tries, "outcome": None, "latency": latencies}

        return await asyncio.gather(*(deliver(n) for n in range(STORM)))


def test_a_thousand_concurrent_deliveries_of_one_callback_make_one_job_and_one_archive(
    redis_server: RedisServer, seaweed: Any, s3_bucket: str, files: FileHost, tmp_path: Path
) -> None:
    stack = DrillStack(tmp_path, redis_server.url, seaweed, s3_bucket, files)
    (video,) = host_videos(files, "storm", 1, size=512 * 1024)
    job_id = redis_keys.job_id("kie", video.task_id, "succeeded")
    try:
        stack.start_receiver()
        body, headers = callback(video)  # one delivery, sent 1,000 times at once (same signature, same body)
        started = time.monotonic()
        results = asyncio.run(_storm(stack.base + "/callbacks/kie", body, headers))
        storm_s = time.monotonic() - started

        finals = Counter(r["tries"][-1] for r in results)
        retried = [r for r in results if len(r["tries"]) > 1]
        assert finals == Counter({200: STORM}), (finals, retried[:5])
        assert not any(500 <= s < 600 and s != 503 for r in results for s in r["tries"])
        outcomes = Counter(r["outcome"] for r in results)
        assert outcomes == Counter({"accepted": 1, "duplicate": STORM - 1}), outcomes

        # exactly one RQ job, pushed once
        assert stack.job_keys() == {redis_keys.rq_job_key(job_id)}
        assert stack.queued_ids() == [job_id]
        events = Counter(e["outcome"] for e in stack.events() if e["task_id"] == video.task_id)
        attempts = sum(len(r["tries"]) for r in results)
        reached_intake = sum(events.values())
        assert events["accepted"] == 1 and set(events) <= {"accepted", "duplicate"}, events
        # every 200 is one event; a 503 may or may not have reached Redis
        assert STORM <= reached_intake <= attempts, (events, attempts)
        if attempts == STORM:
            assert events == Counter({"accepted": 1, "duplicate": STORM - 1}), events

        stack.start_worker()
        archive_s = stack.wait_archived([video], timeout=120)
        wait_idle(stack, {job_id}, timeout=60)
        stats = stack.assert_archived_exactly_once([video])
        assert files.hits[video.path] == 1 and files.completed[video.path] == 1  # served once
    finally:
        stack.close()
    latencies = sorted(x for r in results for x in r["latency"])
    report(
        "storm-1000",
        deliveries=STORM,
        connections=CONNECTIONS,
        storm_s=round(storm_s, 2),
        per_s=round(STORM / storm_s),
        latency_ms_p50=round(statistics.median(latencies) * 1000, 1),
        latency_ms_p99=round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 1),
        retried_deliveries=len(retried),
        non_200_answers=dict(Counter(s for r in results for s in r["tries"] if s != 200)),
        events=dict(events),
        rq_jobs=1,
        archived=stats["archived"],
        file_host_hits=files.hits[video.path],
        archive_s=round(archive_s, 1),
    )
