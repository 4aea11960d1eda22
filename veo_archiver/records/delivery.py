"""Stored deliveries: every callback we accepted for a task (raw body + non-secret headers), kept for replay
and audit in ``veo:deliveries:<provider>:<digest>`` (:func:`veo_archiver.redis_keys.deliveries_key`), oldest
first. The one reader.

The writer is the intake's Lua script; the format (a record JSON with its outcome beside it) is declared in
:mod:`veo_archiver.intake_format`, and a record reads as::

    {"delivery_id", "event": {provider, task_id, status, verification…},
     "callback": {"received_at", "remote", "path", "headers", "body"},
     "replayed_at"?,  "outcome": "accepted|duplicate|conflict|recorded|replayed", "job_id": str | null}

The task's list keeps its newest ``DELIVERIES_PER_TASK`` records (an audit log, trimmed freely). A delivery
that created a job also stored its record under its own key, where the job reads its raw callback
(:func:`for_job`).
"""

from __future__ import annotations

from typing import Any

import redis

from veo_archiver import redis_keys
from veo_archiver.intake_format import ENVELOPE_VERSION, decode_entry

TERMINAL = ("succeeded", "failed")


def decode(raw: bytes | str) -> dict[str, Any] | None:
    """One stored record; None when it is unreadable (never raises)."""
    return decode_entry(raw)


def stored(connection: redis.Redis, provider: str, task_id: str) -> list[dict[str, Any]]:
    """The task's delivery records, oldest first, as the intake wrote them (unreadable ones skipped)."""
    raw: Any = connection.lrange(redis_keys.deliveries_key(provider, task_id), 0, -1)
    return [record for record in (decode(item) for item in raw or []) if record is not None]


def find(connection: redis.Redis, provider: str, task_id: str, delivery_id: str) -> dict[str, Any] | None:
    """The record of one delivery: its own key (a delivery that created a job), else the task's list; None
    once it expired or was trimmed."""
    raw: Any = connection.get(redis_keys.delivery_record_key(delivery_id))
    if raw is not None:
        return decode(raw)
    for record in stored(connection, provider, task_id):
        if record.get("delivery_id") == delivery_id:
            return record
    return None


def for_job(connection: redis.Redis, envelope: dict[str, Any]) -> dict[str, Any] | None:
    """The delivery record an archive job reads its raw callback from (a version-1 job carries it instead).

    Version 3 reads its own key only; a version-2 job, queued by the previous intake, looks there (where a
    record was parked once its list was full) and then in the task's list."""
    delivery_id = str(envelope["delivery_id"])
    if envelope.get("v") == ENVELOPE_VERSION:
        raw: Any = connection.get(redis_keys.delivery_record_key(delivery_id))
        return decode(raw) if raw is not None else None
    event = envelope.get("event") or {}
    return find(connection, str(event.get("provider")), str(event.get("task_id")), delivery_id)


def status_of(record: dict[str, Any]) -> str | None:
    """The task status the delivery reported."""
    event = record.get("event")
    status = event.get("status") if isinstance(event, dict) else None
    return str(status) if status is not None else None


def terminal_numbers(records: list[dict[str, Any]]) -> list[int]:
    """Delivery numbers (1 = oldest kept) that reported a terminal status, for replay."""
    return [n for n, record in enumerate(records, start=1) if status_of(record) in TERMINAL]
