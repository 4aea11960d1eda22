"""The HTTP server's protocol, with the one bound uvicorn lacks: time to receive a request's headers.

uvicorn closes an idle keep-alive connection, and ``receiver.body`` bounds the time of a body, but nothing
bounds a sender that drips its request line and headers a byte at a time: the connection stays open for as
long as the sender likes (300 such sockets were all open after 100 s). :func:`bounded_h11` returns uvicorn's
h11 protocol with a timer armed when a connection opens and after each response; it is cancelled when a
request's headers are complete, and when it fires the connection is closed (there is no request to answer).
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.h11_impl import H11Protocol


class HeaderTimeoutH11(H11Protocol):
    header_timeout_s: float = 10.0
    _header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def handle_events(self) -> None:
        super().handle_events()
        if self.cycle is not None and not self.cycle.response_complete:
            self._disarm()  # the headers of a request are in: the body has its own bound

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and (self.cycle is None or self.cycle.response_complete):
            self._arm()  # the next request's headers get the same time

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_too_slow)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if (self.cycle is None or self.cycle.response_complete) and not self.transport.is_closing():
            self.logger.info("closing a connection whose request headers did not arrive in time")
            self.transport.close()


def bounded_h11(header_timeout_s: float) -> type[H11Protocol]:
    """uvicorn's ``http=`` protocol class, closing connections whose headers take over ``header_timeout_s``."""
    return type("BoundedH11Protocol", (HeaderTimeoutH11,), {"header_timeout_s": header_timeout_s})
