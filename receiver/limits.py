"""Bounds on what one receiver process holds at once, so slow or hostile senders cannot pin it.

- :class:`ConcurrencyLimit`, ASGI middleware: at most ``MAX_CONCURRENT_REQUESTS`` requests in the app at once,
  and at most ``MAX_REQUESTS_PER_CLIENT`` of them from one client, so that one source (300 slow senders) cannot
  take every slot from the others. Past either bound a request is answered 503 + ``Retry-After`` at once (every
  provider retries), counted as shed (``concurrency``, ``client_concurrency``). ``/healthz`` and ``/readyz``
  are never shed: an orchestrator must see a busy receiver as alive.
- The client is ``scope["client"]`` as :class:`receiver.proxy.ProxyHeaders` decided it from the trusted hops;
  an IPv6 client counts by its /64 (one host usually holds a whole /64). A request with no client address (a
  unix socket without a trusted proxy) has no per-client bound.
- :class:`BodyBudget`: the bytes of request bodies held in memory at once (``MAX_BODY_BYTES_IN_FLIGHT``);
  the body reader reserves each chunk before keeping it and releases the whole body when the request ends.
- The time a body may take (``REQUEST_READ_TIMEOUT``) is enforced by :func:`receiver.body.read_bounded`; the
  time headers may take and their size (``MAX_HEADER_BYTES``), by the head guard around uvicorn's protocol
  (:mod:`receiver.http_edge`), which counts its 431s in the same ``requests_shed`` counter.

Everything here runs on the event loop's thread: plain counters need no lock.
"""

from __future__ import annotations

import ipaddress
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


def client_key(host: str) -> str:
    """What one client's requests count under: its address; for IPv6, its /64."""
    if ":" not in host:
        return host
    try:
        return str(ipaddress.IPv6Network((host, 64), strict=False))
    except ValueError:
        return host


class ConcurrencyLimit:
    def __init__(self, app: ASGIApp, limit: int, on_shed: Callable[[str], None], per_client: int | None = None) -> None:
        self.app = app
        self.limit = limit
        self.per_client = per_client or limit
        self.in_flight = 0
        #: requests in the app by client key; a key leaves when its last request ends (bounded by ``limit``)
        self.by_client: dict[str, int] = {}
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
        client = scope.get("client")
        key = client_key(client[0]) if client and client[0] else None
        held = self.by_client.get(key, 0) if key is not None else 0
        if key is not None and held >= self.per_client:
            self._on_shed("client_concurrency")
            response = error_response(
                Overloaded(
                    f"this receiver is handling {held} requests from {key} already "
                    f"(MAX_REQUESTS_PER_CLIENT={self.per_client})",
                    reason="client_concurrency",
                )
            )
            await response(scope, receive, send)
            return
        self.in_flight += 1
        if key is not None:
            self.by_client[key] = held + 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1
            if key is not None:
                left = self.by_client[key] - 1
                if left:
                    self.by_client[key] = left
                else:
                    del self.by_client[key]
