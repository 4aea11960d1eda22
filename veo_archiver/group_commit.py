"""Group commit: the callbacks in flight share one Redis command, each awaiting its own reply.

:meth:`GroupCommit.commit` does not talk to Redis itself: it appends its item (the callback's keys and
arguments, packed) to the batch of the current turn of the event loop and returns a future. At the end of the
turn one batch task packs the whole batch into **one** command (the intake's script, run once for every
callback of the batch: Redis pays its per-call cost once a batch, not once a callback), sends it on one pooled
connection (with a single ``WAITAOF`` after it when the intake asks for it), and resolves each caller from its
own element of the reply:

- a caller is answered only after the script ran and, with ``WAITAOF``, after the ``WAITAOF`` that followed
  it on the same connection reported the AOF fsynced; a ``WAITAOF`` that did not fails every caller;
- a connection error, a timeout, an error reply to the whole command or anything unexpected while the batch
  is on the wire fails every caller of that batch with :class:`QueueUnavailable`; nobody is left waiting.
  But when Redis still answers a PING after a failed batch (no timeout), it refused that command as a whole
  (one delivery's argument over ``proto-max-bulk-len`` closes the connection, say): each delivery of the batch
  is then sent again on its own, so only the one Redis refuses fails;
  an element that reports an error (the script catches a failure per callback) fails only its own caller;
- a ``NOSCRIPT`` reply (a restarted Redis lost its script cache) loads the script and sends the batch again,
  once, on the same connection, followed by a fresh ``WAITAOF``.

While ``MAX_BATCHES_IN_FLIGHT`` batches are on the wire, new callbacks wait for one of them to finish and
then go out together: under load the batches grow, which is where the CPU per callback goes down.

Only redis-py's public connection API is used (``ConnectionPool.get_connection()``/``release()``,
``Connection.send_packed_command()``/``read_response()``/``connect()``/``disconnect()``: redis-py 5.3 and up,
where ``get_connection`` takes no command name). A batch is sent by its own task; on Python 3.12 and up that
task starts eagerly (``asyncio.Task(eager_start=True)``), so a full batch is written in the caller's turn of
the loop.
"""

from __future__ import annotations

import asyncio
import math
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from veo_archiver.errors import QueueUnavailable

#: batches on the wire at once (each on a connection of its own); more callbacks wait for the next batch
MAX_BATCHES_IN_FLIGHT = 4
#: callbacks in one batch at most (bounds one reply and the time Redis spends in one script call)
MAX_BATCH = 256
#: a batch goes out as soon as it holds this many callbacks, without waiting for the end of the loop turn,
#: when a connection is ready for it: Redis runs it while the receiver verifies the next callbacks (at the end
#: of a turn everything that gathered goes, whatever its size)
FLUSH_AT = 16
#: a connection idle for longer than this is checked before a batch is sent on it (Redis may have gone away)
FRESH_S = 1.0

#: the prefix of an element of the script's reply that reports the failure of that one callback
ITEM_ERROR = b"!"


class _Call:
    """One callback waiting in a batch: its item (whatever the batch packer takes) and its caller's future."""

    __slots__ = ("future", "item")

    def __init__(self, item: Any, future: asyncio.Future[Any]) -> None:
        self.item = item
        self.future = future


class _Held:
    """A pooled connection this writer keeps between its batches, and when it last finished one."""

    __slots__ = ("conn", "used")

    def __init__(self, conn: Any, used: float) -> None:
        self.conn = conn
        self.used = used


def _unavailable(exc: BaseException) -> QueueUnavailable:
    """A fresh exception per caller (one object raised in several tasks would share its traceback)."""
    if isinstance(exc, QueueUnavailable):
        return QueueUnavailable(exc.message)
    return QueueUnavailable(f"redis could not take the job: {str(exc) or type(exc).__name__}")


class GroupCommit:
    """One writer per event loop and Redis client.

    ``durability()`` says whether a batch waits for WAITAOF, or None when that is not known yet (then
    ``before_batch()``, which may probe Redis, decides it). The writer keeps up to
    :data:`MAX_BATCHES_IN_FLIGHT` connections of the client's pool for itself (the pool's own checkout costs
    about 30 us a batch); a batch that finds one of them fresh is sent on it without a check.

    ``pack`` turns a batch's items into the command's packed chunks; ``script_load``, ``waitaof`` and
    ``ping`` are packed commands too."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        batch_timeout_s: float,
        pack: Callable[[list[Any]], list[bytes]],
        script_load: list[bytes],
        waitaof: list[bytes],
        ping: list[bytes],
        durability: Callable[[], bool | None],
        before_batch: Callable[[], Awaitable[bool]],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._redis = client
        self._clock = clock  # how long a connection sat idle (FRESH_S); injectable for tests
        self._pack = pack
        self._batch_timeout = batch_timeout_s
        self._script_load = script_load
        self._waitaof = waitaof
        self._ping = ping
        self._durability = durability
        self._before_batch = before_batch
        # state bound to one running loop (reset if the writer is used from another one)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: list[_Call] = []
        self._scheduled = False
        self._in_flight = 0
        self._idle: list[_Held] = []
        self._tasks: set[asyncio.Task[None]] = set()
        #: counters for benchmarks and tests: batches sent, callbacks sent in them, batches started at FLUSH_AT
        self.batches = 0
        self.batched = 0
        self.eager = 0

    def commit(self, item: Any) -> asyncio.Future[Any]:
        """Join the next batch; the future resolves to this item's element of the script's reply, or fails
        with QueueUnavailable."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # first use, or the Intake moved to another loop (asyncio.run per batch)
            # connections of another loop cannot be used here (the pool reconnects its own on checkout)
            self._loop, self._pending, self._scheduled, self._in_flight = loop, [], False, 0
            self._tasks, self._idle = set(), []
        future: asyncio.Future[Any] = loop.create_future()
        self._pending.append(_Call(item, future))
        if len(self._pending) >= FLUSH_AT and self._in_flight < MAX_BATCHES_IN_FLIGHT and self._idle:
            self._send_batch(loop, eager=True)
        if self._pending and not self._scheduled and self._in_flight < MAX_BATCHES_IN_FLIGHT:
            self._scheduled = True
            loop.call_soon(self._launch)
        return future

    def _launch(self) -> None:
        """End of a loop turn: send what gathered (as many batches as slots are free)."""
        self._scheduled = False
        loop = self._loop
        while loop is not None and self._pending and self._in_flight < MAX_BATCHES_IN_FLIGHT:
            self._send_batch(loop, eager=False)

    def _send_batch(self, loop: asyncio.AbstractEventLoop, *, eager: bool) -> None:
        """Take a batch off the pending list and start its task (on a kept connection if there is one)."""
        batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
        self._in_flight += 1
        self.batches += 1
        self.batched += len(batch)
        self.eager += eager
        held = self._idle.pop() if self._idle else None  # the most recently used one
        if sys.version_info >= (3, 12):
            task = asyncio.Task(self._run_batch(batch, held), loop=loop, eager_start=True)
        else:
            task = loop.create_task(self._run_batch(batch, held))
        self._tasks.add(task)
        task.add_done_callback(self._batch_done)

    def _batch_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if task.get_loop() is not self._loop:
            return
        self._in_flight -= 1
        if self._pending and not self._scheduled:
            self._scheduled = True
            task.get_loop().call_soon(self._launch)

    async def _run_batch(self, batch: list[_Call], held: _Held | None) -> None:
        """Finish one batch and resolve every caller in it, whatever happens (never leaves one waiting)."""
        try:
            replies = await self._send(batch, held)
            if not isinstance(replies, list) or len(replies) != len(batch):
                raise QueueUnavailable(f"the intake script answered {len(batch)} callbacks with {replies!r:.200}")
        except Exception as exc:
            if len(batch) > 1 and not isinstance(exc, TimeoutError | RedisTimeoutError) and await self._answers():
                # Redis is up but refused the batch's command as a whole (one delivery's argument over its
                # proto-max-bulk-len, say, which also closes the connection): each delivery goes again on its
                # own, so only the one Redis refuses fails and the others are not spooled for nothing
                for call in batch:
                    await self._run_batch([call], None)
            else:
                self._fail(batch, exc)
            return
        except BaseException as exc:
            self._fail(batch, exc)
            raise  # cancelled (loop shutting down): the callers have their answer
        for call, reply in zip(batch, replies, strict=True):
            if call.future.done():  # the caller went away (cancelled); the script ran all the same
                continue
            if isinstance(reply, bytes) and reply.startswith(ITEM_ERROR):
                failure = reply[1:].decode("utf-8", "replace")
                call.future.set_exception(QueueUnavailable(f"redis could not take the job: {failure}"))
            else:
                call.future.set_result(reply)

    @staticmethod
    def _fail(batch: list[_Call], exc: BaseException) -> None:
        for call in batch:
            if not call.future.done():
                call.future.set_exception(_unavailable(exc))

    async def _answers(self) -> bool:
        """Whether Redis answers a PING now (on a connection of the pool): tells a refused command from an
        outage."""
        try:
            async with asyncio.timeout(self._batch_timeout):
                return bool(await self._redis.ping())
        except (RedisError, OSError, TimeoutError):
            return False

    async def _send(self, batch: list[_Call], held: _Held | None) -> Any:
        """The batch's one command, then WAITAOF if in use; its reply."""
        pool: Any = self._redis.connection_pool  # get_connection() is untyped (a decorated method)
        conn: Any = held.conn if held is not None else None
        stale = held is not None and self._clock() - held.used > FRESH_S
        try:
            async with asyncio.timeout(self._batch_timeout):  # a hang guard: the socket timeout may be None
                command = self._pack([call.item for call in batch])
                wait_aof = self._durability()
                if wait_aof is None:
                    wait_aof = await self._before_batch()
                if conn is None:
                    conn = await self._checked(await pool.get_connection())
                elif stale:
                    conn = await self._checked(conn)
                await conn.send_packed_command([*command, *self._waitaof] if wait_aof else command, check_health=False)
                replies = await self._read(conn, 2 if wait_aof else 1)
                if isinstance(replies[0], NoScriptError):  # a restarted Redis lost its script cache
                    retry = [*self._script_load, *command, *(self._waitaof if wait_aof else ())]
                    await conn.send_packed_command(retry, check_health=False)
                    replies = await self._read(conn, 3 if wait_aof else 2)
                    if isinstance(replies[0], Exception):
                        raise replies[0]
                    replies = replies[1:]
        except BaseException:
            if conn is not None:
                await conn.disconnect(nowait=True)  # replies may be left unread: never reuse this connection
                await pool.release(conn)
            raise
        self._idle.append(_Held(conn, self._clock()))
        if wait_aof:
            fsynced = replies.pop()
            if isinstance(fsynced, Exception):
                raise fsynced
            if int(fsynced[0]) < 1:
                raise QueueUnavailable("redis did not fsync the job to its AOF in time")
        if isinstance(replies[0], Exception):
            raise replies[0]
        return replies[0]

    async def _checked(self, conn: Any) -> Any:
        """``conn``, known to reach Redis: a connection that sat idle (or comes from the pool) may have been
        closed by a Redis restart, which redis-py's own checkout does not always notice; one PING tells, and
        a dead connection is opened again, so the first batch after a restart is not refused for nothing."""
        try:
            await conn.send_packed_command(self._ping, check_health=False)
            await conn.read_response(timeout=self._batch_timeout)
        except (ConnectionError, OSError, RedisConnectionError, RedisTimeoutError):
            await conn.disconnect(nowait=True)
            await conn.connect()
        return conn

    async def _read(self, conn: Any, count: int) -> list[Any]:
        """``count`` replies; an error reply is returned, not raised."""
        replies: list[Any] = []
        for _ in range(count):
            try:
                # no timer per reply (redis-py arms one per read when the client has a socket timeout: ~5 us
                # each); the batch's own guard in _send bounds the whole round trip instead
                replies.append(await conn.read_response(timeout=math.inf))
            except ResponseError as exc:
                replies.append(exc)
        return replies
