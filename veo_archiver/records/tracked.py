"""Tracked tasks: tasks whose callback we expect (``veo-archiver track``, ``POST /tasks``). The one writer and
reader of the tracked sorted set (:func:`veo_archiver.redis_keys.tracked_zset`).

A member is :func:`veo_archiver.redis_keys.tracked_member` (the JSON array ``[provider, task_id]``), scored by
the first registration time: :func:`register` adds with ``ZADD NX``, so registering again keeps it. A task
leaves the set when the worker archives it (:func:`veo_archiver.records.outcome.publish` calls
:func:`remove`) or when the sweep (:mod:`workers.reconcile`) finds it finished or unknown to its provider.
A member this version cannot decode is skipped by every listing (:func:`decode` returns None), never fatal.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from veo_archiver import redis_keys
from veo_archiver.clock import iso
from veo_archiver.errors import InvalidPayload
from veo_archiver.providers import NAMES as PROVIDERS
from veo_archiver.providers import REGISTRY
from veo_archiver.settings import Settings
from veo_archiver.text import text

MAX_TASK_ID_CHARS = 512


@dataclass(frozen=True)
class TaskRef:
    provider: str
    task_id: str

    @property
    def member(self) -> str:
        return redis_keys.tracked_member(self.provider, self.task_id)


@dataclass(frozen=True)
class Registration:
    provider: str
    task_id: str
    registered_at: float
    new: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "task_id": self.task_id,
            "registered_at": iso(self.registered_at),
            "new": self.new,
        }


@dataclass(frozen=True)
class Tracked:
    provider: str
    task_id: str
    registered_at: float
    member: str  # the raw member, to remove or score it elsewhere (the sweep's poll times)


# --------------------------------------------------------------------------------------------- checks


def check_provider(settings: Settings, provider: str) -> None:
    """The provider must be known and have a status API key: the sweep polls with it."""
    if provider not in PROVIDERS:
        raise InvalidPayload(
            f"unknown provider {provider!r}; expected one of {', '.join(PROVIDERS)}", reason="unknown_provider"
        )
    configured = settings.providers.get(provider)
    if configured is None or not configured.api_key:
        raise InvalidPayload(
            f"{provider} has no status API key, so its tasks cannot be polled: set {REGISTRY[provider].api_key_var}",
            reason="no_api_key",
        )


def check_task_id(task_id: object, where: str = "task_id") -> str:
    if not isinstance(task_id, str) or not task_id.strip():
        raise InvalidPayload(f"{where}: expected a non-empty string", reason="invalid_task_id")
    if len(task_id) > MAX_TASK_ID_CHARS:
        raise InvalidPayload(f"{where}: longer than {MAX_TASK_ID_CHARS} characters", reason="invalid_task_id")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in task_id):
        raise InvalidPayload(f"{where}: contains control characters", reason="invalid_task_id")
    return task_id


# --------------------------------------------------------------------------------------------- write


def register(connection: redis.Redis, tasks: Sequence[TaskRef], *, now: float) -> list[Registration]:
    """Add the tasks to the tracked zset (``NX``: a task keeps its first registration time)."""
    if not tasks:
        return []
    members = [t.member for t in tasks]
    pipe = connection.pipeline(transaction=True)
    for member in members:
        pipe.zadd(redis_keys.tracked_zset(), {member: now}, nx=True)
    pipe.zmscore(redis_keys.tracked_zset(), members)
    replies = pipe.execute()
    added, scores = replies[:-1], replies[-1]
    return [
        Registration(t.provider, t.task_id, float(score if score is not None else now), bool(new))
        for t, new, score in zip(tasks, added, scores, strict=True)
    ]


def remove(connection: redis.Redis, *members: str) -> None:
    """Untrack raw members (see :attr:`TaskRef.member`); on a pipeline, queued with the caller's commands."""
    if members:
        connection.zrem(redis_keys.tracked_zset(), *members)


# --------------------------------------------------------------------------------------------- read


def ref(member: bytes | str) -> TaskRef | None:
    """The task of a member; None for one this version did not write (or an empty provider/task id)."""
    decoded = redis_keys.tracked_task(member)
    if decoded is None or not all(decoded):
        return None
    return TaskRef(*decoded)


def decode(member: bytes | str, score: float) -> Tracked | None:
    task = ref(member)
    if task is None:
        return None
    return Tracked(provider=task.provider, task_id=task.task_id, registered_at=float(score), member=text(member))


def decode_all(entries: Iterable[tuple[Any, Any]]) -> list[Tracked]:
    """``ZRANGE … WITHSCORES`` replies (sync or async client) as tasks; undecodable members skipped."""
    out = []
    for member, score in entries or []:
        task = decode(member, float(score))
        if task is not None:
            out.append(task)
    return out


def listing(connection: redis.Redis, limit: int, *, offset: int = 0) -> list[Tracked]:
    """Tracked tasks, oldest registration first."""
    entries: Any = connection.zrange(redis_keys.tracked_zset(), offset, offset + limit - 1, withscores=True)
    return decode_all(entries)


def registered_before(connection: redis.Redis, before: float) -> list[tuple[str, float]]:
    """Raw ``(member, registered_at)`` of every task registered at or before ``before`` (the sweep decodes
    them itself: it drops undecodable members instead of skipping them)."""
    entries: Any = connection.zrangebyscore(redis_keys.tracked_zset(), "-inf", before, withscores=True)
    return [(text(member), float(score)) for member, score in entries or []]


def oldest(connection: redis.Redis) -> Tracked | None:
    """The longest-waiting task that decodes (an undecodable head is skipped)."""
    offset = 0
    while True:
        entries: Any = connection.zrange(redis_keys.tracked_zset(), offset, offset + 99, withscores=True)
        found = decode_all(entries)
        if found or len(entries or []) < 100:
            return found[0] if found else None
        offset += 100


def count(connection: redis.Redis, *, before: float | None = None) -> int:
    """How many tasks are tracked (registered at or before ``before``, when given)."""
    if before is None:
        return int(connection.zcard(redis_keys.tracked_zset()))
    return int(connection.zcount(redis_keys.tracked_zset(), 0, before))


def since(connection: redis.Redis, provider: str, task_id: str) -> float | None:
    """When the task was registered; None when it is not tracked."""
    score = connection.zscore(redis_keys.tracked_zset(), redis_keys.tracked_member(provider, task_id))
    return None if score is None else float(score)


def registration_times(connection: redis.Redis, members: Sequence[str]) -> list[float | None]:
    if not members:
        return []
    scores: Any = connection.zmscore(redis_keys.tracked_zset(), list(members))
    return [None if s is None else float(s) for s in scores]


def any_tracked(connection: redis.Redis) -> bool:
    return bool(connection.exists(redis_keys.tracked_zset()))
