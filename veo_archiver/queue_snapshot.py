"""The queue as the receiver's pages see it: an async, bounded, never-raising read of Redis for ``/metrics``
(:func:`read_snapshot`) and ``/ops`` (:func:`read_ops`). The CLI's synchronous twin is
:mod:`veo_archiver.queue_view`; both classify dead letters through :mod:`veo_archiver.records.dead_letter` and
decode tracked tasks through :mod:`veo_archiver.records.tracked`, so every consumer tells the same story.

Reads are pipelined (a few round trips, bounded work: at most ``MAX_WORKERS`` worker hashes and the newest
``DEAD_LETTER_SCAN`` failed jobs; older ones are counted under the reason ``not_scanned``; the download
progress of at most ``MAX_WORKERS`` started jobs). When Redis does not answer, the snapshot says so
(``redis_up`` false, ``error``) instead of raising.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import redis
import redis.asyncio as aioredis
from rq.utils import utcparse

from veo_archiver import redis_keys
from veo_archiver.clock import epoch
from veo_archiver.records import dead_letter
from veo_archiver.records.progress import Progress
from veo_archiver.records.tracked import Tracked, decode_all

WORKER_FIELDS = (
    "state",
    "current_job",
    "last_heartbeat",
    "birth",
    "successful_job_count",
    "failed_job_count",
    "hostname",
    "pid",
)
MAX_WORKERS = 500
DEAD_LETTER_SCAN = 200  # a meta hash is ~0.5 KB (up to ~12 KB with 20 attempts)
MAX_LABEL = 64  # reasons that come from Redis are cut to this length
RECENT = 50


@dataclass
class WorkerInfo:
    name: str
    state: str
    current_job: str | None
    last_heartbeat: str | None
    birth: str | None
    successful: int
    failed: int
    hostname: str | None
    pid: str | None


@dataclass
class Snapshot:
    queue: str
    redis_up: bool = False
    error: str | None = None
    queued: int = 0
    registries: dict[str, int] = field(default_factory=dict)
    workers: list[WorkerInfo] = field(default_factory=list)
    oldest_queued_age_s: float | None = None
    dead_letters: dict[str, int] = field(default_factory=dict)
    stats: dict[str, str] = field(default_factory=dict)
    tracked_pending: int = 0
    #: the running jobs' downloads (:mod:`veo_archiver.records.progress`), at most ``MAX_WORKERS``
    downloads: list[Progress] = field(default_factory=list)
    read_seconds: float = 0.0


@dataclass(frozen=True)
class Failure:
    """One failed-registry job as /ops lists it."""

    job_id: str
    provider: str
    task_id: str
    verdict: dead_letter.Verdict
    attempts: int


@dataclass
class OpsData:
    snapshot: Snapshot
    outcomes: list[dict[str, str]] = field(default_factory=list)
    events: list[dict[str, str]] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    tracked: list[Tracked] = field(default_factory=list)
    error: str | None = None


def as_text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def as_int(value: Any) -> int:
    try:
        return int(as_text(value) or 0)
    except ValueError:
        return 0


def _rq_time(value: str | None) -> float | None:
    try:
        return utcparse(value).timestamp() if value else None
    except ValueError:
        return epoch(value)


# ------------------------------------------------------------------------------------------- dead letters


async def read_failures(client: aioredis.Redis, job_ids: Sequence[str]) -> list[Failure]:
    """Classify failed jobs (:func:`veo_archiver.records.dead_letter.classify`): one round trip for their
    hashes, one more for RQ's failure text of those without a verdict. Redis errors propagate."""
    if not job_ids:
        return []
    async with client.pipeline(transaction=False) as pipe:
        for job_id in job_ids:
            pipe.exists(redis_keys.rq_job_key(job_id))
            pipe.hmget(redis_keys.rq_job_key(job_id), ["meta", "ended_at"])
        replies = await pipe.execute()
    rows = []
    for n, job_id in enumerate(job_ids):
        exists, (meta_raw, ended_at) = replies[2 * n], replies[2 * n + 1]
        rows.append((job_id, bool(exists), dead_letter.job_meta(meta_raw), _rq_time(as_text(ended_at))))
    unmarked = [job_id for job_id, exists, meta, _ in rows if exists and not dead_letter.marked(meta)]
    texts: dict[str, str] = {}
    if unmarked:
        async with client.pipeline(transaction=False) as pipe:
            for job_id in unmarked:
                pipe.xrevrange(redis_keys.rq_results_key(job_id), count=1)
            results = await pipe.execute()
        for job_id, entries in zip(unmarked, results, strict=True):
            texts[job_id] = dead_letter.result_exc_text(entries[0][1]) if entries else ""
    return [
        Failure(
            job_id=job_id,
            provider=str(meta.get("provider") or "?"),
            task_id=str(meta.get("task_id") or "?"),
            verdict=dead_letter.classify(meta, exists=exists, exc_text=texts.get(job_id), ended_at=ended),
            attempts=len(dead_letter.attempts_of(meta)),
        )
        for job_id, exists, meta, ended in rows
    ]


# ------------------------------------------------------------------------------------------- downloads


async def read_downloads(client: aioredis.Redis, started: Sequence[Any]) -> list[Progress]:
    """The progress entries of the started registry's jobs (members are RQ's ``<job id>:<execution id>``):
    one round trip. Redis errors propagate."""
    job_ids = list(dict.fromkeys((as_text(member) or "").partition(":")[0] for member in started or []))
    if not job_ids:
        return []
    async with client.pipeline(transaction=False) as pipe:
        for job_id in job_ids:
            pipe.hgetall(redis_keys.progress_key(job_id))
        replies = await pipe.execute()
    found = (Progress.from_fields(job_id, raw) for job_id, raw in zip(job_ids, replies, strict=True))
    return [p for p in found if p is not None]


# ------------------------------------------------------------------------------------------- snapshot


async def read_snapshot(client: aioredis.Redis, queue: str, *, now: float | None = None) -> Snapshot:
    """Everything /metrics and /ops need about the queue; never raises for Redis errors."""
    started = time.perf_counter()
    now = time.time() if now is None else now
    snap = Snapshot(queue=queue)
    queue_key = redis_keys.rq_queue_key(queue)
    registries = list(redis_keys.RQ_REGISTRIES)
    try:
        async with client.pipeline(transaction=False) as pipe:
            pipe.llen(queue_key)
            pipe.lindex(queue_key, 0)
            for name in registries:
                pipe.zcard(redis_keys.rq_registry_key(name, queue))
            pipe.srandmember(redis_keys.rq_workers_key(queue), MAX_WORKERS)
            pipe.zrevrange(redis_keys.rq_registry_key("failed", queue), 0, DEAD_LETTER_SCAN - 1)
            pipe.hgetall(redis_keys.stats_hash())
            pipe.zcard(redis_keys.tracked_zset())
            pipe.zrange(redis_keys.rq_registry_key("started", queue), 0, MAX_WORKERS - 1)
            first = await pipe.execute()
        queued, oldest, *rest = first
        counts, tail = rest[: len(registries)], rest[len(registries) :]
        worker_keys, failed_ids, stats, tracked_count, running = tail
        worker_keys = sorted(as_text(k) or "" for k in worker_keys or [])
        failed_ids = [as_text(j) or "" for j in failed_ids or []]
        oldest_id = as_text(oldest)
        async with client.pipeline(transaction=False) as pipe:
            pipe.hget(redis_keys.rq_job_key(oldest_id or "none"), "enqueued_at")
            for worker_key in worker_keys:
                pipe.hmget(worker_key, list(WORKER_FIELDS))
            second = await pipe.execute()
        failures = await read_failures(client, failed_ids)
        snap.downloads = await read_downloads(client, running)
    except (redis.RedisError, OSError) as exc:
        snap.error = f"{type(exc).__name__}: {exc}"
        snap.read_seconds = time.perf_counter() - started
        return snap
    snap.redis_up = True
    snap.queued = as_int(queued)
    snap.registries = {name: as_int(n) for name, n in zip(registries, counts, strict=True)}
    snap.stats = {as_text(k) or "": as_text(v) or "" for k, v in (stats or {}).items()}
    snap.tracked_pending = as_int(tracked_count)
    enqueued_at = _rq_time(as_text(second[0]))
    if oldest_id and enqueued_at is not None:
        snap.oldest_queued_age_s = max(0.0, now - enqueued_at)
    elif snap.queued:
        snap.oldest_queued_age_s = 0.0
    for worker_key, values in zip(worker_keys, second[1:], strict=True):
        row = dict(zip(WORKER_FIELDS, (as_text(v) for v in values), strict=True))
        if row["last_heartbeat"] is None and row["birth"] is None:
            continue  # the hash expired: a dead worker not yet cleaned from the set
        snap.workers.append(
            WorkerInfo(
                name=redis_keys.rq_worker_name(worker_key),
                state=row["state"] or "?",
                current_job=row["current_job"],
                last_heartbeat=row["last_heartbeat"],
                birth=row["birth"],
                successful=as_int(row["successful_job_count"]),
                failed=as_int(row["failed_job_count"]),
                hostname=row["hostname"],
                pid=row["pid"],
            )
        )
    for failure in failures:
        reason = failure.verdict.reason[:MAX_LABEL]
        snap.dead_letters[reason] = snap.dead_letters.get(reason, 0) + 1
    unscanned = snap.registries["failed"] - len(failed_ids)
    if unscanned > 0:
        snap.dead_letters["not_scanned"] = unscanned
    snap.read_seconds = time.perf_counter() - started
    return snap


# ------------------------------------------------------------------------------------------- ops


def _entries(raw: Any) -> list[dict[str, str]]:
    out = []
    for entry_id, values in raw or []:
        row = {as_text(k) or "": as_text(v) or "" for k, v in values.items()}
        row["_id"] = as_text(entry_id) or ""
        out.append(row)
    return out


async def read_ops(client: aioredis.Redis, queue: str, *, now: float, recent: int = RECENT) -> OpsData:
    """The snapshot plus the latest outcomes, deliveries, dead letters and pending tracked tasks."""
    data = OpsData(snapshot=await read_snapshot(client, queue, now=now))
    if not data.snapshot.redis_up:
        return data
    try:
        async with client.pipeline(transaction=False) as pipe:
            pipe.xrevrange(redis_keys.outcomes_stream(), count=recent)
            pipe.xrevrange(redis_keys.events_stream(), count=recent)
            pipe.zrevrange(redis_keys.rq_registry_key("failed", queue), 0, recent - 1)
            pipe.zrange(redis_keys.tracked_zset(), 0, recent - 1, withscores=True)
            outcomes, events, failed, tracked_raw = await pipe.execute()
        data.failures = await read_failures(client, [as_text(j) or "" for j in failed or []])
    except (redis.RedisError, OSError) as exc:
        data.error = f"{type(exc).__name__}: {exc}"
        return data
    data.outcomes, data.events = _entries(outcomes), _entries(events)
    data.tracked = decode_all(tracked_raw)
    return data
