"""Refused callbacks recorded in Redis for operators (``status``, ``/ops``, ``/metrics``), best effort.

A refusal is answered first and recorded after, off its request: :meth:`RefusalLog.record` appends to an
in-memory batch (bounded by :data:`MAX_PENDING`; past it, refusals are only counted in :attr:`dropped`) and a
single background writer flushes the batch in one pipeline (:func:`veo_archiver.records.refusals.queue_write`:
one ``HINCRBY`` per counter touched, however many refusals the batch holds). So a flood of forged callbacks
costs one small write at a time and one Redis connection at most, and a Redis outage never turns a refusal
into a 500 nor holds it up: the write fails, is logged at DEBUG, and the batch is dropped.
"""

from __future__ import annotations

import asyncio
import logging

import redis
import redis.asyncio as aioredis

from veo_archiver.records import refusals
from veo_archiver.records.refusals import Refusal

log = logging.getLogger(__name__)

#: refusals waiting for the writer at most; past it they are dropped (counted)
MAX_PENDING = 10_000


class RefusalLog:
    def __init__(self, *, max_pending: int = MAX_PENDING) -> None:
        self.max_pending = max_pending
        self.dropped = 0
        self._pending: list[Refusal] = []
        self._writer: asyncio.Task[None] | None = None

    def record(self, client: aioredis.Redis | None, refusal: Refusal) -> None:
        """Queue ``refusal`` for the writer; never raises, never waits."""
        if client is None:
            return
        if len(self._pending) >= self.max_pending:
            self.dropped += 1
            return
        self._pending.append(refusal)
        if self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(self._flush(client), name="veo-refusal-log")

    async def _flush(self, client: aioredis.Redis) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                try:
                    async with client.pipeline(transaction=False) as pipe:
                        refusals.queue_write(pipe, batch)
                        await pipe.execute()
                except (TimeoutError, redis.RedisError, OSError) as exc:
                    self.dropped += len(batch)
                    log.debug("refusals not recorded: %s", exc, extra={"refusals": len(batch)})
        finally:
            self._writer = None

    async def drain(self) -> None:
        """Wait for the writer (the app's shutdown, before the Redis client closes)."""
        writer = self._writer
        if writer is not None:
            await asyncio.wait({writer}, timeout=2.0)
            if not writer.done():
                writer.cancel()
