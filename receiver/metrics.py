"""``GET /metrics``: the receiver's own counters plus queue and worker figures read from Redis at scrape time.

Two sources, one exposition:

- :class:`ReceiverMetrics`: counters and a histogram kept *per receiver process*, in a registry the app
  owns (never prometheus_client's global one, so two apps in one process never share counts);
- :class:`~veo_archiver.queue_view.Snapshot`: what every worker on every machine wrote to Redis (RQ's
  queue, registries and worker hashes; our ``veo:stats`` counters from :mod:`veo_archiver.records.outcome`;
  the tracked-task set; the callbacks every receiver refused over the last hour), read by the core's
  :func:`~veo_archiver.queue_view.read_snapshot` (the one read model of ``status`` and ``/ops`` too; dead
  letters classified as the CLI does) with bounded work. The
  Redis client is async and prometheus_client collectors are synchronous, so a scrape awaits the snapshot
  first and then renders it through :class:`SnapshotCollector`. When Redis does not answer, the snapshot is
  empty and ``veo_archiver_redis_up`` is 0: a scrape never fails because Redis is down.

The local spool (:mod:`receiver.spool`), when this receiver has one, is read at scrape time too (a directory
listing, off the event loop): entries, bytes, the oldest entry's age and the quarantined entries.

Who may scrape (:func:`receiver.auth.require_scraper`): with ``ADMIN_TOKEN`` set, ``Authorization: Bearer
<token>``; without it, loopback clients only; ``METRICS_PUBLIC=true`` opens it to anyone.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.process_collector import ProcessCollector
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from receiver.auth import require_scraper
from receiver.spool import SpoolSurvey, survey
from receiver.spool_drain import SpoolDrainer
from veo_archiver.queue_view import DEAD_LETTER_SCAN, MAX_LABEL, Snapshot, as_int, read_snapshot
from veo_archiver.records.outcome import DURATION_BUCKETS_S, TIME_LEFT_BUCKETS_S, bucketed
from veo_archiver.settings import Settings

NS = "veo_archiver"
ENQUEUE_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


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
        self.conflict = Counter(
            f"{NS}_callbacks_conflict",
            "Deliveries for an already accepted (provider, task, status) whose result URLs differ: recorded, "
            "never merged (a replayed kie.ai signature with other URLs, or a provider that changed its answer)",
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
        self.shed = Counter(
            f"{NS}_requests_shed",
            "Requests answered 503, 408 or 431 by the edge's bounds (concurrency, body bytes in flight, read "
            "timeout, header size)",
            ["reason"],
            registry=r,
        )
        self.spooled = Counter(
            f"{NS}_callbacks_spooled",
            "Callbacks Redis could not take, written to the local spool and answered 200",
            ["provider"],
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
        #: labelled children looked up once (``labels()`` costs a lock and a dict per call); created on first
        #: use, so a series exists only once something was counted in it
        self._children: dict[tuple[str, str], Any] = {}
        self._outcomes = {
            "duplicate": self.duplicate,
            "conflict": self.conflict,
            "recorded": self.recorded,
            "accepted": self.accepted,
        }

    def _child(self, name: str, counter: Counter, provider: str) -> Any:
        child = self._children.get((name, provider))
        if child is None:
            child = self._children[(name, provider)] = counter.labels(provider)
        return child

    def count_received(self, provider: str) -> None:
        self._child("received", self.received, provider).inc()

    def outcome(self, provider: str, outcome: str, seconds: float) -> None:
        self.enqueue_seconds.observe(seconds)
        # anything else (an operator's replay): a job was enqueued, counted as accepted
        name = outcome if outcome in self._outcomes else "accepted"
        self._child(name, self._outcomes[name], provider).inc()


# ------------------------------------------------------------------------------------------- exposition


def _float(value: str | None) -> float:
    try:
        return float(value or 0)
    except ValueError:
        return 0.0


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
        refused = GaugeMetricFamily(
            f"{NS}_callbacks_refused_last_hour",
            "Callbacks refused (4xx) by every receiver over the last hour, by provider and reason, from Redis "
            f"(this process's own count since it started: {NS}_callbacks_rejected_total)",
            labels=["provider", "reason"],
        )
        for provider, by_reason in sorted(snap.refusals.last_hour.items()):
            for reason, count in sorted(by_reason.items()):
                refused.add_metric([provider[:MAX_LABEL], reason[:MAX_LABEL]], count)
        yield refused
        running = GaugeMetricFamily(f"{NS}_downloads_running", "Downloads under way (running jobs)", labels=["queue"])
        running.add_metric([q], len(snap.downloads))
        yield running
        in_flight = GaugeMetricFamily(
            f"{NS}_download_bytes_in_flight",
            "Bytes downloaded so far by the downloads under way (refreshed every 2 s by each worker)",
            labels=["queue"],
        )
        in_flight.add_metric([q], sum(d.bytes for d in snap.downloads))
        yield in_flight
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
                outcomes.add_metric([p[:MAX_LABEL] for p in parts[1:]], as_int(value))
            elif parts[0] == "bytes" and len(parts) == 2:
                archived.add_metric([parts[1][:MAX_LABEL]], as_int(value))
        yield outcomes
        yield archived
        duration = HistogramMetricFamily(f"{NS}_job_duration_seconds", "Archive job duration (archived or dead letter)")
        duration.add_metric([], bucketed(stats, "duration", DURATION_BUCKETS_S), _float(stats.get("duration_sum")))
        yield duration
        time_left = HistogramMetricFamily(
            f"{NS}_url_time_left_seconds",
            "Time left before the result URL's deadline when its download ended",
        )
        # workers record no sum for this one (workers/outcomes.py); without a sum, no _count/_sum samples
        left_sum = _float(stats.get("time_left_sum")) if "time_left_sum" in stats else None
        time_left.add_metric([], bucketed(stats, "time_left", TIME_LEFT_BUCKETS_S), left_sum)
        yield time_left


class SpoolCollector:
    """This receiver's spool: what waits (read at scrape time) and what its drainer replayed."""

    def __init__(
        self, figures: SpoolSurvey, drained: Mapping[str, int], quarantined: Mapping[str, int] | None = None
    ) -> None:
        self.figures = figures
        self.drained = drained
        self.quarantined = quarantined or {}

    def collect(self) -> Iterator[Metric]:
        f = self.figures
        yield GaugeMetricFamily(f"{NS}_spool_entries", "Callbacks waiting in the local spool", value=f.entries)
        yield GaugeMetricFamily(f"{NS}_spool_bytes", "Bytes waiting in the local spool", value=f.bytes)
        yield GaugeMetricFamily(
            f"{NS}_spool_oldest_age_seconds",
            "Age of the oldest callback waiting in the local spool (0 when empty)",
            value=f.oldest_age_s or 0.0,
        )
        yield GaugeMetricFamily(
            f"{NS}_spool_rejected_entries",
            "Spool entries that could not be replayed, quarantined in rejected/ for an operator",
            value=f.rejected,
        )
        yield GaugeMetricFamily(
            f"{NS}_spool_quarantined_entries",
            "Spool entries that failed on their own while Redis answered, in quarantine/ (spool requeue)",
            value=f.quarantined,
        )
        moved = CounterMetricFamily(
            f"{NS}_spool_quarantined",
            "Spool entries this process moved to quarantine/, by the reason of their last failure",
            labels=["reason"],
        )
        for reason, count in sorted(self.quarantined.items()):
            moved.add_metric([reason[:MAX_LABEL]], count)
        yield moved
        drained = CounterMetricFamily(
            f"{NS}_spool_drained",
            "Spooled callbacks handed to Redis by this process, by intake outcome",
            labels=["outcome"],
        )
        for outcome, count in sorted(self.drained.items()):
            drained.add_metric([outcome[:MAX_LABEL]], count)
        yield drained


class _Both:
    def __init__(self, *sources: Any) -> None:
        self.sources = sources

    def collect(self) -> Iterator[Metric]:
        for source in self.sources:
            yield from source.collect()


def render(receiver: ReceiverMetrics, snapshot: Snapshot, spool: SpoolCollector | None = None) -> bytes:
    sources: list[Any] = [receiver.registry, SnapshotCollector(snapshot)]
    if spool is not None:
        sources.append(spool)
    return generate_latest(_Both(*sources))


# ------------------------------------------------------------------------------------------- access


async def endpoint(settings: Settings, receiver: ReceiverMetrics, request: Request) -> Response:
    require_scraper(settings, request)  # refusals are raised and answered by receiver.responses
    snapshot = await read_snapshot(request.state.redis, settings.queue_name)
    drainer: SpoolDrainer | None = getattr(request.state, "spool_drainer", None)
    spool = None
    if drainer is not None:
        figures = await asyncio.to_thread(survey, drainer.spool.directory, time.time())
        spool = SpoolCollector(figures, dict(drainer.outcomes), dict(drainer.quarantined))
    return Response(
        render(receiver, snapshot, spool),
        headers={"Content-Type": CONTENT_TYPE_PLAIN_0_0_4, "Cache-Control": "no-store"},
    )


def route(settings: Settings, receiver: ReceiverMetrics) -> Route:
    async def metrics(request: Request) -> Response:
        return await endpoint(settings, receiver, request)

    return Route("/metrics", metrics, methods=["GET"])
