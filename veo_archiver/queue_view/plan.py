"""Reads written once for both Redis clients: the receiver's async one and the command line's sync one.

A read is a *plan*: a generator that yields the commands of one round trip (a list of :class:`Command`),
receives their replies and finally returns its result. :func:`run` drives a plan with ``redis.Redis``,
:func:`run_async` with ``redis.asyncio.Redis``; each round trip is one pipeline without a transaction. The
reading and the decoding of the replies live in the plan, so both clients give the same answer from the same
code. Plans compose with ``yield from``. Redis errors propagate to the caller of the driver.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import redis
import redis.asyncio as aioredis

T = TypeVar("T")


@dataclass(frozen=True)
class Command:
    """One redis-py command by its method name (``"zrange"``), with its arguments and options."""

    name: str
    args: tuple[Any, ...] = ()
    options: dict[str, Any] = field(default_factory=dict)


def command(name: str, *args: Any, **options: Any) -> Command:
    return Command(name, args, options)


#: yields one round trip's commands, receives their replies (in order), returns its result
Plan = Generator[Sequence[Command], list[Any], T]


def _queue(pipe: Any, batch: Sequence[Command]) -> None:
    for cmd in batch:
        getattr(pipe, cmd.name)(*cmd.args, **cmd.options)


def run(connection: redis.Redis, plan: Plan[T]) -> T:
    """The plan's result, read with the synchronous client."""
    try:
        batch = next(plan)
        while True:
            with connection.pipeline(transaction=False) as pipe:
                _queue(pipe, batch)
                replies = pipe.execute()
            batch = plan.send(replies)
    except StopIteration as done:
        result: T = done.value
        return result


async def run_async(client: aioredis.Redis, plan: Plan[T]) -> T:
    """The plan's result, read with the asynchronous client."""
    try:
        batch = next(plan)
        while True:
            async with client.pipeline(transaction=False) as pipe:
                _queue(pipe, batch)
                replies = await pipe.execute()
            batch = plan.send(replies)
    except StopIteration as done:
        result: T = done.value
        return result
