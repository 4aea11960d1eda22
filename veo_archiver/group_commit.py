"""Group commit: the callbacks in flight share one Redis round trip, each awaiting its own reply.

:meth:`GroupCommit.commit` does not talk to Redis itself: it appends its packed command to the batch of the
current turn of the event loop and returns a future. At the end of the turn one batch task sends the whole
batch as one pipeline on one pooled connection (N commands and, when the intake asks for it, a single
``WAITAOF`` after them), reads the N replies and resolves each caller:

- a caller is answered only after its own command ran and, with ``WAITAOF``, after the ``WAITAOF`` that
  followed it on the same connection reported the AOF fsynced; a ``WAITAOF`` that did not fails every caller;
- a connection error, a timeout or anything unexpected while the batch is on the wire fails every caller of
  that batch with :class:`QueueUnavailable`; nobody is left waiting; an error *reply* to one command fails
  only its own caller;
- a ``NOSCRIPT`` reply (a restarted Redis lost its script cache) loads the script and retries the commands
  that got it, once, on the same connection, followed by a fresh ``WAITAOF``.

While ``MAX_BATCHES_IN_FLIGHT`` batches are on the wire, new commands wait for one of them to finish and then
go out together: under load the batches grow, which is where the CPU per callback goes down.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, ResponseError

from veo_archiver.errors import QueueUnavailable

#: batches on the wire at once (each on its own pooled connection); more callbacks wait for the next batch
MAX_BATCHES_IN_FLIGHT = 4
#: scripts in one pipeline at most (bounds one reply burst and the time Redis spends on one read)
MAX_BATCH = 256


class _Call:
    """One callback waiting in a batch: its packed EVALSHA and the future its caller awaits."""

    __slots__ = ("command", "future")

    def __init__(self, command: bytes, future: asyncio.Future[Any]) -> None:
        self.command = command
        self.future = future


def _unavailable(exc: BaseException) -> QueueUnavailable:
    """A fresh exception per caller (one object raised in several tasks would share its traceback)."""
    if isinstance(exc, QueueUnavailable):
        return QueueUnavailable(exc.message)
    return QueueUnavailable(f"redis could not take the job: {str(exc) or type(exc).__name__}")


class GroupCommit:
    """One writer per event loop and Redis client; ``before_batch`` says whether a batch waits for WAITAOF."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        batch_timeout_s: float,
        script_load: bytes,
        waitaof: bytes,
        before_batch: Callable[[], Awaitable[bool]],
    ) -> None:
        self._redis = client
        self._batch_timeout = batch_timeout_s
        self._script_load = script_load
        self._waitaof = waitaof
        self._before_batch = before_batch
        # state bound to one running loop (reset if the writer is used from another one)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: list[_Call] = []
        self._scheduled = False
        self._in_flight = 0
        self._tasks: set[asyncio.Task[None]] = set()
        #: counters for benchmarks and tests: batches sent, commands sent in them
        self.batches = 0
        self.batched = 0

    def commit(self, command: bytes) -> asyncio.Future[Any]:
        """Join this turn's batch; the future resolves to the script's reply or fails with QueueUnavailable."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # first use, or the Intake moved to another loop (asyncio.run per batch)
            self._loop, self._pending, self._scheduled, self._in_flight = loop, [], False, 0
            self._tasks = set()
        future: asyncio.Future[Any] = loop.create_future()
        self._pending.append(_Call(command, future))
        if not self._scheduled and self._in_flight < MAX_BATCHES_IN_FLIGHT:
            self._scheduled = True
            loop.call_soon(self._launch)
        return future

    def _launch(self) -> None:
        """End of a loop turn: send what gathered as one batch (if a slot is free)."""
        self._scheduled = False
        loop = self._loop
        if loop is None or not self._pending or self._in_flight >= MAX_BATCHES_IN_FLIGHT:
            return
        batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
        self._in_flight += 1
        task = loop.create_task(self._run_batch(batch))
        self._tasks.add(task)
        task.add_done_callback(self._batch_done)
        if self._pending:
            self._scheduled = True
            loop.call_soon(self._launch)

    def _batch_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if task.get_loop() is not self._loop:
            return
        self._in_flight -= 1
        if self._pending and not self._scheduled:
            self._scheduled = True
            task.get_loop().call_soon(self._launch)

    async def _run_batch(self, batch: list[_Call]) -> None:
        """Send one batch and resolve every caller in it, whatever happens (never leaves one waiting)."""
        try:
            replies = await self._send(batch)
        except BaseException as exc:
            for call in batch:
                if not call.future.done():
                    call.future.set_exception(_unavailable(exc))
            if not isinstance(exc, Exception):
                raise  # cancelled (loop shutting down): the callers have their answer
            return
        for call, reply in zip(batch, replies, strict=True):
            if call.future.done():  # the caller went away (cancelled); the script ran all the same
                continue
            if isinstance(reply, Exception):
                call.future.set_exception(_unavailable(reply))
            else:
                call.future.set_result(reply)

    async def _send(self, batch: list[_Call]) -> list[Any]:
        """One pipeline on one pooled connection: the batch's EVALSHAs, then WAITAOF if in use."""
        self.batches += 1
        self.batched += len(batch)
        pool: Any = self._redis.connection_pool  # get_connection() is untyped (a decorated method)
        async with asyncio.timeout(self._batch_timeout):  # a hang guard: the client's socket timeout may be None
            wait_aof = await self._before_batch()  # decided once per batch
            conn = await pool.get_connection()
            try:
                replies = await self._roundtrip(conn, [call.command for call in batch], wait_aof)
                missing = [i for i, reply in enumerate(replies[: len(batch)]) if isinstance(reply, NoScriptError)]
                if missing:  # a restarted Redis lost its script cache: load it, retry those scripts once
                    retry = [self._script_load] + [batch[i].command for i in missing]
                    again = await self._roundtrip(conn, retry, wait_aof)
                    if isinstance(again[0], Exception):
                        raise again[0]
                    for i, reply in zip(missing, again[1 : 1 + len(missing)], strict=True):
                        replies[i] = reply
                    if wait_aof:
                        replies[-1] = again[-1]  # this WAITAOF covers every write made on this connection
            except BaseException:
                await conn.disconnect(nowait=True)  # replies may be left unread: never reuse this connection
                raise
            finally:
                await pool.release(conn)
        if wait_aof:
            fsynced = replies.pop()
            if isinstance(fsynced, Exception):
                raise fsynced
            if int(fsynced[0]) < 1:
                raise QueueUnavailable("redis did not fsync the job to its AOF in time")
        return replies

    async def _roundtrip(self, conn: Any, commands: list[bytes], wait_aof: bool) -> list[Any]:
        """Send packed ``commands`` (plus WAITAOF when in use) in one write; error replies are returned."""
        if wait_aof:
            commands = [*commands, self._waitaof]
        await conn.send_packed_command(b"".join(commands))
        replies: list[Any] = []
        for _ in commands:
            try:
                # no timer per reply (redis-py arms one per read when the client has a socket timeout: ~5 us
                # each); the batch's own guard in _send bounds the whole round trip instead
                replies.append(await conn.read_response(timeout=math.inf))
            except ResponseError as exc:
                replies.append(exc)
        return replies
