"""Read-only answers to "what is stuck, and why": Redis and archive queries; no printing, no writes.

Every function takes a Redis connection and the queue name and returns plain dataclasses; ``to_json``
gives the ``--json`` form of the operator CLI. RQ's registries are read with ``cleanup=False``: looking
must never move a job (RQ's own cleanup fails abandoned jobs as a side effect).

A *dead letter* is any job in RQ's failed registry; why it is there is read by
:mod:`veo_archiver.records.dead_letter` (the job's own verdict, or ``abandoned`` / ``crashed``), the same reader
``/ops`` and ``/metrics`` use through :mod:`veo_archiver.queue_snapshot`. Tracked tasks are read through
:mod:`veo_archiver.records.tracked`.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import redis
from rq import Queue, Worker
from rq.job import Job
from rq.registry import (
    DeferredJobRegistry,
    FailedJobRegistry,
    FinishedJobRegistry,
    StartedJobRegistry,
)
from rq.serializers import JSONSerializer

from veo_archiver import redis_keys
from veo_archiver.clock import epoch, iso
from veo_archiver.records import progress, tracked
from veo_archiver.records.dead_letter import DeadLetter, dead_letter_of

#: jobs fetched per Redis round trip when walking a registry
BATCH = 500
#: a waiting job older than this, with workers alive, means the workers cannot keep up (or are stuck)
WAITING_ALERT_S = 5 * 60
#: a scheduled retry this late means no worker runs RQ's scheduler
SCHEDULER_LATE_S = 60
EVENTS_WINDOW_S = 3600
EVENT_OUTCOMES = ("accepted", "duplicate", "conflict", "recorded", "replayed")


# --------------------------------------------------------------------------------------------- time


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


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


# --------------------------------------------------------------------------------------------- data


class _Json:
    def to_json(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload, no-any-return]


@dataclass(frozen=True)
class WorkerInfo(_Json):
    name: str
    state: str
    current_job: str | None
    last_heartbeat: str | None
    heartbeat_age_s: float | None


@dataclass(frozen=True)
class ScheduledRetry(_Json):
    job_id: str
    provider: str
    task_id: str
    run_at: str | None
    run_in_s: float | None
    attempts: int
    last_reason: str | None
    last_error: str | None


@dataclass(frozen=True)
class WaitingJob(_Json):
    job_id: str
    enqueued_at: str | None
    age_s: float | None


@dataclass(frozen=True)
class TrackedTask(_Json):
    provider: str
    task_id: str
    since: str | None
    age_s: float


@dataclass(frozen=True)
class Status(_Json):
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
    downloads: list[progress.Progress] = field(default_factory=list)

    @property
    def stuck(self) -> bool:
        return bool(self.problems)


def queue_of(connection: redis.Redis, queue_name: str) -> Queue:
    return Queue(queue_name, connection=connection, serializer=JSONSerializer)


def fetch_jobs(connection: redis.Redis, job_ids: Iterable[str]) -> Iterator[tuple[str, Job | None]]:
    ids = list(job_ids)
    for start in range(0, len(ids), BATCH):
        chunk = ids[start : start + BATCH]
        jobs = Job.fetch_many(chunk, connection=connection, serializer=JSONSerializer)
        yield from zip(chunk, jobs, strict=True)


def state_of(job: Job) -> str:
    """RQ's state of the job as stored (``queued``, ``scheduled``, ``failed``…), without a refresh."""
    status = job.get_status(refresh=False)
    return str(getattr(status, "value", status) or "?")


def dead_letters(
    connection: redis.Redis,
    queue_name: str,
    *,
    reason: str | None = None,
    provider: str | None = None,
    limit: int | None = None,
) -> list[DeadLetter]:
    """Jobs in the failed registry, newest failure first, filtered by reason and provider."""
    registry = FailedJobRegistry(queue=queue_of(connection, queue_name))
    ids = registry.get_job_ids(desc=True, cleanup=False)
    out: list[DeadLetter] = []
    for _job_id, job in fetch_jobs(connection, ids):
        if job is None:  # the registry entry outlived the job's hash
            continue
        letter = dead_letter_of(job)
        if reason is not None and letter.reason != reason:
            continue
        if provider is not None and letter.provider != provider:
            continue
        out.append(letter)
    out.sort(key=lambda d: epoch(d.at) or 0.0, reverse=True)
    return out[:limit] if limit is not None else out


def scheduled_retries(
    connection: redis.Redis, queue_name: str, *, limit: int = 10, now: float | None = None
) -> list[ScheduledRetry]:
    """Jobs waiting in the scheduled registry (transient failures), soonest first."""
    now = time.time() if now is None else now
    entries: list[Any] = connection.zrange(redis_keys.rq_scheduled_key(queue_name), 0, limit - 1, withscores=True) or []
    when = {_text(member): float(score) for member, score in entries}
    out: list[ScheduledRetry] = []
    for job_id, job in fetch_jobs(connection, list(when)):
        meta = job.meta if job is not None else {}
        attempts = list(meta.get("attempts") or [])
        last = attempts[-1] if attempts else {}
        out.append(
            ScheduledRetry(
                job_id=job_id,
                provider=str(meta.get("provider") or "?"),
                task_id=str(meta.get("task_id") or "?"),
                run_at=iso(when[job_id]),
                run_in_s=round(when[job_id] - now, 1),
                attempts=len(attempts),
                last_reason=last.get("reason"),
                last_error=last.get("error"),
            )
        )
    return out


def oldest_waiting(connection: redis.Redis, queue_name: str, *, now: float | None = None) -> WaitingJob | None:
    """The head of the queue: the next job a worker will take, and how long it has waited."""
    now = time.time() if now is None else now
    head = connection.lindex(redis_keys.rq_queue_key(queue_name), 0)
    if head is None:
        return None
    job_id = _text(head)
    ((_, job),) = list(fetch_jobs(connection, [job_id]))
    enqueued = epoch(job.enqueued_at) if job is not None else None
    age = None if enqueued is None else round(now - enqueued, 1)
    return WaitingJob(job_id=job_id, enqueued_at=iso(enqueued), age_s=age)


def workers(connection: redis.Redis, queue_name: str, *, now: float | None = None) -> list[WorkerInfo]:
    now = time.time() if now is None else now
    out = []
    for worker in Worker.all(queue=queue_of(connection, queue_name), serializer=JSONSerializer):
        beat = epoch(worker.last_heartbeat)
        out.append(
            WorkerInfo(
                name=worker.name,
                state=str(worker.get_state()),
                current_job=worker.get_current_job_id(),
                last_heartbeat=iso(beat),
                heartbeat_age_s=None if beat is None else round(now - beat, 1),
            )
        )
    return sorted(out, key=lambda w: w.name)


def downloads(connection: redis.Redis, queue_name: str) -> list[progress.Progress]:
    """The progress of the running jobs' downloads (jobs in RQ's started registry that have an entry)."""
    ids = StartedJobRegistry(queue=queue_of(connection, queue_name)).get_job_ids(cleanup=False)
    found = progress.read(connection, ids)
    return [found[job_id] for job_id in ids if job_id in found]


# ------------------------------------------------------------------------------------- streams, tracked


def recent_events(
    connection: redis.Redis, *, window_s: float = EVENTS_WINDOW_S, now: float | None = None
) -> dict[str, int]:
    """Deliveries recorded in the last ``window_s`` seconds, by intake outcome (stream ids are ms times)."""
    now = time.time() if now is None else now
    counts: Counter[str] = Counter({outcome: 0 for outcome in EVENT_OUTCOMES})
    start = str(int((now - window_s) * 1000))
    while True:
        entries: list[Any] = connection.xrange(redis_keys.events_stream(), min=start, max="+", count=BATCH) or []
        for _entry_id, fields in entries:
            counts[_text(fields.get(b"outcome", b"?"))] += 1
        if len(entries) < BATCH:
            break
        start = "(" + _text(entries[-1][0])
    return dict(counts)


def tracked_task(task: tracked.Tracked, now: float) -> TrackedTask:
    return TrackedTask(
        provider=task.provider,
        task_id=task.task_id,
        since=iso(task.registered_at),
        age_s=round(now - task.registered_at, 1),
    )


# --------------------------------------------------------------------------------------------- status


def status(
    connection: redis.Redis,
    queue_name: str,
    *,
    tracked_overdue_s: float,
    now: float | None = None,
    waiting_alert_s: float = WAITING_ALERT_S,
) -> Status:
    now = time.time() if now is None else now
    queue = queue_of(connection, queue_name)
    started_key = StartedJobRegistry(queue=queue).key
    scheduled = redis_keys.rq_scheduled_key(queue_name)
    letters = dead_letters(connection, queue_name)
    by_reason = Counter(letter.reason for letter in letters)
    alive = workers(connection, queue_name, now=now)
    waiting = oldest_waiting(connection, queue_name, now=now)
    oldest = tracked.oldest(connection)
    result = Status(
        queue=queue_name,
        queued=queue.count,
        oldest_waiting=waiting,
        workers=alive,
        started=StartedJobRegistry(queue=queue).get_job_count(cleanup=False),
        started_expired=int(connection.zcount(started_key, 0, now)),
        scheduled=int(connection.zcard(scheduled)),
        scheduled_late=int(connection.zcount(scheduled, 0, now - SCHEDULER_LATE_S)),
        next_scheduled=scheduled_retries(connection, queue_name, now=now),
        failed=FailedJobRegistry(queue=queue).get_job_count(cleanup=False),
        deferred=DeferredJobRegistry(queue=queue).get_job_count(cleanup=False),
        finished=FinishedJobRegistry(queue=queue).get_job_count(cleanup=False),
        dead_letters=dict(sorted(by_reason.items(), key=lambda kv: (-kv[1], kv[0]))),
        tracked=tracked.count(connection),
        tracked_overdue=tracked.count(connection, before=now - tracked_overdue_s),
        oldest_tracked=tracked_task(oldest, now) if oldest else None,
        events_last_hour=recent_events(connection, now=now),
        problems=[],
        downloads=downloads(connection, queue_name),
    )
    return replace(
        result, problems=problems(result, waiting_alert_s=waiting_alert_s, tracked_overdue_s=tracked_overdue_s)
    )


def _n(count: int, noun: str, plural: str | None = None) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {plural or noun + 's'}"


def problems(s: Status, *, waiting_alert_s: float, tracked_overdue_s: float) -> list[str]:
    """What an operator has to act on; empty when nothing is stuck (scheduled retries heal themselves)."""
    out: list[str] = []
    total = sum(s.dead_letters.values())
    if total:
        reasons = ", ".join(f"{reason} {count}" for reason, count in s.dead_letters.items())
        out.append(
            f"{_n(total, 'dead letter')} ({reasons}): see `veo-archiver failed`, requeue with `veo-archiver retry`"
        )
    conflicts = s.events_last_hour.get("conflict", 0)
    if conflicts:
        out.append(
            f"{_n(conflicts, 'delivery', 'deliveries')} in the last hour for an accepted task with other result URLs "
            "(kept, not merged): `veo-archiver show PROVIDER TASK_ID` compares them"
        )
    if s.queued and not s.workers:
        out.append(f"{_n(s.queued, 'job')} waiting and no worker alive: start `veo-archiver worker`")
    elif s.oldest_waiting and s.oldest_waiting.age_s is not None and s.oldest_waiting.age_s > waiting_alert_s:
        waited = duration(s.oldest_waiting.age_s)
        out.append(f"the oldest waiting job has waited {waited}: workers too few or stuck")
    if s.started_expired:
        out.append(
            f"{_n(s.started_expired, 'started job')} with no worker heartbeat (abandoned): "
            "a worker's maintenance will retry them"
        )
    if s.scheduled_late:
        out.append(f"{_n(s.scheduled_late, 'scheduled retry')} overdue: no worker runs RQ's scheduler")
    if s.tracked_overdue:
        out.append(
            f"{_n(s.tracked_overdue, 'tracked task')} without a terminal callback for more than "
            f"{duration(tracked_overdue_s)} (the sweep polls the provider)"
        )
    return out
