"""The one bounded body reader: a request body is never read past its limit, and never fails with a 500.

A declared ``Content-Length`` over the limit is refused before a byte is read; a body without one (chunked)
or lying about it is counted while it streams and refused as soon as it passes the limit. Both are
:class:`~veo_archiver.errors.PayloadTooLarge` (413). A client that goes away before the end of its body is
:class:`~veo_archiver.errors.InvalidPayload` with reason ``client_disconnect`` (400): Starlette's
``ClientDisconnect`` is translated here, at the edge, like every foreign exception.

With a ``timeout``, the whole body must arrive within it (:class:`RequestTimeout`, 408: a sender dripping
bytes holds nothing for long); with a :class:`~receiver.limits.BodyBudget`, every chunk is reserved before it
is kept and the body's bytes are released by the caller's ``finally`` (:class:`Overloaded`, 503, past it).

:func:`read_body` reads from the ASGI ``receive`` callable (the callback path, :mod:`receiver.callbacks`);
:func:`read_bounded` is the same for a Starlette ``Request`` (the other endpoints that take a body).
"""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.types import Receive

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
    return await read_body(
        request.receive, request.headers.get("content-length"), limit, timeout=timeout, budget=budget
    )


async def read_body(
    receive: Receive,
    content_length: str | None,
    limit: int,
    *,
    timeout: float | None = None,
    budget: BodyBudget | None = None,
) -> bytes:
    """:func:`read_bounded` from the ASGI ``receive`` callable and the ``Content-Length`` header's value."""
    declared = declared_length(content_length)
    if declared is not None and declared > limit:
        raise PayloadTooLarge(f"body of {declared} bytes is over the {limit}-byte limit")
    held = _Held(budget)
    try:
        async with asyncio.timeout(timeout):
            return await _read(receive, limit, held)
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


async def _read(receive: Receive, limit: int, held: _Held) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        kind = message["type"]
        if kind == "http.disconnect":
            raise InvalidPayload("the client went away before the end of its body", reason="client_disconnect")
        if kind != "http.request":
            continue
        chunk: bytes = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"body is over the {limit}-byte limit")
            held.take(len(chunk))
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)
