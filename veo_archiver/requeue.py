"""Requeue dead letters: the one operator write on RQ's failed registry, shared by ``veo-archiver retry`` and
the ops page's "retry" action (:mod:`receiver.ops_actions`).

A requeued job leaves RQ's failed registry and goes back on its queue as if new: the job's own dead-letter
verdict moves to ``previous_dead_letters`` and the job's next run begins (its end is published under an
``outcome_id`` of its own: :func:`veo_archiver.records.dead_letter.start_new_run`), the attempt history is
cleared, RQ's retry budget is restored (``retries_left`` back to the job's retry intervals,
``number_of_retries`` to 0, which is also what our own download-attempt limit counts), and the per-file
progress is kept so finished files are reused. Goes through RQ's own API (synchronous client).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job
from rq.registry import FailedJobRegistry
from rq.serializers import JSONSerializer

from veo_archiver import queue_view
from veo_archiver.clock import iso
from veo_archiver.records.dead_letter import (
    DeadLetter,
    dead_letter_of,
    readable_meta,
    start_new_run,
    unreadable_history,
)

log = logging.getLogger(__name__)

#: meta keys that describe a failed run; cleared when an operator requeues the job
CLEARED_META = ("dead_letter", "attempts", "crash_requeues")


@dataclass
class RetryReport:
    requeued: list[DeadLetter] = field(default_factory=list)
    #: (job id, why it was not requeued)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    dry_run: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "requeued": [letter.to_json() for letter in self.requeued],
            "skipped": [{"job_id": job_id, "why": why} for job_id, why in self.skipped],
        }


def select(
    connection: redis.Redis,
    queue_name: str,
    *,
    job_ids: Sequence[str] = (),
    reason: str | None = None,
    provider: str | None = None,
) -> tuple[list[DeadLetter], list[tuple[str, str]]]:
    """Dead letters named by id, or matching reason/provider (all of them when neither is given)."""
    if not job_ids:
        return queue_view.dead_letters(connection, queue_name, reason=reason, provider=provider), []
    failed = set(FailedJobRegistry(queue=queue_view.queue_of(connection, queue_name)).get_job_ids(cleanup=False))
    letters: list[DeadLetter] = []
    skipped: list[tuple[str, str]] = []
    for job_id, job in queue_view.fetch_jobs(connection, job_ids):
        if job is None:
            skipped.append((job_id, "no such job"))
        elif job_id not in failed:
            skipped.append((job_id, f"not in the failed registry (state {queue_view.state_of(job)})"))
        else:
            letters.append(dead_letter_of(job))
    return letters, skipped


def requeue(connection: redis.Redis, queue_name: str, job_id: str, *, default_retries: int) -> None:
    """Move one job from the failed registry back onto its queue with a fresh retry budget."""
    job = Job.fetch(job_id, connection=connection, serializer=JSONSerializer)
    readable = readable_meta(job.meta)  # read back through another serializer's wrapping (rq requeue, pickle)
    if readable is None:  # no reader understands it: rebuild from the envelope
        readable = {**_meta_from_envelope(job), **unreadable_history(iso(time.time()))}
    job.meta = readable
    start_new_run(job.meta)  # the verdict joins previous_dead_letters; the next end is published under a new id
    for name in CLEARED_META:
        job.meta.pop(name, None)
    job.retries_left = len(job.retry_intervals) if job.retry_intervals else default_retries
    job.number_of_retries = 0
    registry = FailedJobRegistry(queue=queue_view.queue_of(connection, queue_name))
    score = connection.zscore(registry.key, job_id)
    try:
        registry.requeue(job)  # saves the whole hash (meta included) and pushes the id on job.origin
    except (TypeError, ValueError, redis.RedisError) as exc:  # RQ removed it from the registry first: put it back
        if score is not None:
            connection.zadd(registry.key, {job_id: score})
        raise RequeueRefused(f"cannot requeue: {type(exc).__name__}: {exc}") from exc
    log.info("dead letter requeued by an operator", extra={"job_id": job_id})


class RequeueRefused(Exception):
    """The job could not be requeued; it stays in the failed registry."""


def _meta_from_envelope(job: Job) -> dict[str, Any]:
    try:
        envelope = job.kwargs.get("envelope") or {}
        event = envelope.get("event") or {}
        return {
            "provider": event.get("provider"),
            "task_id": event.get("task_id"),
            "delivery_id": envelope.get("delivery_id"),
        }
    except Exception:  # an unreadable job keeps an empty meta; the worker rebuilds it too
        return {}


def retry(
    connection: redis.Redis,
    queue_name: str,
    letters: Sequence[DeadLetter],
    *,
    default_retries: int,
    dry_run: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> RetryReport:
    report = RetryReport(dry_run=dry_run)
    for done, letter in enumerate(letters, start=1):
        if dry_run:
            report.requeued.append(letter)
        else:
            try:
                requeue(connection, queue_name, letter.job_id, default_retries=default_retries)
            except (InvalidJobOperation, NoSuchJobError):  # requeued or expired meanwhile
                report.skipped.append((letter.job_id, "left the failed registry meanwhile"))
            except RequeueRefused as exc:
                report.skipped.append((letter.job_id, str(exc)))
            else:
                report.requeued.append(letter)
        if progress is not None:
            progress(done, len(letters))
    return report
