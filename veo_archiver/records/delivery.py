"""Stored deliveries: every callback we accepted for a task (raw body + non-secret headers), kept for replay
and audit in ``veo:deliveries:<provider>:<digest>`` (:func:`veo_archiver.redis_keys.deliveries_key`), oldest
first. The one reader.

The writer is the intake's Lua script (:mod:`veo_archiver.intake`): one JSON object per delivery, trimmed to
the newest ``DELIVERIES_PER_TASK`` with a TTL::

    {"delivery_id", "event": {provider, task_id, status, verification…},
     "callback": {"received_at", "remote", "path", "headers", "body"},
     "replayed_at"?,  "outcome": "accepted|duplicate|recorded|replayed", "job_id": str | null}

A record is the one stored copy of its raw callback: the archive job of an accepted delivery carries only its
``delivery_id`` and reads the callback from here (:func:`find`) when it runs. When a task's list passes the cap,
the oldest records go; one that created a job is parked under ``veo:delivery:<delivery_id>``
(:func:`veo_archiver.redis_keys.parked_delivery_key`, same TTL) so that its job still finds it.
"""

from __future__ import annotations

import json
from typing import Any

import redis

from veo_archiver import redis_keys

TERMINAL = ("succeeded", "failed")


def decode(raw: bytes | str) -> dict[str, Any] | None:
    """One stored record; None when it is not a JSON object (never raises)."""
    try:
        record = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    return record if isinstance(record, dict) else None


def stored(connection: redis.Redis, provider: str, task_id: str) -> list[dict[str, Any]]:
    """The task's delivery records, oldest first, as the intake wrote them (unreadable ones skipped)."""
    raw: Any = connection.lrange(redis_keys.deliveries_key(provider, task_id), 0, -1)
    return [record for record in (decode(item) for item in raw or []) if record is not None]


def find(connection: redis.Redis, provider: str, task_id: str, delivery_id: str) -> dict[str, Any] | None:
    """The record of one delivery: in the task's list, else parked (see above); None once it expired."""
    for record in stored(connection, provider, task_id):
        if record.get("delivery_id") == delivery_id:
            return record
    raw: Any = connection.get(redis_keys.parked_delivery_key(delivery_id))
    return decode(raw) if raw is not None else None


def status_of(record: dict[str, Any]) -> str | None:
    """The task status the delivery reported."""
    event = record.get("event")
    status = event.get("status") if isinstance(event, dict) else None
    return str(status) if status is not None else None


def terminal_numbers(records: list[dict[str, Any]]) -> list[int]:
    """Delivery numbers (1 = oldest kept) that reported a terminal status, for replay."""
    return [n for n, record in enumerate(records, start=1) if status_of(record) in TERMINAL]
