"""Missing-callback reconciliation: poll the status API for tracked tasks whose callback never came.

Every provider gives up after about three delivery attempts (PROVIDERS.md), so a task registered with
``veo-archiver track`` or ``POST /tasks`` that has no terminal callback ``RECONCILE_AFTER`` seconds after
registration is read through its provider's status API by :func:`sweep`:

- terminal (succeeded/failed): the provider's answer (verification ``provider_api``) goes through the same
  :class:`veo_archiver.intake.Intake` as a callback, so the same deduplicated job archives it. The task stays
  tracked until the worker archives it (:func:`veo_archiver.records.outcome.publish` removes it);
- in progress: left for the next sweep;
- unknown to the provider: dropped from the tracked set and recorded on ``veo:tracked:dropped``;
- status API errors (unreachable, busy, refused key, unreadable answer): kept, polled again next sweep.

A task with an accepted terminal delivery (its dedupe key or job exists) is not polled: the worker has it.
If that job already finished (archived, or found already archived) the task is untracked here.

Scheduling: every worker calls :func:`run_scheduled` from its maintenance; ``SET NX EX RECONCILE_INTERVAL``
on ``veo:reconcile:lock`` lets one worker per interval sweep, across machines. A sweep has a time budget
(it runs in the worker's main loop); tasks polled least recently go first, the rest wait for the next one.

Redis keys (all ``veo:``, defined in :mod:`veo_archiver.redis_keys`): ``reconcile:lock`` (string, TTL =
interval), ``reconcile:last`` (JSON of the last report), ``tracked:polled`` (zset member → last poll time),
``tracked:dropped`` (list, newest first). The tracked set itself is read and written through
:mod:`veo_archiver.records.tracked`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis
import redis.asyncio as aioredis
from rq import get_current_job

from veo_archiver import redis_keys
from veo_archiver.clock import iso
from veo_archiver.errors import ArchiverError, PermanentError
from veo_archiver.event import TaskEvent
from veo_archiver.intake import Delivery, Intake, IntakeResult
from veo_archiver.records import tracked
from veo_archiver.settings import Settings
from veo_archiver.text import text
from workers.context import current
from workers.status_client import StatusClient

log = logging.getLogger(__name__)

LOCK_KEY = redis_keys.RECONCILE_LOCK
LAST_REPORT_KEY = redis_keys.RECONCILE_LAST_REPORT
POLLED_ZSET = redis_keys.TRACKED_POLLED_ZSET
DROPPED_LIST = redis_keys.TRACKED_DROPPED_LIST
DROPPED_MAXLEN = 10_000
#: a sweep from worker maintenance blocks that worker's loop: keep it well under the worker TTL (60 s)
SCHEDULED_BUDGET_S = 20.0
SWEEP_LIMIT = 1000

Submit = Callable[[Sequence[TaskEvent]], list["IntakeResult | ArchiverError"]]


@dataclass
class SweepReport:
    started_at: float
    after_s: int
    examined: int = 0
    submitted: list[dict[str, Any]] = field(default_factory=list)
    in_progress: list[dict[str, Any]] = field(default_factory=list)
    dropped: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    #: a terminal delivery was accepted; the worker has the job
    waiting: int = 0
    #: the job finished (archived or already archived): untracked here
    finished: int = 0
    #: left for the next sweep (time budget or limit)
    deferred: int = 0
    duration_s: float = 0.0

    def counts(self) -> dict[str, int]:
        return {
            "examined": self.examined,
            "submitted": len(self.submitted),
            "in_progress": len(self.in_progress),
            "dropped": len(self.dropped),
            "errors": len(self.errors),
            "waiting": self.waiting,
            "finished": self.finished,
            "deferred": self.deferred,
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "at": iso(self.started_at),
            "after_s": self.after_s,
            "duration_s": round(self.duration_s, 3),
            **self.counts(),
            "submitted_tasks": self.submitted,
            "in_progress_tasks": self.in_progress,
            "dropped_tasks": self.dropped,
            "error_tasks": self.errors,
        }

    def summary(self) -> str:
        age = f" registered over {self.after_s} s ago" if self.after_s else ""
        lines = [f"swept {self.examined} tracked task(s){age} in {self.duration_s:.1f} s"]
        for item in self.submitted:
            lines.append(
                f"  submitted    {item['provider']} {item['task_id']}: {item['status']} "
                f"({item['outcome']}{', job ' + item['job_id'] if item.get('job_id') else ''})"
            )
        for item in self.in_progress:
            lines.append(f"  in progress  {item['provider']} {item['task_id']} ({item['provider_status']})")
        for label, items in (("dropped", self.dropped), ("kept", self.errors)):
            for item in items:
                lines.append(f"  {label:12} {item['provider']} {item['task_id']}: {item['reason']}: {item['detail']}")
        lines.append(
            f"  waiting for a worker: {self.waiting}; finished and untracked: {self.finished}; "
            f"left for the next sweep: {self.deferred}"
        )
        return "\n".join(lines)


def callback_state(connection: redis.Redis, provider: str, task_id: str) -> str:
    """``none``: no terminal delivery accepted; ``pending``: a job exists; ``finished``: its job is done."""
    pipe = connection.pipeline(transaction=False)
    for status in ("succeeded", "failed"):
        pipe.exists(redis_keys.dedupe_key(provider, task_id, status))
        pipe.hget(redis_keys.rq_job_key(redis_keys.job_id(provider, task_id, status)), "status")
    dedupe_ok, job_ok, dedupe_failed, job_failed = pipe.execute()
    statuses = [text(s) for s in (job_ok, job_failed) if s is not None]
    if "finished" in statuses:
        return "finished"
    if dedupe_ok or dedupe_failed or statuses:
        return "pending"
    return "none"


def reconciled_delivery(event: TaskEvent, now: float) -> Delivery:
    """What the intake records for an event read by the sweep (there was no HTTP delivery)."""
    body = json.dumps({"source": "reconcile", "status_api": event.to_json()}, separators=(",", ":")).encode()
    return Delivery(
        body=body, headers={"x-veo-archiver-source": "reconcile"}, received_at=now, remote=None, path="reconcile"
    )


def intake_submitter(settings: Settings, *, now: float) -> Submit:
    """Submit through :class:`Intake` (async) from sync code: one event loop and client per batch."""

    def submit(events: Sequence[TaskEvent]) -> list[IntakeResult | ArchiverError]:
        async def run() -> list[IntakeResult | ArchiverError]:
            client = aioredis.Redis.from_url(
                settings.redis_url, socket_timeout=settings.enqueue_timeout_s, socket_connect_timeout=2.0
            )
            try:
                intake = Intake(settings, client)
                await intake.start()
                out: list[IntakeResult | ArchiverError] = []
                for event in events:
                    try:
                        out.append(await intake.submit(event, reconciled_delivery(event, now)))
                    except ArchiverError as exc:
                        out.append(exc)
                return out
            finally:
                await client.aclose()

        return asyncio.run(run())

    return submit


def sweep(
    connection: redis.Redis,
    settings: Settings,
    status_client: StatusClient,
    *,
    now: float,
    after_s: int | None = None,
    budget_s: float | None = None,
    limit: int = SWEEP_LIMIT,
    submit: Submit | None = None,
    clock: Callable[[], float] = time.monotonic,
    only: tracked.TaskRef | None = None,
) -> SweepReport:
    """Poll every tracked task registered more than ``after_s`` (default RECONCILE_AFTER) seconds before
    ``now`` that has no accepted terminal delivery (``only``: that one task). Redis errors propagate (the
    caller retries next time)."""
    after = settings.reconcile_after_s if after_s is None else after_s
    report = SweepReport(started_at=now, after_s=after)
    started = clock()
    members = tracked.registered_before(connection, now - after)
    if only is not None:
        members = [(member, registered) for member, registered in members if member == only.member]
    polled = connection.zmscore(POLLED_ZSET, [m for m, _ in members]) if members else []
    # least recently polled first, then oldest: a backlog of in-progress tasks cannot starve the rest
    order = sorted(zip(members, polled, strict=True), key=lambda mp: (mp[1] or 0.0, mp[0][1]))
    terminal: list[tuple[TaskEvent, str]] = []
    for (member, registered), _ in order:
        if report.examined >= limit or (budget_s is not None and clock() - started > budget_s):
            report.deferred += 1
            continue
        report.examined += 1
        ref = tracked.ref(member)
        if ref is None:
            _drop(connection, report, member, ("?", member), registered, now, "malformed", "not [provider, task_id]")
            continue
        provider, task_id = ref.provider, ref.task_id
        state = callback_state(connection, provider, task_id)
        if state == "finished":
            pipe = connection.pipeline(transaction=False)
            tracked.remove(pipe, member)
            pipe.zrem(POLLED_ZSET, member)
            pipe.execute()
            report.finished += 1
            continue
        if state == "pending":
            report.waiting += 1
            continue
        item = {"provider": provider, "task_id": task_id}
        if not status_client.can_confirm(provider):
            report.errors.append(
                {**item, "reason": "no_api_key", "detail": f"no status API key configured for {provider}"}
            )
            continue
        connection.zadd(POLLED_ZSET, {member: now})
        try:
            event = status_client.fetch(provider, task_id)
        except PermanentError as exc:
            if exc.reason == "unknown_task":
                _drop(connection, report, member, (provider, task_id), registered, now, exc.reason, exc.message)
            else:
                report.errors.append({**item, "reason": exc.reason, "detail": exc.message})
            continue
        except ArchiverError as exc:  # unreachable, busy, unreadable: polled again next sweep
            report.errors.append({**item, "reason": exc.reason, "detail": exc.message})
            continue
        if event.status.terminal:
            terminal.append((event, member))
        else:
            report.in_progress.append({**item, "provider_status": str(event.provider_status)})
    if terminal:
        results = (submit or intake_submitter(settings, now=now))([event for event, _ in terminal])
        for (event, _), result in zip(terminal, results, strict=True):
            item = {"provider": event.provider, "task_id": event.task_id}
            if isinstance(result, ArchiverError):
                report.errors.append({**item, "reason": result.reason, "detail": result.message})
            else:
                report.submitted.append(
                    {**item, "status": event.status.value, "outcome": result.outcome, "job_id": result.job_id}
                )
    _forget_untracked(connection)
    report.duration_s = clock() - started
    return report


def _drop(
    connection: redis.Redis,
    report: SweepReport,
    member: str,
    ref: tuple[str, str],
    registered: float,
    now: float,
    reason: str,
    detail: str,
) -> None:
    record = {
        "provider": ref[0],
        "task_id": ref[1],
        "reason": reason,
        "detail": detail[:500],
        "registered_at": iso(registered),
        "dropped_at": iso(now),
    }
    pipe = connection.pipeline(transaction=True)
    tracked.remove(pipe, member)
    pipe.zrem(POLLED_ZSET, member)
    pipe.lpush(DROPPED_LIST, json.dumps(record))
    pipe.ltrim(DROPPED_LIST, 0, DROPPED_MAXLEN - 1)
    pipe.execute()
    report.dropped.append(record)
    log.warning("tracked task dropped: %s", detail, extra={"provider": ref[0], "task_id": ref[1], "reason": reason})


def _forget_untracked(connection: redis.Redis) -> None:
    """Poll times of tasks no longer tracked (archived and removed by the worker)."""
    polled_raw: list[Any] = connection.zrange(POLLED_ZSET, 0, -1)
    polled = [text(m) for m in polled_raw]
    if not polled:
        return
    scores = tracked.registration_times(connection, polled)
    gone = [m for m, score in zip(polled, scores, strict=True) if score is None]
    if gone:
        connection.zrem(POLLED_ZSET, *gone)


def dropped(connection: redis.Redis, count: int = 100) -> list[dict[str, Any]]:
    return [json.loads(raw) for raw in connection.lrange(DROPPED_LIST, 0, count - 1)]


def last_report(connection: redis.Redis) -> dict[str, Any] | None:
    raw = connection.get(LAST_REPORT_KEY)
    return json.loads(raw) if raw else None


def acquire(connection: redis.Redis, settings: Settings, owner: str) -> bool:
    """Whether this caller sweeps this interval: the lock is never released, it expires with the interval."""
    return bool(connection.set(LOCK_KEY, owner, nx=True, ex=settings.reconcile_interval_s))


def run_sweep(
    connection: redis.Redis,
    settings: Settings,
    *,
    now: float | None = None,
    after_s: int | None = None,
    budget_s: float | None = None,
) -> SweepReport:
    """One sweep with its own status client; the report is kept at ``veo:reconcile:last`` for operators."""
    client = StatusClient(settings.providers)
    try:
        report = sweep(
            connection, settings, client, now=time.time() if now is None else now, after_s=after_s, budget_s=budget_s
        )
    finally:
        client.close()
    connection.set(LAST_REPORT_KEY, json.dumps(report.to_json()))
    level = logging.INFO if report.examined else logging.DEBUG
    if report.dropped or report.errors:
        level = logging.WARNING
    log.log(level, "reconciliation sweep", extra=report.counts())
    return report


def sweep_task(provider: str, task_id: str) -> dict[str, Any]:
    """RQ job (:data:`veo_archiver.redis_keys.SWEEP_TASK_JOB`, enqueued by the ops page through
    :func:`veo_archiver.sweep_request.request_sweep`): :func:`sweep` for one tracked task, whatever its age.
    Its report is the job's result."""
    job = get_current_job()
    if job is None:
        raise PermanentError("sweep_task runs as an RQ job", reason="not_a_job")
    settings = current().settings
    client = StatusClient(settings.providers)
    try:
        report = sweep(
            job.connection, settings, client, now=time.time(), after_s=0, only=tracked.TaskRef(provider, task_id)
        )
    finally:
        client.close()
    log.info("sweep of one task requested by an operator", extra={"provider": provider, "task_id": task_id})
    return report.to_json()


def run_scheduled(connection: redis.Redis, settings: Settings, *, owner: str) -> SweepReport | None:
    """From worker maintenance: sweep if no one else did this interval (and there is anything tracked)."""
    if not tracked.any_tracked(connection):
        connection.delete(POLLED_ZSET)  # poll times of tasks archived since the last sweep
        return None
    if not acquire(connection, settings, owner):
        return None
    return run_sweep(connection, settings, budget_s=SCHEDULED_BUDGET_S)
