"""Operator actions, the only writes the operator CLI makes: requeue dead letters, replay a stored callback.

- **Requeue** takes jobs out of RQ's failed registry and puts them back on their queue as if new: the
  job's own dead-letter verdict and attempt history are cleared, RQ's retry budget is restored
  (``retries_left`` back to the job's retry intervals, ``number_of_retries`` to 0, which is also what our
  own download-attempt limit counts), and the per-file progress is kept so finished files are reused.
- **Replay** re-runs a delivery kept in ``veo:deliveries:*``: its raw body is parsed again by the provider
  module (no signature check: whoever can read Redis is trusted) and handed to the intake with
  ``replay=True``, which enqueues a *new* job even though the (provider, task, status) was accepted before.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis
import redis.asyncio as aioredis
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job
from rq.registry import FailedJobRegistry
from rq.serializers import JSONSerializer

from veo_archiver import clock, errors, queue_view, redis_keys
from veo_archiver.event import TaskEvent, Verification
from veo_archiver.intake import Delivery, Intake, IntakeResult
from veo_archiver.payload import decode_json_object
from veo_archiver.providers import NAMES, REGISTRY, standard
from veo_archiver.records import delivery as deliveries
from veo_archiver.records.dead_letter import DeadLetter, dead_letter_of
from veo_archiver.settings import Settings

log = logging.getLogger(__name__)

#: meta keys that describe a failed run; cleared when an operator requeues the job
CLEARED_META = ("dead_letter", "attempts", "crash_requeues")


# --------------------------------------------------------------------------------------------- requeue


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
    if "unserialized" in job.meta:  # re-saved by a tool with another serializer: rebuild from the envelope
        job.meta = _meta_from_envelope(job)
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


# --------------------------------------------------------------------------------------------- replay


@dataclass(frozen=True)
class ReplayPlan:
    provider: str
    task_id: str
    number: int  # as numbered by ``show``: 1 = the oldest delivery kept
    record: dict[str, Any]
    event: TaskEvent
    delivery: Delivery

    @property
    def job_id_pattern(self) -> str | None:
        if not self.event.status.terminal:
            return None
        event = self.event
        return redis_keys.job_id(event.provider, event.task_id, event.status.value) + "-replay-<random>"

    def to_json(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "task_id": self.task_id,
            "delivery": self.number,
            "delivery_id": self.record.get("delivery_id"),
            "received_at": self.record.get("callback", {}).get("received_at"),
            "original_outcome": self.record.get("outcome"),
            "event": self.event.to_json(),
            "job_id": self.job_id_pattern,
        }


def parse_stored(provider: str, record: dict[str, Any]) -> TaskEvent:
    """Parse a stored delivery's raw body again, as the receiver would, but with operator verification."""
    callback = record.get("callback") or {}
    decoded = decode_json_object(str(callback.get("body") or "").encode())
    if provider.startswith("standard-"):
        headers = {k.lower(): str(v) for k, v in (callback.get("headers") or {}).items()}
        extra = (record.get("event") or {}).get("extra") or {}
        webhook_id = headers.get("webhook-id") or str(extra.get("webhook_id") or "")
        return standard.parse(
            decoded,
            source=provider.removeprefix("standard-"),
            webhook_id=webhook_id,
            verification=Verification.OPERATOR,
        )
    spec = REGISTRY.get(provider)
    if spec is None:
        raise errors.NothingToDo(f"unknown provider {provider!r}: one of {', '.join(NAMES)} or standard-<source>")
    return spec.parse(decoded, verification=Verification.OPERATOR)


def plan_replay(connection: redis.Redis, provider: str, task_id: str, number: int | None = None) -> ReplayPlan:
    """Pick the delivery (``number`` as ``show`` prints it, default the newest terminal one) and parse it."""
    records = deliveries.stored(connection, provider, task_id)
    if not records:
        raise errors.NothingToDo(
            f"no stored delivery for {provider}/{task_id}: wrong id, or its record "
            f"({redis_keys.deliveries_key(provider, task_id)}) expired"
        )
    if number is None:
        # the newest terminal delivery that kept its raw body (past a task's byte budget records keep none)
        terminal = [n for n in deliveries.terminal_numbers(records) if _has_body(records[n - 1])]
        if not terminal:
            raise errors.NothingToDo(f"{provider}/{task_id} has no succeeded or failed delivery to replay")
        number = terminal[-1]
    if not 1 <= number <= len(records):
        raise errors.NothingToDo(f"{provider}/{task_id} has deliveries 1..{len(records)}, not {number}")
    record = records[number - 1]
    if not _has_body(record):
        raise errors.NothingToDo(
            f"delivery {number} of {provider}/{task_id} kept no raw body (the task's stored deliveries passed "
            "their byte budget): replay an earlier one, `veo-archiver show` lists them"
        )
    event = parse_stored(provider, record)
    if event.task_id != task_id or event.provider != provider:
        raise errors.NothingToDo(
            f"delivery {number} parses as {event.provider}/{event.task_id}, not {provider}/{task_id}"
        )
    if not event.status.terminal:
        raise errors.NothingToDo(f"delivery {number} reports status {event.status.value}: nothing to archive")
    callback = record.get("callback") or {}
    received = clock.epoch(callback.get("received_at"))
    delivery = Delivery(
        body=str(callback.get("body") or "").encode(),
        headers={str(k): str(v) for k, v in (callback.get("headers") or {}).items()},
        # the callback's own arrival time: URL deadlines are counted from it, not from the replay
        received_at=received if received is not None else 0.0,
        remote=callback.get("remote"),
        path=str(callback.get("path") or ""),
    )
    return ReplayPlan(provider=provider, task_id=task_id, number=number, record=record, event=event, delivery=delivery)


async def _submit(settings: Settings, plan: ReplayPlan) -> IntakeResult:
    client = aioredis.Redis.from_url(
        settings.redis_url, socket_timeout=settings.enqueue_timeout_s, socket_connect_timeout=2.0
    )
    try:
        intake = Intake(settings, client)
        await intake.start()
        return await intake.submit(plan.event, plan.delivery, replay=True)
    finally:
        await client.aclose()


def replay(settings: Settings, plan: ReplayPlan) -> IntakeResult:
    """Enqueue the planned delivery as a new job (the intake is async; the CLI is not)."""
    result = asyncio.run(_submit(settings, plan))
    log.info(
        "callback replayed by an operator",
        extra={"provider": plan.provider, "task_id": plan.task_id, "job_id": result.job_id},
    )
    return result


def _has_body(record: dict[str, Any]) -> bool:
    callback = record.get("callback")
    return isinstance(callback, dict) and isinstance(callback.get("body"), str)
