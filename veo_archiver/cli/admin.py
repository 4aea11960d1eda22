"""Operator actions, the only writes the operator CLI makes: requeue dead letters (:mod:`veo_archiver.requeue`,
shared with the ops page), replay a stored callback.

- **Replay** re-runs a delivery kept in ``veo:deliveries:*``: its raw body is parsed again by the provider
  module (no signature check: whoever can read Redis is trusted) and handed to the intake with
  ``replay=True``, which enqueues a *new* job even though the (provider, task, status) was accepted before.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio as aioredis

from veo_archiver import clock, errors, redis_keys
from veo_archiver.event import TaskEvent, Verification
from veo_archiver.intake import Delivery, Intake, IntakeResult
from veo_archiver.payload import decode_json_object
from veo_archiver.providers import NAMES, REGISTRY, standard
from veo_archiver.records import delivery as deliveries
from veo_archiver.settings import Settings

log = logging.getLogger(__name__)

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
