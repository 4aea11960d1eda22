"""The job's own meta, made trustworthy at the start of every run, whatever tool touched the job last.

RQ's tools do not all speak our JSON serializer, and none knows our dead-letter verdict:

- ``rq requeue`` with RQ's default serializer (RQ 2) cannot read JSON meta; it re-saves it as a pickle of
  ``{"unserialized": b"<our JSON>"}``, which the JSON serializer then reads back as ``{"unserialized": <the
  pickle>}`` and cannot save again. Such meta is read back through both layers
  (:func:`veo_archiver.records.dead_letter.readable_meta`); meta no reader understands is rebuilt from the
  job's own envelope (provider, task id, delivery id).
- ``rq requeue -S rq.serializers.JSONSerializer`` (or rq-dashboard) keeps ``dead_letter``, the attempt
  history and ``retries_left = 0``: the first transient error would dead-letter the job again at once.

A job that runs while carrying a dead-letter verdict (or with rebuilt meta) was requeued by some tool: it
gets a fresh job's guarantees (attempt history cleared, ``number_of_retries`` 0, ``retries_left`` the full
budget), the old verdict moves to ``previous_dead_letters`` and the run counts up (``meta["run"]``: each end
of each run is published once, under its own ``outcome_id``). Per-file progress is kept.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

import redis

from veo_archiver import redis_keys
from veo_archiver.clock import iso
from veo_archiver.errors import PermanentError, TransientError
from veo_archiver.event import TaskEvent
from veo_archiver.records import dead_letter as dead_letters
from veo_archiver.records import outcome as outcomes
from workers.attempt import Attempt, JobHandle
from workers.context import WorkerContext
from workers.manifest import FileRecord

log = logging.getLogger(__name__)

#: meta keys that describe earlier failed runs; cleared when a dead letter runs again
FAILED_RUN_META = ("attempts", "crash_requeues")


def normalise(job: JobHandle, envelope: dict[str, Any], event: TaskEvent, *, fresh_retries: int, now: float) -> bool:
    """Make ``job.meta`` ours again and, for a requeued dead letter, start its next run with a fresh retry
    budget. True when anything changed (and was saved)."""
    fields = {"job_id": job.id, "provider": event.provider, "task_id": event.task_id}
    readable = dead_letters.readable_meta(job.meta)
    rebuilt = readable is None
    unwrapped = readable is not None and readable is not job.meta
    if readable is None:
        log.warning(
            "job meta was re-saved by another tool in a format we cannot read; rebuilt from the envelope", extra=fields
        )
        job.meta = {"provider": event.provider, "task_id": event.task_id, "delivery_id": envelope.get("delivery_id")}
        job.meta.update(dead_letters.unreadable_history(iso(now)))
    elif unwrapped:
        log.info("job meta re-saved by another tool's serializer; read back", extra=fields)
        job.meta = readable
    verdict = dead_letters.start_new_run(job.meta)
    if verdict is None and not (rebuilt or unwrapped):
        return False
    if verdict is not None:
        log.warning(
            "a dead letter runs again (requeued); fresh retry budget",
            extra={**fields, "run": dead_letters.run_of(job.meta), "previous_reason": verdict.get("reason")},
        )
    for name in FAILED_RUN_META:
        job.meta.pop(name, None)
    job.number_of_retries = 0
    job.retries_left = fresh_retries
    job.save_meta()
    if job.connection is not None:
        job.connection.hset(
            redis_keys.rq_job_key(job.id), mapping={"number_of_retries": 0, "retries_left": fresh_retries}
        )
    return True


def record_attempt(ctx: WorkerContext, job: JobHandle, exc: TransientError, delay: float | None) -> None:
    """One transient failure in the job's attempt history (the last 20 are kept)."""
    attempts = job.meta.setdefault("attempts", [])
    attempts.append(
        {
            "at": iso(ctx.clock()),
            "reason": exc.reason,
            "error": exc.message[:500],
            "retry_in_s": None if delay is None else round(delay, 1),
        }
    )
    del attempts[:-20]
    job.save_meta()


def progress(job: JobHandle | None) -> dict[int, FileRecord]:
    if job is None:
        return {}
    saved = job.meta.get("files") or {}
    return {int(i): FileRecord(**rec) for i, rec in saved.items()}


def save_progress(job: JobHandle | None, record: FileRecord) -> None:
    if job is None:
        return
    job.meta.setdefault("files", {})[str(record.index)] = record.to_json()
    job.save_meta()


def republish_dead_letter(job: JobHandle) -> bool:
    """Publish the outcome of a dead letter whose own publish failed (its mark says ``published: false``).
    True when the mark is settled now; the stream's marker makes a second publish of one end a no-op."""
    verdict = job.meta.get("dead_letter") if isinstance(job.meta, dict) else None
    if not isinstance(verdict, dict) or verdict.get("published") is not False:
        return False
    outcomes.publish(
        job.connection,
        outcome=outcomes.DEAD_LETTER,
        provider=str(job.meta.get("provider") or ""),
        task_id=str(job.meta.get("task_id") or ""),
        status=str(verdict.get("status") or ""),
        job_id=job.id,
        run=dead_letters.run_of(verdict),
        at=str(verdict.get("at") or ""),
        reason=str(verdict.get("reason") or ""),
        error=str(verdict.get("error") or "")[:500],
        strict=True,
    )
    verdict["published"] = True
    job.save_meta()
    log.info("published a dead letter's outcome late", extra={"job_id": job.id, "reason": verdict.get("reason")})
    return True


def mark_dead_letter(ctx: WorkerContext, attempt: Attempt, exc: PermanentError) -> None:
    """Mark the attempt's job as a dead letter (no RQ retry left, the reason in its meta) and publish the outcome.

    At least once: the mark says ``published: false`` until the entry is in the stream; a publish that fails
    here is made by worker maintenance (:func:`republish_dead_letter`), and the stream keeps
    one entry per ``outcome_id`` whoever publishes it."""
    job, event, fields = attempt.job, attempt.event, attempt.log_fields
    at = iso(ctx.clock())
    run = dead_letters.run_of(job.meta) if job is not None else 1
    verdict = {
        "reason": exc.reason,
        "error": exc.message,
        "at": at,
        "status": event.status.value,
        "run": run,
        "published": False,
    }
    if job is not None:
        job.retries_left = 0
        job.meta["dead_letter"] = verdict
        job.save_meta()
    log.error("permanent failure: %s", exc.message, extra={**fields, "reason": exc.reason})
    try:
        outcomes.publish(
            attempt.connection,
            outcome=outcomes.DEAD_LETTER,
            provider=event.provider,
            task_id=event.task_id,
            status=event.status.value,
            job_id=job.id if job is not None else None,
            run=run,
            at=at,
            reason=exc.reason,
            error=exc.message[:500],
            duration_s=time.monotonic() - attempt.started,
            strict=True,
        )
    except TransientError as unpublished:
        log.warning("dead letter not published yet; worker maintenance will: %s", unpublished.message, extra=fields)
        return
    if job is not None:
        verdict["published"] = True
        with contextlib.suppress(redis.RedisError):  # maintenance would publish again: the stream dedupes
            job.save_meta()
