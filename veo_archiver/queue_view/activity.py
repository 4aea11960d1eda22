"""What happened over time, as plans (:mod:`.plan`): refused callbacks (the last hour and day, and the latest
ones), per-minute rates over the last hour for the ops page's charts, and the latest operator actions.

All of it comes from data Redis already holds, read with bounded work:

- refusals: the per-minute and per-hour counter hashes and the capped list of
  :mod:`veo_archiver.records.refusals` (60 + 24 small ``HGETALL`` and one ``LRANGE``, one round trip);
- rates: ``veo:events`` (deliveries, by intake outcome) and ``veo:outcomes`` (archived, dead letters) have
  time-ordered ids, so the last hour is one ``XREVRANGE`` each, newest first, at most :data:`RATE_SCAN`
  entries: past that, the oldest minutes of the chart are not counted and :attr:`Rates.complete_from` says from
  which minute on the counts are whole.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from veo_archiver import redis_keys
from veo_archiver.queue_view.plan import Plan, command
from veo_archiver.records import ops_actions, refusals
from veo_archiver.records.ops_actions import OpsAction
from veo_archiver.records.refusals import RefusalSummary
from veo_archiver.text import text

#: stream entries read per chart series at most (the newest first)
RATE_SCAN = 2000
RECENT_ACTIONS = 20
MINUTES = refusals.HOUR_MINUTES


def refusals_plan(now: float) -> Plan[RefusalSummary]:
    minute_keys, hour_keys = refusals.minute_keys(now), refusals.hour_keys(now)
    replies = yield [
        *(command("hgetall", key) for key in minute_keys),
        *(command("hgetall", key) for key in hour_keys),
        command("lrange", redis_keys.REFUSALS_RECENT_LIST, 0, refusals.RECENT_MAX - 1),
    ]
    minutes, hours = replies[: len(minute_keys)], replies[len(minute_keys) : -1]
    return RefusalSummary.of(minutes, hours, replies[-1] or [])


@dataclass
class Rates:
    """Counts per minute over the last hour, oldest first; ``first_minute`` is the first one's epoch minute."""

    first_minute: int
    series: dict[str, list[int]] = field(default_factory=dict)
    #: per series: the first minute index whose count is whole (0 unless :data:`RATE_SCAN` was reached)
    complete_from: dict[str, int] = field(default_factory=dict)


def _per_minute(entries: Any, first: int, field_name: str, wanted: dict[str, str]) -> tuple[dict[str, list[int]], int]:
    """Count stream entries per minute into one series per ``wanted`` value of ``field_name``."""
    counts = {series: [0] * MINUTES for series in wanted.values()}
    oldest = None
    for entry_id, values in entries or []:
        minute = int(text(entry_id).partition("-")[0]) // 60_000
        oldest = minute
        value = text((values or {}).get(field_name.encode(), (values or {}).get(field_name, b"")))
        series = wanted.get(value)
        if series is not None and 0 <= minute - first < MINUTES:
            counts[series][minute - first] += 1
    # a full scan may have stopped inside a minute: that minute (and the older ones) are partial
    complete = 0 if len(entries or []) < RATE_SCAN or oldest is None else max(0, oldest - first + 1)
    return counts, complete


def rates_plan(now: float, per_minute_refusals: list[int]) -> Plan[Rates]:
    first = refusals.minute_of(now) - MINUTES + 1
    start = str(first * 60_000)
    events, outcomes = yield [
        command("xrevrange", redis_keys.events_stream(), max="+", min=start, count=RATE_SCAN),
        command("xrevrange", redis_keys.outcomes_stream(), max="+", min=start, count=RATE_SCAN),
    ]
    rates = Rates(first_minute=first)
    accepted, events_complete = _per_minute(events, first, "outcome", {"accepted": "accepted"})
    finished, outcomes_complete = _per_minute(
        outcomes, first, "outcome", {"archived": "archived", "dead_letter": "dead letters"}
    )
    rates.series = {**accepted, **finished, "refused": list(per_minute_refusals) or [0] * MINUTES}
    rates.complete_from = {
        "accepted": events_complete,
        "archived": outcomes_complete,
        "dead letters": outcomes_complete,
        "refused": 0,
    }
    return rates


def actions_plan(count: int = RECENT_ACTIONS) -> Plan[list[OpsAction]]:
    (raw,) = yield [command("lrange", redis_keys.OPS_ACTIONS_LIST, 0, count - 1)]
    found = (ops_actions.decode(item) for item in raw or [])
    return [a for a in found if a is not None]
