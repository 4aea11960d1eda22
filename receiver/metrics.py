"""``GET /metrics``: the receiver's own counters plus queue and worker figures read from Redis at scrape time.

Two sources, one exposition:

- :class:`ReceiverMetrics`: counters and a histogram kept *per receiver process*, in a registry the app
  owns (never prometheus_client's global one, so two apps in one process never share counts);
- :class:`Snapshot`: what every worker on every machine wrote to Redis (RQ's queue, registries and worker
  hashes; our ``veo:stats`` counters from :mod:`veo_archiver.records.outcome`; the tracked-task set), read by
  :func:`read_snapshot` in two pipelined round trips with bounded work. The Redis client is async and
  prometheus_client collectors are synchronous, so a scrape awaits the snapshot first and then renders it
  through :class:`SnapshotCollector`. When Redis does not answer, the snapshot is empty and
  ``veo_archiver_redis_up`` is 0: a scrape never fails because Redis is down.

Who may scrape (:func:`refusal`): with ``ADMIN_TOKEN`` set, ``Authorization: Bearer <token>``; without it,
loopback clients only; ``METRICS_PUBLIC=true`` opens it to anyone.
"""

from __future__ import annotations

import hmac
import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import redis
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.process_collector import ProcessCollector
from rq.utils import utcparse
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from veo_archiver import redis_keys
from veo_archiver.records.outcome import DURATION_BUCKETS_S, TIME_LEFT_BUCKETS_S
from veo_archiver.settings import Settings, is_loopback_host

NS = "veo_archiver"
ENQUEUE_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
#: RQ registries, by the name used in the ``registry`` label, and their key prefix
REGISTRIES = {
    "started": "wip",
    "scheduled": "scheduled",
    "failed": "failed",
    "deferred": "deferred",
    "finished": "finished",
}
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
#: bounded work per scrape: worker hashes read, and newest failed jobs whose dead-letter reason is read
#: (older ones are counted under the reason ``not_scanned``)
MAX_WORKERS = 500
DEAD_LETTER_SCAN = 200  # a meta hash is ~0.5 KB (up to ~12 KB with 20 attempts)
MAX_LABEL = 64  # label values that come from Redis are cut to this length


class ReceiverMetrics:
    """Per-process counters of what the receiver answered, in a registry owned by one app."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.received = Counter(f"{NS}_callbacks_received", "Callbacks received (any answer)", ["provider"], registry=r)
        self.accepted = Counter(
            f"{NS}_callbacks_accepted",
            "Terminal callbacks whose archive job was enqueued",
            ["provider"],
            registry=r,
        )
        self.duplicate = Counter(
            f"{NS}_callbacks_duplicate",
            "Callbacks acknowledged as duplicates of an already enqueued job",
            ["provider"],
            registry=r,
        )
        self.recorded = Counter(
            f"{NS}_callbacks_recorded",
            "Non-terminal callbacks recorded without a job",
            ["provider"],
            registry=r,
        )
        self.rejected = Counter(
            f"{NS}_callbacks_rejected",
            "Callbacks refused with a 4xx, by reason",
            ["provider", "reason"],
            registry=r,
        )
        self.unavailable = Counter(
            f"{NS}_callbacks_unavailable",
            "Callbacks answered 503 (Redis could not take the job)",
            ["provider", "reason"],
            registry=r,
        )
        self.errors = Counter(f"{NS}_callbacks_errors", "Callbacks answered 500", ["provider", "reason"], registry=r)
        self.enqueue_seconds = Histogram(
            f"{NS}_enqueue_seconds",
            "Time to record a callback and enqueue its job in Redis",
            buckets=ENQUEUE_BUCKETS_S,
            registry=r,
        )
        ProcessCollector(namespace="", registry=r)

    def outcome(self, provider: str, outcome: str, seconds: float) -> None:
        self.enqueue_seconds.observe(seconds)
        if outcome == "duplicate":
            self.duplicate.labels(provider).inc()
        elif outcome == "recorded":
            self.recorded.labels(provider).inc()
        else:  # accepted (or an operator's replay): a job was enqueued
            self.accepted.labels(provider).inc()


# ------------------------------------------------------------------------------------------- Redis snapshot


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
    read_seconds: float = 0.0


def as_text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _int(value: Any) -> int:
    try:
        return int(as_text(value) or 0)
    except ValueError:
        return 0


def _float(value: Any) -> float:
    try:
        return float(as_text(value) or 0)
    except ValueError:
        return 0.0


def registry_key(registry: str, queue: str) -> str:
    return f"rq:{REGISTRIES[registry]}:{queue}"


def workers_key(queue: str) -> str:
    return f"rq:workers:{queue}"


def job_meta(raw: Any) -> dict[str, Any]:
    """A job hash's ``meta`` field (JSON serializer); ``{}`` when absent or unreadable."""
    try:
        meta = json.loads(raw) if raw else {}
    except (ValueError, UnicodeDecodeError):
        return {}
    return meta if isinstance(meta, dict) else {}


def dead_letter_reason(raw_meta: Any, exists: bool) -> str:
    if not exists:
        return "missing"
    letter = job_meta(raw_meta).get("dead_letter")
    if not isinstance(letter, dict):
        return "unclassified"  # a crash, an abandoned job or a bug: not a failure the job itself decided
    return str(letter.get("reason") or "unclassified")[:MAX_LABEL]


async def read_snapshot(client: aioredis.Redis, queue: str, *, now: float | None = None) -> Snapshot:
    """Everything /metrics and /ops need about the queue, in two pipelines; never raises for Redis errors."""
    started = time.perf_counter()
    now = time.time() if now is None else now
    snap = Snapshot(queue=queue)
    queue_key = redis_keys.rq_queue_key(queue)
    try:
        async with client.pipeline(transaction=False) as pipe:
            pipe.llen(queue_key)
            pipe.lindex(queue_key, 0)
            for name in REGISTRIES:
                pipe.zcard(registry_key(name, queue))
            pipe.srandmember(workers_key(queue), MAX_WORKERS)
            pipe.zrevrange(registry_key("failed", queue), 0, DEAD_LETTER_SCAN - 1)
            pipe.hgetall(redis_keys.stats_hash())
            pipe.zcard(redis_keys.tracked_zset())
            first = await pipe.execute()
        queued, oldest, *rest = first
        counts, (worker_keys, failed_ids, stats, tracked) = rest[: len(REGISTRIES)], rest[len(REGISTRIES) :]
        worker_keys = sorted(as_text(k) or "" for k in worker_keys or [])
        failed_ids = [as_text(j) or "" for j in failed_ids or []]
        oldest_id = as_text(oldest)
        async with client.pipeline(transaction=False) as pipe:
            pipe.hget(redis_keys.rq_job_key(oldest_id or "none"), "enqueued_at")
            for worker_key in worker_keys:
                pipe.hmget(worker_key, list(WORKER_FIELDS))
            for job_id in failed_ids:
                pipe.exists(redis_keys.rq_job_key(job_id))
                pipe.hget(redis_keys.rq_job_key(job_id), "meta")
            second = await pipe.execute()
    except (redis.RedisError, OSError) as exc:
        snap.error = f"{type(exc).__name__}: {exc}"
        snap.read_seconds = time.perf_counter() - started
        return snap
    snap.redis_up = True
    snap.queued = _int(queued)
    snap.registries = {name: _int(n) for name, n in zip(REGISTRIES, counts, strict=True)}
    snap.stats = {as_text(k) or "": as_text(v) or "" for k, v in (stats or {}).items()}
    snap.tracked_pending = _int(tracked)
    enqueued_at = as_text(second[0])
    if oldest_id and enqueued_at:
        try:
            snap.oldest_queued_age_s = max(0.0, now - utcparse(enqueued_at).timestamp())
        except ValueError:
            pass
    elif snap.queued:
        snap.oldest_queued_age_s = 0.0
    position = 1
    for worker_key in worker_keys:
        values = [as_text(v) for v in second[position]]
        position += 1
        row = dict(zip(WORKER_FIELDS, values, strict=True))
        if row["last_heartbeat"] is None and row["birth"] is None:
            continue  # the hash expired: a dead worker not yet cleaned from the set
        snap.workers.append(
            WorkerInfo(
                name=worker_key.removeprefix("rq:worker:"),
                state=row["state"] or "?",
                current_job=row["current_job"],
                last_heartbeat=row["last_heartbeat"],
                birth=row["birth"],
                successful=_int(row["successful_job_count"]),
                failed=_int(row["failed_job_count"]),
                hostname=row["hostname"],
                pid=row["pid"],
            )
        )
    for _job_id in failed_ids:
        exists, meta = second[position], second[position + 1]
        position += 2
        reason = dead_letter_reason(meta, bool(exists))
        snap.dead_letters[reason] = snap.dead_letters.get(reason, 0) + 1
    unscanned = snap.registries["failed"] - len(failed_ids)
    if unscanned > 0:
        snap.dead_letters["not_scanned"] = unscanned
    snap.read_seconds = time.perf_counter() - started
    return snap


# ------------------------------------------------------------------------------------------- exposition


def _bucketed(stats: dict[str, str], prefix: str, bounds: Iterable[float]) -> list[tuple[str, float]]:
    """Cumulative ``(le, count)`` pairs from per-bucket counters ``{prefix}|{bound}`` (``+Inf`` included)."""
    per_bound: dict[float, int] = {float(b): 0 for b in bounds}
    overflow = 0
    for name, value in stats.items():
        head, sep, label = name.partition("|")
        if head != prefix or not sep:
            continue
        if label == "+Inf":
            overflow += _int(value)
            continue
        try:
            bound = float(label)
        except ValueError:
            continue
        per_bound[bound] = per_bound.get(bound, 0) + _int(value)
    out: list[tuple[str, float]] = []
    running = 0
    for upper in sorted(per_bound):
        running += per_bound[upper]
        out.append((repr(float(upper)), float(running)))
    out.append(("+Inf", float(running + overflow)))
    return out


class SnapshotCollector:
    """Renders one :class:`Snapshot` (already read) as metric families."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        snap, q = self.snapshot, self.snapshot.queue
        yield GaugeMetricFamily(f"{NS}_redis_up", "1 when Redis answered this scrape", value=int(snap.redis_up))
        yield GaugeMetricFamily(
            f"{NS}_redis_read_seconds",
            "Time to read the Redis figures for this scrape",
            value=snap.read_seconds,
        )
        if not snap.redis_up:
            return
        depth = GaugeMetricFamily(f"{NS}_queue_depth", "Jobs waiting in the queue", labels=["queue"])
        depth.add_metric([q], snap.queued)
        yield depth
        registries = GaugeMetricFamily(f"{NS}_registry_jobs", "Jobs in each RQ registry", labels=["queue", "registry"])
        for name, count in snap.registries.items():
            registries.add_metric([q, name], count)
        yield registries
        alive = GaugeMetricFamily(f"{NS}_workers_alive", "Workers with a live heartbeat", labels=["queue"])
        alive.add_metric([q], len(snap.workers))
        yield alive
        busy = GaugeMetricFamily(f"{NS}_workers_busy", "Workers running a job", labels=["queue"])
        busy.add_metric([q], sum(1 for w in snap.workers if w.state == "busy"))
        yield busy
        age = GaugeMetricFamily(
            f"{NS}_oldest_queued_job_age_seconds",
            "Age of the oldest job waiting in the queue (0 when empty)",
            labels=["queue"],
        )
        age.add_metric([q], snap.oldest_queued_age_s or 0.0)
        yield age
        letters = GaugeMetricFamily(
            f"{NS}_dead_letters",
            f"Jobs in the failed registry by dead-letter reason (the newest {DEAD_LETTER_SCAN} are read)",
            labels=["queue", "reason"],
        )
        for reason, count in sorted(snap.dead_letters.items()):
            letters.add_metric([q, reason], count)
        yield letters
        tracked = GaugeMetricFamily(f"{NS}_tracked_tasks_pending", "Registered tasks not archived yet")
        tracked.add_metric([], snap.tracked_pending)
        yield tracked
        yield from self._stats()

    def _stats(self) -> Iterator[Metric]:
        stats = self.snapshot.stats
        outcomes = CounterMetricFamily(
            f"{NS}_job_outcomes",
            "Finished jobs by provider, outcome and reason",
            labels=["provider", "outcome", "reason"],
        )
        archived = CounterMetricFamily(f"{NS}_archived_bytes", "Bytes archived", labels=["provider"])
        for name, value in sorted(stats.items()):
            parts = name.split("|")
            if parts[0] == "outcome" and len(parts) == 4:
                outcomes.add_metric([p[:MAX_LABEL] for p in parts[1:]], _int(value))
            elif parts[0] == "bytes" and len(parts) == 2:
                archived.add_metric([parts[1][:MAX_LABEL]], _int(value))
        yield outcomes
        yield archived
        duration = HistogramMetricFamily(f"{NS}_job_duration_seconds", "Archive job duration (archived or dead letter)")
        duration.add_metric([], _bucketed(stats, "duration", DURATION_BUCKETS_S), _float(stats.get("duration_sum")))
        yield duration
        time_left = HistogramMetricFamily(
            f"{NS}_url_time_left_seconds",
            "Time left before the result URL's deadline when its download ended",
        )
        # workers record no sum for this one (workers/outcomes.py); without a sum, no _count/_sum samples
        left_sum = _float(stats.get("time_left_sum")) if "time_left_sum" in stats else None
        time_left.add_metric([], _bucketed(stats, "time_left", TIME_LEFT_BUCKETS_S), left_sum)
        yield time_left


class _Both:
    def __init__(self, *sources: Any) -> None:
        self.sources = sources

    def collect(self) -> Iterator[Metric]:
        for source in self.sources:
            yield from source.collect()


def render(receiver: ReceiverMetrics, snapshot: Snapshot) -> bytes:
    return generate_latest(_Both(receiver.registry, SnapshotCollector(snapshot)))


# ------------------------------------------------------------------------------------------- access


def bearer_matches(authorization: str | None, token: str) -> bool:
    """``Authorization: Bearer <token>``, compared in constant time (also used by the ops page)."""
    scheme, _, given = (authorization or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        return False
    return hmac.compare_digest(given.strip().encode("utf-8", "replace"), token.encode("utf-8", "replace"))


def refusal(settings: Settings, request: Request) -> Response | None:
    """``None`` when this request may read /metrics, else the answer that refuses it."""
    if settings.metrics_public:
        return None
    if settings.admin_token:
        if bearer_matches(request.headers.get("authorization"), settings.admin_token):
            return None
        return PlainTextResponse(
            "metrics need Authorization: Bearer <ADMIN_TOKEN>\n",
            status_code=401,
            headers={"WWW-Authenticate": 'Bearer realm="veo-archiver"'},
        )
    host = request.client.host if request.client else ""
    if is_loopback_host(host):
        return None
    return PlainTextResponse(
        "metrics are served to loopback clients only: set ADMIN_TOKEN (then scrape with a bearer token) "
        "or METRICS_PUBLIC=true\n",
        status_code=403,
    )


async def endpoint(settings: Settings, receiver: ReceiverMetrics, request: Request) -> Response:
    refused = refusal(settings, request)
    if refused is not None:
        return refused
    snapshot = await read_snapshot(request.state.redis, settings.queue_name)
    return Response(
        render(receiver, snapshot),
        headers={"Content-Type": CONTENT_TYPE_PLAIN_0_0_4, "Cache-Control": "no-store"},
    )


def route(settings: Settings, receiver: ReceiverMetrics) -> Route:
    async def metrics(request: Request) -> Response:
        return await endpoint(settings, receiver, request)

    return Route("/metrics", metrics, methods=["GET"])
