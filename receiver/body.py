"""The one bounded body reader: a request body is never read past its limit, and never fails with a 500.

A declared ``Content-Length`` over the limit is refused before a byte is read; a body without one (chunked)
or lying about it is counted while it streams and refused as soon as it passes the limit. Both are
:class:`~veo_archiver.errors.PayloadTooLarge` (413). A client that goes away before the end of its body is
:class:`~veo_archiver.errors.InvalidPayload` with reason ``client_disconnect`` (400): Starlette's
``ClientDisconnect`` is translated here, at the edge, like every foreign exception.

With a ``timeout``, the whole body must arrive within it (:class:`RequestTimeout`, 408: a sender dripping
bytes holds nothing for long); with a :class:`~receiver.limits.BodyBudget`, every chunk is reserved before it
is kept and the body's bytes are released by the caller's ``finally`` (:class:`Overloaded`, 503, past it).
"""

from __future__ import annotations

import asyncio

from starlette.requests import ClientDisconnect, Request

from receiver.limits import BodyBudget
from veo_archiver.errors import InvalidPayload, PayloadTooLarge, RequestTimeout


def declared_length(value: str | None) -> int | None:
    """``Content-Length`` as a number; ``None`` when absent or not plain ASCII digits (the stream decides)."""
    text = (value or "").strip()
    return int(text) if text.isascii() and text.isdigit() else None


async def read_bounded(
    request: Request, limit: int, *, timeout: float | None = None, budget: BodyBudget | None = None
) -> bytes:
    """The request body, at most ``limit`` bytes: PayloadTooLarge past it, InvalidPayload on a disconnect,
    RequestTimeout when it takes longer than ``timeout``, Overloaded when ``budget`` is spent. What was
    reserved in ``budget`` is released before returning: the joined body is short-lived."""
    declared = declared_length(request.headers.get("content-length"))
    if declared is not None and declared > limit:
        raise PayloadTooLarge(f"body of {declared} bytes is over the {limit}-byte limit")
    held = _Held(budget)
    try:
        async with asyncio.timeout(timeout):
            return await _read(request, limit, held)
    except TimeoutError:
        raise RequestTimeout(f"the body did not arrive within {timeout:g} s") from None
    finally:
        held.release()


class _Held:
    def __init__(self, budget: BodyBudget | None) -> None:
        self._budget = budget
        self._bytes = 0

    def take(self, n: int) -> None:
        if self._budget is not None:
            self._budget.reserve(n)
        self._bytes += n

    def release(self) -> None:
        if self._budget is not None:
            self._budget.release(self._bytes)
        self._bytes = 0


async def _read(request: Request, limit: int, held: _Held) -> bytes:
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"body is over the {limit}-byte limit")
            held.take(len(chunk))
            chunks.append(chunk)
    except ClientDisconnect:
        raise InvalidPayload("the client went away before the end of its body", reason="client_disconnect") from None
    return b"".join(chunks)
