"""``veo-archiver status``: the shared :class:`~.model.Snapshot` (every failed job classified, as ``/ops`` and
``/metrics`` classify them) plus what only the command line shows: the scheduled retries, started jobs
without a heartbeat, tracked-task ages, the deliveries of the last hour, and the problems an operator has to
act on. Read-only: looking never moves a job.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import replace
from typing import Any

import redis

from veo_archiver import redis_keys
from veo_archiver.clock import iso
from veo_archiver.queue_view.model import ScheduledRetry, Status, TrackedTask, duration
from veo_archiver.queue_view.reads import snapshot
from veo_archiver.records import dead_letter, tracked
from veo_archiver.text import text

#: entries read per Redis round trip when walking a stream
BATCH = 500
#: a waiting job older than this, with workers alive, means the workers cannot keep up (or are stuck)
WAITING_ALERT_S = 5 * 60
#: a scheduled retry this late means no worker runs RQ's scheduler
SCHEDULER_LATE_S = 60
EVENTS_WINDOW_S = 3600
EVENT_OUTCOMES = ("accepted", "duplicate", "conflict", "recorded", "replayed")


def scheduled_retries(
    connection: redis.Redis, queue_name: str, *, limit: int = 10, now: float | None = None
) -> list[ScheduledRetry]:
    """Jobs waiting in the scheduled registry (transient failures), soonest first."""
    now = time.time() if now is None else now
    entries: list[Any] = connection.zrange(redis_keys.rq_scheduled_key(queue_name), 0, limit - 1, withscores=True) or []
    when = {text(member): float(score) for member, score in entries}
    pipe = connection.pipeline(transaction=False)
    for job_id in when:
        pipe.hget(redis_keys.rq_job_key(job_id), "meta")
    metas = pipe.execute()
    out: list[ScheduledRetry] = []
    for (job_id, run_at), meta_raw in zip(when.items(), metas, strict=True):
        meta = dead_letter.job_meta(meta_raw)
        attempts = dead_letter.attempts_of(meta)
        last = attempts[-1] if attempts else {}
        out.append(
            ScheduledRetry(
                job_id=job_id,
                provider=str(meta.get("provider") or "?"),
                task_id=str(meta.get("task_id") or "?"),
                run_at=iso(run_at),
                run_in_s=round(run_at - now, 1),
                attempts=len(attempts),
                last_reason=last.get("reason"),
                last_error=last.get("error"),
            )
        )
    return out


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
            counts[text(fields.get(b"outcome", b"?"))] += 1
        if len(entries) < BATCH:
            break
        start = "(" + text(entries[-1][0])
    return dict(counts)


def tracked_task(task: tracked.Tracked, now: float) -> TrackedTask:
    return TrackedTask(
        provider=task.provider,
        task_id=task.task_id,
        since=iso(task.registered_at),
        age_s=round(now - task.registered_at, 1),
    )


def status(
    connection: redis.Redis,
    queue_name: str,
    *,
    tracked_overdue_s: float,
    now: float | None = None,
    waiting_alert_s: float = WAITING_ALERT_S,
) -> Status:
    """The whole status; Redis errors propagate (the command says Redis is unreachable)."""
    now = time.time() if now is None else now
    snap = snapshot(connection, queue_name, now=now, scan=None)
    # the command line counts the failed jobs it can read (a job whose hash expired is left out)
    letters = {reason: n for reason, n in snap.dead_letters.items() if reason != dead_letter.MISSING}
    started_key = redis_keys.rq_registry_key("started", queue_name)
    scheduled_key = redis_keys.rq_scheduled_key(queue_name)
    oldest = tracked.oldest(connection)
    result = Status(
        queue=queue_name,
        queued=snap.queued,
        oldest_waiting=snap.oldest_waiting,
        workers=snap.workers,
        started=snap.registries["started"],
        started_expired=int(connection.zcount(started_key, 0, now)),
        scheduled=snap.registries["scheduled"],
        scheduled_late=int(connection.zcount(scheduled_key, 0, now - SCHEDULER_LATE_S)),
        next_scheduled=scheduled_retries(connection, queue_name, now=now),
        failed=snap.registries["failed"],
        deferred=snap.registries["deferred"],
        finished=snap.registries["finished"],
        dead_letters=dict(sorted(letters.items(), key=lambda kv: (-kv[1], kv[0]))),
        tracked=snap.tracked_pending,
        tracked_overdue=tracked.count(connection, before=now - tracked_overdue_s),
        oldest_tracked=tracked_task(oldest, now) if oldest else None,
        events_last_hour=recent_events(connection, now=now),
        problems=[],
        downloads=snap.downloads,
        refusals=snap.refusals,
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
