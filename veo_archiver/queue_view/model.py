"""The queue as every reader sees it: the types that ``veo-archiver status``, ``/ops`` and ``/metrics`` share.

A :class:`Snapshot` is what all three read (queue, registries, workers, downloads, dead letters by reason,
counters); :class:`OpsData` adds the page's recent lists, :class:`Status` the command line's retries,
tracked-task ages, events of the last hour and problems. Every field is plain data: the readers
(:mod:`~veo_archiver.queue_view.reads`, :mod:`~veo_archiver.queue_view.status_report`) fill them, the CLI
and the receiver only render them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from veo_archiver.queue_view.activity import Rates
from veo_archiver.records import dead_letter
from veo_archiver.records.ops_actions import OpsAction
from veo_archiver.records.progress import Progress
from veo_archiver.records.refusals import RefusalSummary
from veo_archiver.records.tracked import Tracked


def duration(seconds: float | None) -> str:
    """``45s``, ``3m05s``, ``2h07m``, ``3d04h``: the two leading units, for people."""
    if seconds is None:
        return "?"
    s = int(abs(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


class JsonRecord:
    """A dataclass whose ``--json`` form is its fields (nested dataclasses included)."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload, no-any-return]


@dataclass(frozen=True)
class WorkerInfo:
    """One live worker of the queue, from RQ's worker hash (times as :func:`veo_archiver.clock.iso`)."""

    name: str
    state: str
    current_job: str | None
    last_heartbeat: str | None
    heartbeat_age_s: float | None
    birth: str | None
    successful: int
    failed: int
    hostname: str | None
    pid: str | None

    def to_json(self) -> dict[str, Any]:
        """The fields ``status --json`` prints for a worker (the page shows the others)."""
        return {
            "name": self.name,
            "state": self.state,
            "current_job": self.current_job,
            "last_heartbeat": self.last_heartbeat,
            "heartbeat_age_s": self.heartbeat_age_s,
        }


@dataclass(frozen=True)
class WaitingJob(JsonRecord):
    job_id: str
    enqueued_at: str | None
    age_s: float | None


@dataclass(frozen=True)
class Failure:
    """One failed-registry job, classified by :func:`veo_archiver.records.dead_letter.classify`."""

    job_id: str
    provider: str
    task_id: str
    verdict: dead_letter.Verdict
    attempts: int


@dataclass
class Snapshot:
    """What ``status``, ``/ops`` and ``/metrics`` all show. ``redis_up`` false (with ``error``) when Redis did
    not answer: the async reader never raises for that."""

    queue: str
    redis_up: bool = False
    error: str | None = None
    queued: int = 0
    #: the head of the queue, the next job a worker takes
    oldest_waiting: WaitingJob | None = None
    #: how long the head has waited (0 when it has no readable enqueue time), None when nothing waits
    oldest_queued_age_s: float | None = None
    #: jobs per RQ registry (:data:`veo_archiver.redis_keys.RQ_REGISTRIES`)
    registries: dict[str, int] = field(default_factory=dict)
    workers: list[WorkerInfo] = field(default_factory=list)
    #: failed jobs by dead-letter reason (the scanned ones; the rest under ``not_scanned``)
    dead_letters: dict[str, int] = field(default_factory=dict)
    #: the decoded ``veo:stats`` counters (:mod:`veo_archiver.records.outcome`)
    stats: dict[str, str] = field(default_factory=dict)
    tracked_pending: int = 0
    #: the running jobs' downloads (:mod:`veo_archiver.records.progress`)
    downloads: list[Progress] = field(default_factory=list)
    #: refused callbacks over the last hour and day (:mod:`veo_archiver.records.refusals`)
    refusals: RefusalSummary = field(default_factory=RefusalSummary)
    read_seconds: float = 0.0


@dataclass
class OpsData:
    """The snapshot plus the page's recent lists: outcomes, deliveries, dead letters, tracked tasks."""

    snapshot: Snapshot
    outcomes: list[dict[str, str]] = field(default_factory=list)
    events: list[dict[str, str]] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    tracked: list[Tracked] = field(default_factory=list)
    #: per-minute counts over the last hour (:mod:`veo_archiver.queue_view.activity`)
    rates: Rates | None = None
    #: the latest operator actions taken from the page
    actions: list[OpsAction] = field(default_factory=list)
    error: str | None = None


@dataclass(frozen=True)
class ScheduledRetry(JsonRecord):
    job_id: str
    provider: str
    task_id: str
    run_at: str | None
    run_in_s: float | None
    attempts: int
    last_reason: str | None
    last_error: str | None


@dataclass(frozen=True)
class TrackedTask(JsonRecord):
    provider: str
    task_id: str
    since: str | None
    age_s: float


@dataclass(frozen=True)
class Status:
    """``veo-archiver status``: the snapshot's figures and what only the command line shows."""

    queue: str
    queued: int
    oldest_waiting: WaitingJob | None
    workers: list[WorkerInfo]
    started: int
    #: started jobs whose worker stopped heartbeating: abandoned, until a worker's maintenance retries them
    started_expired: int
    scheduled: int
    scheduled_late: int
    next_scheduled: list[ScheduledRetry]
    failed: int
    deferred: int
    finished: int
    dead_letters: dict[str, int]
    tracked: int
    tracked_overdue: int
    oldest_tracked: TrackedTask | None
    events_last_hour: dict[str, int]
    problems: list[str]
    #: the running jobs' downloads (:mod:`veo_archiver.records.progress`)
    downloads: list[Progress] = field(default_factory=list)
    #: refused callbacks over the last hour and day, and the latest ones
    refusals: RefusalSummary = field(default_factory=RefusalSummary)

    @property
    def stuck(self) -> bool:
        return bool(self.problems)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["workers"] = [w.to_json() for w in self.workers]
        out["refusals"] = self.refusals.to_json()
        return out
