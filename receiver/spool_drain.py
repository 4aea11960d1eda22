"""Replaying the spool (:mod:`receiver.spool`) into the intake, so that no entry can hold up the others.

:func:`drain` submits the waiting entries in arrival order and deletes each once its submit succeeded. When a
submit fails, the connection decides what it means, never the failure itself (:func:`redis_health`):

- Redis is down (PING fails), or it answers but refuses writes (a tiny ``SET`` fails: out of memory, a
  read-only replica, a failed save): the pass stops and nothing is counted against the entry; the next pass
  (every second) tries again from the oldest entry.
- Redis answers and takes writes: the entry is tried once more at once (the first failure may be the
  connection an earlier entry broke: Redis closes it after a protocol error). Failing again, it failed on its
  own (a bulk over ``proto-max-bulk-len``, a task id its key cannot be built from, a bug). The failure is
  recorded beside the entry (its ``.tries``, which survives a restart) with a backoff before its next try
  (``RetryPolicy``: 1, 2, 4, 8 s by default); the pass goes on with the entries behind it, in order. At
  ``RetryPolicy.max_attempts`` failures the entry is moved to ``quarantine/`` with its reason, logged at
  WARNING and counted; an operator puts it back with ``veo-archiver spool requeue`` once the cause is fixed.
- An entry that cannot be read or decoded goes to ``rejected/`` at once (nothing can ever replay it).

If a move to ``rejected/`` or ``quarantine/`` fails (the disk), the entry stays waiting and the pass goes on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import redis
import redis.asyncio as aioredis

from receiver.spool import CorruptEntry, Spool, decode_entry
from receiver.spool_files import Attempts, SpoolEntry
from veo_archiver import redis_keys
from veo_archiver.errors import ArchiverError
from veo_archiver.intake import Intake, IntakeResult

__all__ = ["RedisHealth", "RetryPolicy", "SpoolDrainer", "drain", "redis_health"]

log = logging.getLogger(__name__)

#: how long the write probe's key lives (it holds a timestamp; nothing reads it)
CANARY_TTL_MS = 60_000


@dataclass(frozen=True)
class RetryPolicy:
    """How often an entry that fails on its own is tried before it is quarantined, and how far apart."""

    max_attempts: int = 5
    first_delay_s: float = 1.0
    max_delay_s: float = 60.0

    def delay_s(self, failures: int) -> float:
        """The wait after the ``failures``-th failure: doubling from ``first_delay_s``, capped."""
        return min(self.max_delay_s, self.first_delay_s * 2.0 ** max(0, failures - 1))


class RedisHealth(StrEnum):
    UP = "up"
    #: PING fails: nothing can be submitted
    DOWN = "down"
    #: PING answers but a write is refused: a failed submit says nothing about its entry
    REFUSING = "refusing"


Submit = Callable[[bytes], Awaitable[Any]]
Health = Callable[[], Awaitable[RedisHealth]]


async def redis_health(intake: Intake, client: aioredis.Redis | None) -> RedisHealth:
    """PING through the intake's client; then, with ``client``, one small write (Redis may answer PING and
    refuse every write: OOM under ``noeviction``, ``READONLY``, ``MISCONF``)."""
    if not await intake.ping():
        return RedisHealth.DOWN
    if client is not None:
        try:
            await client.set(redis_keys.SPOOL_WRITE_PROBE, str(time.time()), px=CANARY_TTL_MS)
        except redis.RedisError as exc:
            log.warning("spool: Redis answers PING but refuses a write; not draining", extra={"error": str(exc)})
            return RedisHealth.REFUSING
    return RedisHealth.UP


def _describe(exc: BaseException) -> tuple[str, str]:
    """(reason, error) of a failed submit: an ArchiverError's reason, else the exception's type."""
    reason = exc.reason if isinstance(exc, ArchiverError) else type(exc).__name__
    return reason, f"{type(exc).__name__}: {exc}"


async def drain(
    spool: Spool,
    submit: Submit,
    health: Health,
    *,
    policy: RetryPolicy = RetryPolicy(),
    clock: Callable[[], float] = time.time,
    on_quarantine: Callable[[str], None] = lambda reason: None,
) -> int:
    """Submit the waiting entries in order; return how many were submitted (and removed). See the module."""
    submitted = 0
    with spool.draining() as mine:
        if not mine:
            return 0
        tries = spool.attempts()
        for entry in spool.pending():
            earlier = tries.get(entry.name, Attempts())
            if earlier.not_before > clock():
                continue  # backing off after its own failure; the entries behind it go on
            try:
                data = entry.path.read_bytes()
            except FileNotFoundError:
                continue
            except OSError as exc:
                _set_aside(spool.reject, entry, f"unreadable: {exc}")
                continue
            try:
                failure = await _submit_twice(submit, data, health)
            except CorruptEntry as exc:
                _set_aside(spool.reject, entry, exc.message)
                continue
            except _RedisUnavailable:
                break  # Redis cannot take anything now: keep every entry, count nothing
            if failure is not None:
                _failed_alone(spool, entry, earlier, failure, policy, clock(), on_quarantine)
                continue
            spool.remove(entry)
            submitted += 1
    return submitted


class _RedisUnavailable(Exception):
    pass


async def _submit_twice(submit: Submit, data: bytes, health: Health) -> Exception | None:
    """None once ``data`` is submitted; the error when it failed twice in a row while Redis answered (the
    second try, at once, spares an entry the failure of a connection an earlier entry broke)."""
    failure: Exception | None = None
    for _ in range(2):
        try:
            await submit(data)
        except CorruptEntry:
            raise
        except Exception as exc:  # whatever it is, one entry must not stop the others
            if await health() is not RedisHealth.UP:
                raise _RedisUnavailable from exc
            failure = exc
            continue
        return None
    return failure


def _failed_alone(
    spool: Spool,
    entry: SpoolEntry,
    earlier: Attempts,
    exc: Exception,
    policy: RetryPolicy,
    now: float,
    on_quarantine: Callable[[str], None],
) -> None:
    reason, error = _describe(exc)
    attempts = earlier.after_failure(now, reason, error, policy.delay_s(earlier.count + 1))
    fields = {"entry": entry.name, "reason": reason, "error": error[:500], "attempts": attempts.count}
    if attempts.count < policy.max_attempts:
        log.warning(
            "spool: entry failed while Redis answers; retrying it later, the entries behind it go on",
            extra={**fields, "retry_in_s": round(attempts.not_before - now, 3)},
            exc_info=exc if attempts.count == 1 and not isinstance(exc, ArchiverError) else None,
        )
        try:
            spool.record_failure(entry, attempts)
        except OSError as write_error:  # only costs the count: it is tried again at the next pass
            log.error("spool: cannot record a failed attempt", extra={**fields, "detail": str(write_error)})
        return
    record = {**fields, "quarantined_at": round(now, 3), "errors": list(attempts.errors)}
    if _set_aside(lambda e, _: spool.quarantine(e, record), entry, reason):
        on_quarantine(reason)


def _set_aside(move: Callable[[SpoolEntry, str], object], entry: SpoolEntry, why: str) -> bool:
    try:
        move(entry, why)
    except OSError as exc:
        log.error(
            "spool: cannot move an entry aside; it stays waiting", extra={"entry": entry.name, "detail": str(exc)}
        )
        return False
    return True


class SpoolDrainer:
    """Replays a spool through an :class:`Intake`; the app's lifespan calls :meth:`run` (tests :meth:`run_once`)."""

    def __init__(self, spool: Spool, *, policy: RetryPolicy = RetryPolicy()) -> None:
        self.spool = spool
        self.policy = policy
        self._lock = asyncio.Lock()
        #: outcome of each replayed entry (accepted, duplicate, recorded), for logs and /metrics
        self.outcomes: dict[str, int] = {}
        #: entries this process quarantined, by reason (/metrics: spool_quarantined_total)
        self.quarantined: dict[str, int] = {}

    def _count_quarantine(self, reason: str) -> None:
        self.quarantined[reason] = self.quarantined.get(reason, 0) + 1

    async def run_once(self, intake: Intake, client: aioredis.Redis | None = None) -> int:
        """Submit what is waiting; return how many entries went to Redis. ``client`` (the intake's) lets the
        drain tell "Redis refuses writes" from "this entry fails" (:func:`redis_health`)."""

        async def submit(data: bytes) -> IntakeResult:
            event, delivery = decode_entry(data)
            result = await intake.submit(event, delivery)
            self.outcomes[result.outcome] = self.outcomes.get(result.outcome, 0) + 1
            return result

        async def health() -> RedisHealth:
            return await redis_health(intake, client)

        async with self._lock:
            done = await drain(self.spool, submit, health, policy=self.policy, on_quarantine=self._count_quarantine)
        if done:
            count, size = self.spool.depth()
            log.info("spool drained", extra={"submitted": done, "waiting": count, "waiting_bytes": size})
        return done

    async def run(self, intake: Intake, client: aioredis.Redis | None = None, *, interval_s: float = 1.0) -> None:
        """Drain every ``interval_s`` while anything waits; until cancelled (the lifespan's task).

        It also drains when the directory changed although this process counted nothing (another receiver
        sharing the directory spooled, an operator requeued), and every 30th turn in any case."""
        turn = 0
        while True:
            turn += 1
            if self.spool.depth()[0] or self.spool.changed() or turn % 30 == 0:
                try:
                    await self.run_once(intake, client)
                except Exception:  # keep draining later; a bug here must not stop the receiver
                    log.exception("spool: drain failed")
            await asyncio.sleep(interval_s)
