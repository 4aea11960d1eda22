"""Refused callbacks: what an operator needs to tell a misconfigured key at a provider from an attack. The one
home of the format; the receiver writes (:mod:`receiver.refusal_log`), :mod:`veo_archiver.queue_view` reads
for ``status``, ``/ops`` and ``/metrics``.

Three kinds of keys (:mod:`veo_archiver.redis_keys`), all bounded:

- ``veo:refusals:m:<minute>``: hash ``provider|reason`` -> count for one minute, kept :data:`MINUTE_TTL_S`;
- ``veo:refusals:h:<hour>``: the same per hour, kept :data:`HOUR_TTL_S` (the "last day" figures);
- ``veo:refusals:recent``: the latest :data:`RECENT_MAX` refusals, newest first, each one JSON object::

      {"v": 1, "at": <epoch s>, "provider", "reason", "status": <HTTP status>, "remote": <client address>,
       "path": <request path, no query>, "task_id": <when the body named one> | null}

No secret and no body is ever recorded: the query string (where callback-URL tokens live) is not the path,
and every text field is cut to :data:`FIELD_CHARS`. A provider or reason is a label of the counters: callers
pass a known provider name (or :data:`UNKNOWN`) and the error's own reason, never request text.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from veo_archiver import redis_keys
from veo_archiver.text import text

VERSION = 1
RECENT_MAX = 50
MINUTE_TTL_S = 2 * 3600
HOUR_TTL_S = 26 * 3600
FIELD_CHARS = 200
#: the provider label of a callback to a provider this receiver does not know
UNKNOWN = "unknown"
HOUR_MINUTES = 60
DAY_HOURS = 24


@dataclass(frozen=True)
class Refusal:
    at: float
    provider: str
    reason: str
    status: int
    remote: str | None = None
    path: str | None = None
    task_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "v": VERSION,
            "at": round(self.at, 3),
            "provider": self.provider,
            "reason": self.reason,
            "status": self.status,
            "remote": self.remote,
            "path": self.path,
            "task_id": self.task_id,
        }


def _cut(value: object) -> str | None:
    return None if value is None else text(value)[:FIELD_CHARS]


def encode(refusal: Refusal) -> str:
    return json.dumps(refusal.to_json(), separators=(",", ":"))


def decode(raw: bytes | str) -> Refusal | None:
    """One entry of the recent list; None for anything this version did not write (never raises)."""
    try:
        value = json.loads(raw)
        if not isinstance(value, dict) or value.get("v") != VERSION:
            return None
        return Refusal(
            at=float(value["at"]),
            provider=str(value["provider"]),
            reason=str(value["reason"]),
            status=int(value["status"]),
            remote=_cut(value.get("remote")),
            path=_cut(value.get("path")),
            task_id=_cut(value.get("task_id")),
        )
    except (ValueError, TypeError, KeyError, UnicodeDecodeError):
        return None


def of_task(recent: Iterable[bytes | str], provider: str, task_id: str) -> list[Refusal]:
    """The refusals in ``recent`` (the capped list's items) that named this task, newest first."""
    found = (decode(item) for item in recent)
    return [r for r in found if r is not None and r.provider == provider and r.task_id == task_id]


def counter_field(provider: str, reason: str) -> str:
    return f"{provider[:64]}|{reason[:64]}"


def minute_of(ts: float) -> int:
    return int(ts // 60)


def hour_of(ts: float) -> int:
    return int(ts // 3600)


def queue_write(pipe: Any, batch: Sequence[Refusal]) -> None:
    """Queue the writes of a batch of refusals on a pipeline (redis-py's sync or async one: queuing is
    synchronous): one ``HINCRBY`` per counter touched, whatever the batch's size, and one ``LPUSH``."""
    if not batch:
        return
    counts: Counter[tuple[str, str]] = Counter()
    ttls: dict[str, int] = {}
    for refusal in batch:
        name = counter_field(refusal.provider, refusal.reason)
        minute = redis_keys.refusals_minute_key(minute_of(refusal.at))
        hour = redis_keys.refusals_hour_key(hour_of(refusal.at))
        counts[(minute, name)] += 1
        counts[(hour, name)] += 1
        ttls[minute], ttls[hour] = MINUTE_TTL_S, HOUR_TTL_S
    for (key, name), n in counts.items():
        pipe.hincrby(key, name, n)
    for key, ttl in ttls.items():
        pipe.expire(key, ttl)
    pipe.lpush(redis_keys.REFUSALS_RECENT_LIST, *(encode(r) for r in batch[-RECENT_MAX:]))  # newest ends first
    pipe.ltrim(redis_keys.REFUSALS_RECENT_LIST, 0, RECENT_MAX - 1)


def minute_keys(now: float, minutes: int = HOUR_MINUTES) -> list[str]:
    """The per-minute hashes of the last ``minutes`` minutes, oldest first (the current minute last)."""
    current = minute_of(now)
    return [redis_keys.refusals_minute_key(m) for m in range(current - minutes + 1, current + 1)]


def hour_keys(now: float, hours: int = DAY_HOURS) -> list[str]:
    """The per-hour hashes of the last ``hours`` hours, oldest first (the current hour last)."""
    current = hour_of(now)
    return [redis_keys.refusals_hour_key(h) for h in range(current - hours + 1, current + 1)]


def tally(hashes: Iterable[Mapping[Any, Any] | None]) -> dict[str, dict[str, int]]:
    """``{provider: {reason: count}}`` summed over counter hashes as Redis returns them."""
    out: dict[str, dict[str, int]] = {}
    for raw in hashes:
        for name, value in (raw or {}).items():
            provider, sep, reason = text(name).partition("|")
            try:
                count = int(text(value))
            except ValueError:
                continue
            if sep:
                by_reason = out.setdefault(provider, {})
                by_reason[reason] = by_reason.get(reason, 0) + count
    return out


def total(hashes: Mapping[Any, Any] | None) -> int:
    """All refusals in one counter hash."""
    return sum(count for by_reason in tally([hashes]).values() for count in by_reason.values())


@dataclass
class RefusalSummary:
    """Refusals over the last hour and the last day, by provider and reason, and the latest few."""

    last_hour: dict[str, dict[str, int]] = field(default_factory=dict)
    last_day: dict[str, dict[str, int]] = field(default_factory=dict)
    #: refusals per minute over the last hour, oldest first (the ops page's chart)
    per_minute: list[int] = field(default_factory=list)
    recent: list[Refusal] = field(default_factory=list)

    @property
    def hour_total(self) -> int:
        return sum(n for by_reason in self.last_hour.values() for n in by_reason.values())

    def hour_by_reason(self) -> dict[str, int]:
        """The last hour's refusals by reason (all providers), most frequent first."""
        counts: dict[str, int] = {}
        for by_reason in self.last_hour.values():
            for reason, n in by_reason.items():
                counts[reason] = counts.get(reason, 0) + n
        return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))

    def for_task(self, provider: str, task_id: str) -> list[Refusal]:
        return [r for r in self.recent if r.provider == provider and r.task_id == task_id]

    def to_json(self) -> dict[str, Any]:
        return {
            "last_hour": self.last_hour,
            "last_day": self.last_day,
            "last_hour_total": self.hour_total,
            "recent": [r.to_json() for r in self.recent],
        }

    @classmethod
    def of(cls, minutes: list[Any], hours: list[Any], recent: Iterable[bytes | str]) -> RefusalSummary:
        """From the replies to ``HGETALL`` of :func:`minute_keys`, of :func:`hour_keys` and ``LRANGE`` of the list."""
        found = (decode(raw) for raw in recent)
        return cls(
            last_hour=tally(minutes),
            last_day=tally(hours),
            per_minute=[total(raw) for raw in minutes],
            recent=[r for r in found if r is not None],
        )
