"""Tasks submitted through the archiver, and the lineage of extensions: the one writer and reader of
``veo:submission:<provider>:<digest>`` (:func:`veo_archiver.redis_keys.submission_key`).

A record is written by :mod:`veo_archiver.submit` once the provider accepted a task::

    {"provider": "kie", "task_id": "...", "operation": "generate" | "extend" | "4k",
     "submitted_at": "...Z", "extends": {"provider": "kie", "task_id": "<parent>"} | null}

No callback says which task an extension continues; this record is where the archive job finds it
(:func:`extends_of`) to write ``extends`` into the child's manifest and outcome entry. It lives
``SUBMISSION_TTL_S`` (30 days: longer than any provider keeps its results, so a child is archived, or given
up, well before its record expires).

The parent's manifest key is added to ``extends`` only when the parent is already archived as the child is;
a parent archived later is found at read time (``veo-archiver show`` walks the chain through the archive,
whose manifest keys are a function of provider and task id: :func:`veo_archiver.archive_keys.manifest_key`).
useapi.net's extend names its parent by ``mediaGenerationId`` (not a job id), so a useapi.net parent is
recorded by that id and its manifest is not looked up.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import redis

from veo_archiver import redis_keys
from veo_archiver.clock import iso

SUBMISSION_TTL_S = 30 * 24 * 3600


@dataclass(frozen=True)
class Submission:
    provider: str
    task_id: str
    operation: str
    submitted_at: float
    #: the task this one extends (same provider), for an extend
    parent: str | None = None

    def extends(self) -> dict[str, str] | None:
        return None if self.parent is None else {"provider": self.provider, "task_id": self.parent}

    def to_json(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "task_id": self.task_id,
            "operation": self.operation,
            "submitted_at": iso(self.submitted_at),
            "extends": self.extends(),
        }


def record(connection: redis.Redis, submission: Submission, *, ttl_s: int = SUBMISSION_TTL_S) -> None:
    """Store (or replace) the submission record; on a pipeline, queued with the caller's commands."""
    connection.set(
        redis_keys.submission_key(submission.provider, submission.task_id),
        json.dumps(submission.to_json(), separators=(",", ":")),
        ex=ttl_s,
    )


def find(connection: redis.Redis, provider: str, task_id: str) -> dict[str, Any] | None:
    """The task's submission record as stored; None when it was not submitted here (or expired, or unreadable)."""
    raw: Any = connection.get(redis_keys.submission_key(provider, task_id))
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None


def extends_of(connection: redis.Redis, provider: str, task_id: str) -> dict[str, str] | None:
    """``{"provider", "task_id"}`` of the task this one extends; None when it extends none we know of."""
    found = find(connection, provider, task_id)
    parent = found.get("extends") if found else None
    if not isinstance(parent, dict):
        return None
    if not isinstance(parent.get("provider"), str) or not isinstance(parent.get("task_id"), str):
        return None
    return {"provider": parent["provider"], "task_id": parent["task_id"]}
