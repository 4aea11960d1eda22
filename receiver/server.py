"""The HTTP server: uvloop + httptools (the stack with the most durable callbacks per CPU-second, measured in
bench/RESULTS.md), with the one bound uvicorn lacks: time to receive a request's headers.

uvicorn closes an idle keep-alive connection, and ``receiver.body`` bounds the time of a body, but nothing
bounds a sender that drips its request line and headers a byte at a time: the connection stays open for as
long as the sender likes (300 such sockets were all open after 100 s). :func:`protocol_class` returns
uvicorn's protocol with a timer armed when a connection opens and after each response; it is cancelled when
a request's headers are complete, and when it fires the connection is closed (there is no request to answer).
"""

from __future__ import annotations

import asyncio
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

#: the event loop and HTTP parser ``serve`` asks uvicorn for, named explicitly: a missing wheel must fail at
#: start, not fall back silently to a stack that costs a quarter more CPU per callback
LOOP = "uvloop"
HTTP = "httptools"


class _HeaderTimeout:
    """Mixed into one of uvicorn's HTTP protocols (its ``loop``, ``transport``, ``cycle``, ``logger``)."""

    header_timeout_s: float = 10.0
    _header_timer: asyncio.TimerHandle | None = None
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport
    cycle: Any
    logger: Any

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_too_slow)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _idle(self) -> bool:
        return self.cycle is None or bool(self.cycle.response_complete)

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if self._idle() and not self.transport.is_closing():
            self.logger.info("closing a connection whose request headers did not arrive in time")
            self.transport.close()


class HeaderTimeoutH11(_HeaderTimeout, H11Protocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def handle_events(self) -> None:
        super().handle_events()
        if not self._idle():
            self._disarm()  # the headers of a request are in: the body has its own bound

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self._idle():
            self._arm()  # the next request's headers get the same time

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)


def _httptools_class() -> type[Any]:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class HeaderTimeoutHttpTools(_HeaderTimeout, HttpToolsProtocol):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def on_headers_complete(self) -> None:
            self._disarm()  # the headers of a request are in: the body has its own bound
            super().on_headers_complete()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing() and self._idle():  # not when a pipelined request started
                self._arm()  # the next request's headers get the same time

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    return HeaderTimeoutHttpTools


def protocol_class(header_timeout_s: float, http: str = HTTP) -> type[Any]:
    """uvicorn's ``http=`` protocol class (``httptools`` or ``h11``), closing connections whose request
    headers take over ``header_timeout_s``."""
    base = _httptools_class() if http == "httptools" else HeaderTimeoutH11
    return type(f"Bounded{base.__name__}", (base,), {"header_timeout_s": header_timeout_s})


def config(app: Any, host: str, port: int, *, header_timeout_s: float) -> uvicorn.Config:
    """uvicorn as ``veo-archiver serve`` runs it (and bench/ack_apps.py, to compare on the same stack)."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        loop=LOOP,
        http=protocol_class(header_timeout_s, HTTP),
        log_config=None,
        access_log=False,
        # X-Forwarded-* are read by the app itself, from the trusted hop only (receiver/proxy.py)
        proxy_headers=False,
        timeout_graceful_shutdown=10,
        h11_max_incomplete_event_size=64 * 1024,
    )
