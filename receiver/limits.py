"""Bounds on what one receiver process holds at once, so slow or hostile senders cannot pin it.

- :class:`ConcurrencyLimit`, ASGI middleware: at most ``MAX_CONCURRENT_REQUESTS`` requests in the app at once;
  past it a request is answered 503 + ``Retry-After`` at once (every provider retries), counted as shed.
  ``/healthz`` and ``/readyz`` are never shed: an orchestrator must see a busy receiver as alive.
- :class:`BodyBudget`: the bytes of request bodies held in memory at once (``MAX_BODY_BYTES_IN_FLIGHT``);
  the body reader reserves each chunk before keeping it and releases the whole body when the request ends.
- The time a body may take (``REQUEST_READ_TIMEOUT``) is enforced by :func:`receiver.body.read_bounded`; the
  time headers may take, by the server's protocol (:mod:`receiver.server`).

Everything here runs on the event loop's thread: plain counters need no lock.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.types import ASGIApp, Receive, Scope, Send

from receiver.responses import error_response
from veo_archiver.errors import Overloaded

UNSHED_PATHS = frozenset({"/healthz", "/readyz"})


class BodyBudget:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0

    def reserve(self, n: int) -> None:
        if self.held + n > self.limit:
            raise Overloaded(f"this receiver holds {self.held} bytes of request bodies already (limit {self.limit})")
        self.held += n

    def release(self, n: int) -> None:
        self.held = max(0, self.held - n)


class ConcurrencyLimit:
    def __init__(self, app: ASGIApp, limit: int, on_shed: Callable[[str], None]) -> None:
        self.app = app
        self.limit = limit
        self.in_flight = 0
        self._on_shed = on_shed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") in UNSHED_PATHS:
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.limit:
            self._on_shed("concurrency")
            response = error_response(Overloaded(f"this receiver is handling {self.limit} requests already"))
            await response(scope, receive, send)
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1
