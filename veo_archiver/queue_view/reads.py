"""The snapshot every reader shares, and the ``/ops`` page's lists, as plans (:mod:`.plan`) over RQ's keys
and ours: :func:`read_snapshot` and :func:`read_ops` for the receiver (async, never raising for Redis
errors), :func:`snapshot` for the command line (sync).

Reads are pipelined (a few round trips) and bounded: at most ``MAX_WORKERS`` worker hashes, the newest
``DEAD_LETTER_SCAN`` failed jobs (older ones are counted under the reason ``not_scanned``; the command line
passes ``scan=None`` to classify them all) and the download progress of at most ``MAX_WORKERS`` started jobs.
Dead letters are classified by :mod:`veo_archiver.records.dead_letter`, tracked tasks decoded by
:mod:`veo_archiver.records.tracked`, so every consumer tells the same story.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import redis
import redis.asyncio as aioredis
from rq.utils import utcparse

from veo_archiver import redis_keys
from veo_archiver.clock import epoch, iso
from veo_archiver.queue_view.activity import actions_plan, rates_plan, refusals_plan
from veo_archiver.queue_view.model import Failure, OpsData, Snapshot, WaitingJob, WorkerInfo
from veo_archiver.queue_view.plan import Plan, command, run, run_async
from veo_archiver.records import dead_letter
from veo_archiver.records.progress import Progress
from veo_archiver.records.tracked import decode_all
from veo_archiver.text import optional_text, text

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
#: failed jobs classified per round trip when the scan is unbounded
BATCH = 500


def as_int(value: Any) -> int:
    try:
        return int(optional_text(value) or 0)
    except ValueError:
        return 0


def rq_time(value: str | None) -> float | None:
    """Epoch seconds of a time RQ wrote (``utcformat``), or of one of ours (ISO-8601)."""
    try:
        return utcparse(value).timestamp() if value else None
    except ValueError:
        return epoch(value)


def _failure_text(entries: Any) -> str:
    return dead_letter.result_exc_text(entries[0][1]) if entries else ""


# ------------------------------------------------------------------------------------------- plans


def failures_plan(job_ids: Sequence[str]) -> Plan[list[Failure]]:
    """Classify failed jobs: one round trip for their hashes, one more for RQ's failure text of those
    without a verdict of their own."""
    if not job_ids:
        return []
    replies = yield [
        cmd
        for job_id in job_ids
        for cmd in (
            command("exists", redis_keys.rq_job_key(job_id)),
            command("hmget", redis_keys.rq_job_key(job_id), ["meta", "ended_at"]),
        )
    ]
    rows = []
    for n, job_id in enumerate(job_ids):
        exists, (meta_raw, ended_at) = replies[2 * n], replies[2 * n + 1]
        rows.append((job_id, bool(exists), dead_letter.job_meta(meta_raw), rq_time(optional_text(ended_at))))
    unmarked = [job_id for job_id, exists, meta, _ in rows if exists and not dead_letter.marked(meta)]
    texts: dict[str, str] = {}
    if unmarked:
        results = yield [command("xrevrange", redis_keys.rq_results_key(job_id), count=1) for job_id in unmarked]
        texts = {job_id: _failure_text(entries) for job_id, entries in zip(unmarked, results, strict=True)}
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


def downloads_plan(started: Sequence[Any]) -> Plan[list[Progress]]:
    """The progress entries of the started registry's jobs (members are RQ's ``<job id>:<execution id>``)."""
    job_ids = list(dict.fromkeys(text(member).partition(":")[0] for member in started or []))
    if not job_ids:
        return []
    replies = yield [command("hgetall", redis_keys.progress_key(job_id)) for job_id in job_ids]
    found = (Progress.from_fields(job_id, raw) for job_id, raw in zip(job_ids, replies, strict=True))
    return [p for p in found if p is not None]


def worker_info(worker_key: str, values: Sequence[Any], now: float, execution: Any = None) -> WorkerInfo | None:
    """One worker from its hash's :data:`WORKER_FIELDS` and, under RQ 3 (no ``current_job`` field), one member
    of its executions set; None when the hash expired (a dead worker not yet cleaned from the queue's set)."""
    row = dict(zip(WORKER_FIELDS, (optional_text(v) for v in values), strict=True))
    running = optional_text(execution)
    if row["last_heartbeat"] is None and row["birth"] is None:
        return None
    beat = rq_time(row["last_heartbeat"])
    return WorkerInfo(
        name=redis_keys.rq_worker_name(worker_key),
        state=row["state"] or "?",
        current_job=row["current_job"] or (running.partition(":")[0] if running else None),
        last_heartbeat=iso(beat),
        heartbeat_age_s=None if beat is None else round(now - beat, 1),
        birth=iso(rq_time(row["birth"])),
        successful=as_int(row["successful_job_count"]),
        failed=as_int(row["failed_job_count"]),
        hostname=row["hostname"],
        pid=row["pid"],
    )


def snapshot_plan(queue: str, now: float, *, scan: int | None = DEAD_LETTER_SCAN) -> Plan[Snapshot]:
    """Everything the three readers share about the queue; ``scan``: how many of the newest failed jobs are
    classified (None: all of them)."""
    snap = Snapshot(queue=queue, redis_up=True)
    queue_key = redis_keys.rq_queue_key(queue)
    registries = list(redis_keys.RQ_REGISTRIES)
    failed_key = redis_keys.rq_registry_key("failed", queue)
    first = yield [
        command("llen", queue_key),
        command("lindex", queue_key, 0),
        *(command("zcard", redis_keys.rq_registry_key(name, queue)) for name in registries),
        command("srandmember", redis_keys.rq_workers_key(queue), MAX_WORKERS),
        command("zrevrange", failed_key, 0, -1 if scan is None else scan - 1),
        command("hgetall", redis_keys.stats_hash()),
        command("zcard", redis_keys.tracked_zset()),
        command("zrange", redis_keys.rq_registry_key("started", queue), 0, MAX_WORKERS - 1),
    ]
    queued, oldest, *rest = first
    counts, (worker_keys, failed_ids, stats, tracked_count, running) = rest[: len(registries)], rest[len(registries) :]
    worker_keys = sorted(text(k) for k in worker_keys or [])
    failed_ids = [text(j) for j in failed_ids or []]
    oldest_id = optional_text(oldest)
    second = yield [
        command("hget", redis_keys.rq_job_key(oldest_id or "none"), "enqueued_at"),
        *(command("hmget", key, list(WORKER_FIELDS)) for key in worker_keys),
        *(command("srandmember", redis_keys.rq_worker_executions_key(key)) for key in worker_keys),
    ]
    failures: list[Failure] = []
    for start in range(0, len(failed_ids), BATCH):
        failures += yield from failures_plan(failed_ids[start : start + BATCH])
    snap.downloads = yield from downloads_plan(running)
    snap.refusals = yield from refusals_plan(now)

    snap.queued = as_int(queued)
    snap.registries = {name: as_int(n) for name, n in zip(registries, counts, strict=True)}
    snap.stats = {text(k): text(v) for k, v in (stats or {}).items()}
    snap.tracked_pending = as_int(tracked_count)
    enqueued_at = rq_time(optional_text(second[0]))
    if oldest_id is not None:
        age = None if enqueued_at is None else round(now - enqueued_at, 1)
        snap.oldest_waiting = WaitingJob(job_id=oldest_id, enqueued_at=iso(enqueued_at), age_s=age)
    if oldest_id and enqueued_at is not None:
        snap.oldest_queued_age_s = max(0.0, now - enqueued_at)
    elif snap.queued:
        snap.oldest_queued_age_s = 0.0
    hashes, executions = second[1 : 1 + len(worker_keys)], second[1 + len(worker_keys) :]
    found = (
        worker_info(key, values, now, execution)
        for key, values, execution in zip(worker_keys, hashes, executions, strict=True)
    )
    snap.workers = [w for w in found if w is not None]
    for failure in failures:
        reason = failure.verdict.reason[:MAX_LABEL]
        snap.dead_letters[reason] = snap.dead_letters.get(reason, 0) + 1
    unscanned = snap.registries["failed"] - len(failed_ids)
    if unscanned > 0:
        snap.dead_letters["not_scanned"] = unscanned
    return snap


def _entries(raw: Any) -> list[dict[str, str]]:
    out = []
    for entry_id, values in raw or []:
        row = {text(k): text(v) for k, v in values.items()}
        row["_id"] = text(entry_id)
        out.append(row)
    return out


def ops_lists_plan(data: OpsData, recent: int, now: float) -> Plan[OpsData]:
    """The page's recent outcomes, deliveries, dead letters, pending tracked tasks, rates over the last hour
    and operator actions, into ``data``."""
    queue = data.snapshot.queue
    outcomes, events, failed, tracked_raw = yield [
        command("xrevrange", redis_keys.outcomes_stream(), count=recent),
        command("xrevrange", redis_keys.events_stream(), count=recent),
        command("zrevrange", redis_keys.rq_registry_key("failed", queue), 0, recent - 1),
        command("zrange", redis_keys.tracked_zset(), 0, recent - 1, withscores=True),
    ]
    data.failures = yield from failures_plan([text(j) for j in failed or []])
    data.outcomes, data.events = _entries(outcomes), _entries(events)
    data.tracked = decode_all(tracked_raw)
    data.rates = yield from rates_plan(now, data.snapshot.refusals.per_minute)
    data.actions = yield from actions_plan()
    return data


# ------------------------------------------------------------------------------------------- entry points


def _unreachable(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"


async def read_snapshot(client: aioredis.Redis, queue: str, *, now: float | None = None) -> Snapshot:
    """Everything /metrics and /ops need about the queue; never raises for Redis errors."""
    started = time.perf_counter()
    try:
        snap = await run_async(client, snapshot_plan(queue, time.time() if now is None else now))
    except (redis.RedisError, OSError) as exc:
        snap = Snapshot(queue=queue, error=_unreachable(exc))
    snap.read_seconds = time.perf_counter() - started
    return snap


async def read_ops(client: aioredis.Redis, queue: str, *, now: float, recent: int = RECENT) -> OpsData:
    """The snapshot plus the latest outcomes, deliveries, dead letters, pending tracked tasks, rates and
    operator actions."""
    data = OpsData(snapshot=await read_snapshot(client, queue, now=now))
    if not data.snapshot.redis_up:
        return data
    try:
        return await run_async(client, ops_lists_plan(data, recent, now))
    except (redis.RedisError, OSError) as exc:
        data.error = _unreachable(exc)
        return data


def snapshot(connection: redis.Redis, queue: str, *, now: float, scan: int | None = DEAD_LETTER_SCAN) -> Snapshot:
    """The same snapshot with the synchronous client; Redis errors propagate."""
    started = time.perf_counter()
    snap = run(connection, snapshot_plan(queue, now, scan=scan))
    snap.read_seconds = time.perf_counter() - started
    return snap
