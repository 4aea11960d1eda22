"""The bounds uvicorn lacks on a request's head, as a protocol wrapper around uvicorn's own protocol.

uvicorn closes an idle keep-alive connection, and :mod:`receiver.body` bounds the time of a body, but with
httptools nothing bounds a request's head: a sender dripping its request line and headers a byte at a time
keeps its connection as long as it likes (300 such sockets were all open after 100 s), and one 32 MB header
was read whole, answered 200 and stored with the delivery. :class:`HeadGuard` is the ``asyncio.Protocol``
uvicorn is given (``uvicorn.Config(http=...)`` takes a class); it builds the protocol uvicorn would use
(:func:`inner_protocol`) with uvicorn's constructor arguments untouched and hands it every event, framing
the byte stream itself (:mod:`receiver.framing`) to enforce:

- the header time (``REQUEST_READ_TIMEOUT``): a timer armed when a connection opens and when the first byte
  of a later request's head arrives, disarmed when the head is complete; when it fires on an incomplete head
  the connection is closed (there is no request to answer). An idle keep-alive connection is uvicorn's
  ``timeout_keep_alive``'s business.
- the head size (``MAX_HEADER_BYTES``): as soon as a head is over it, before uvicorn is fed more than that,
  the request is answered ``431`` (the service's JSON error shape, reason ``headers_too_large``) and the
  connection closed; nothing of the request reaches the app. The close is staged (RFC 9112 9.6): the answer
  and a half-close first, then what the client still sends is read and dropped (up to ``linger_bytes``,
  ``linger_s``) until it closes too. Closed at once, the unread bytes would make the kernel reset the
  connection, and a client still sending would get a broken pipe instead of the 431.

It sees the bytes uvicorn writes too, through a thin transport (:class:`_Outgoing`), to know when every
request it handed on has been answered: a 431 or a close never cuts into the answer to an earlier
(pipelined) request. Only public interfaces are used: ``asyncio.Protocol``/``Transport``, uvicorn's
``Config(http=<class>)`` and its documented name-to-class table; tested with uvicorn 0.30 to 0.55.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, cast

from uvicorn.config import HTTP_PROTOCOLS
from uvicorn.importer import import_from_string

from receiver.framing import LENGTH, NO_BODY, Body, Framer, HeadTooLarge, body_framing
from receiver.responses import raw_error_response
from veo_archiver.errors import HeadersTooLarge

log = logging.getLogger(__name__)

#: a response head is uvicorn's own: framed without a cap worth the name
_RESPONSE_HEAD_CAP = 1 << 24


def inner_protocol(http: str) -> type[asyncio.Protocol]:
    """The protocol class uvicorn itself uses for ``http=`` (``httptools`` or ``h11``)."""
    found: type[asyncio.Protocol] = import_from_string(HTTP_PROTOCOLS[http])
    return found


class HeadGuard(asyncio.Protocol):
    """Subclassed by :func:`guarded` with the class attributes below; uvicorn builds one per connection."""

    inner_class: type[asyncio.Protocol]
    header_timeout_s: float = 10.0
    max_header_bytes: int = 64 * 1024
    #: called with the reason of each refusal (counted in ``veo_archiver_requests_shed_total``)
    refused: Callable[[str], None]
    #: after a 431: how long, and how many more bytes, the rest of the request is read and dropped
    linger_s: float = 2.0
    linger_bytes: int = 4 * 1024 * 1024

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.inner = self.inner_class(*args, **kwargs)
        self.requests = Framer(self.max_header_bytes, self._request_head)
        self.responses = Framer(_RESPONSE_HEAD_CAP, self._response_head)
        self.transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        #: for each request handed on and not answered yet: was it a HEAD (its answer has no body)
        self._heads: deque[bool] = deque()
        self._interim = 0  # 1xx responses seen (not answers)
        #: a head was over the cap: nothing more is read or handed on, a 431 follows the answers due
        self.refusing = False
        #: after the 431 and its half-close: the timer that ends the staged close, and the bytes left to drop
        self._linger: asyncio.TimerHandle | None = None
        self._linger_left = 0

    # ----------------------------------------------------------------------------------- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass of it
        self._loop = asyncio.get_running_loop()
        self.inner.connection_made(_Outgoing(transport, self))
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self.refusing:  # what follows an oversized head is never kept, nor handed on
            if self._linger is not None:
                self._linger_left -= len(data)
                if self._linger_left <= 0:
                    self._end_linger()
            return
        requests = self.requests
        heads = requests.heads
        try:
            requests.feed(data)
        except HeadTooLarge as over:
            if over.at:
                self.inner.data_received(data[: over.at])  # the requests before it, in full
            self._refuse()
            return
        if requests.heads != heads:
            self._disarm()
        if requests.in_head and self._timer is None:
            self._arm()
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        if self._linger is not None:  # the client read the 431 and closed its side: the staged close ends
            self._end_linger()
            return False
        return self.inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._cancel_linger()
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    # --------------------------------------------------------------------------------------------- framing

    def _request_head(self, head: bytes) -> Body:
        self._heads.append(head.startswith(b"HEAD "))
        return body_framing(head)

    def _response_head(self, head: bytes) -> Body:
        status = head[9:12]
        if status.startswith(b"1"):
            self._interim += 1
            return NO_BODY, 0
        was_head = self._heads.popleft() if self._heads else False
        if was_head or status in (b"204", b"304"):
            return NO_BODY, 0
        kind, length = body_framing(head)
        return (LENGTH, 0) if kind == NO_BODY else (kind, length)

    def _answered_all(self) -> bool:
        """Every request handed on has its complete answer written (so a 431 or a close cuts into none)."""
        return self.responses.messages - self._interim >= self.requests.heads

    def sent(self, data: bytes) -> None:
        """What uvicorn wrote (called by :class:`_Outgoing`)."""
        try:
            self.responses.feed(data if type(data) is bytes else bytes(data))
        except HeadTooLarge:  # pragma: no cover - uvicorn's own heads are small
            return
        if self.refusing and self._answered_all():
            self._answer_431()

    # ------------------------------------------------------------------------------------------ the bounds

    def _arm(self) -> None:
        self._disarm()
        assert self._loop is not None
        self._timer = self._loop.call_later(self.header_timeout_s, self._too_slow)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _too_slow(self) -> None:
        self._timer = None
        transport = self.transport
        if transport is None or transport.is_closing() or self.refusing:
            return
        if not self._answered_all():
            # an answer to an earlier request is still being written (uvicorn may not even be reading this
            # head yet): its time starts again once that is done
            self._arm()
            return
        if self.requests.in_head or self.requests.heads == 0:
            log.info("closing a connection whose request headers did not arrive in time")
            transport.close()

    def _refuse(self) -> None:
        self.refusing = True
        self._disarm()
        if self.transport is not None and self.transport.is_reading():
            self.transport.pause_reading()
        log.info(
            "refusing a request whose headers are over MAX_HEADER_BYTES",
            extra={"max_header_bytes": self.max_header_bytes, "reason": HeadersTooLarge.reason},
        )
        self.refused(HeadersTooLarge.reason)
        if self._answered_all():
            self._answer_431()

    def _answer_431(self) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        error = HeadersTooLarge(f"request headers over {self.max_header_bytes} bytes (MAX_HEADER_BYTES)")
        transport.write(raw_error_response(error))
        if not transport.can_write_eof():
            transport.close()
            return
        transport.write_eof()  # the answer, then FIN; the rest of the request is read and dropped meanwhile
        assert self._loop is not None
        self._linger_left = self.linger_bytes
        self._linger = self._loop.call_later(self.linger_s, self._end_linger)
        if not transport.is_reading():
            transport.resume_reading()

    def _cancel_linger(self) -> None:
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None

    def _end_linger(self) -> None:
        self._cancel_linger()
        if self.transport is not None:
            self.transport.close()


class _Outgoing(asyncio.Transport):
    """The transport uvicorn's protocol is given: the real one, with every write shown to the guard."""

    __slots__ = ("_guard", "_real")

    def __init__(self, real: asyncio.Transport, guard: HeadGuard) -> None:
        super().__init__()
        self._real = real
        self._guard = guard

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._real.write(data)
        self._guard.sent(data)  # type: ignore[arg-type]

    def writelines(self, list_of_data: Iterable[bytes | bytearray | memoryview]) -> None:
        for data in list_of_data:
            self.write(data)

    def write_eof(self) -> None:
        self._real.write_eof()

    def can_write_eof(self) -> bool:
        return self._real.can_write_eof()

    def abort(self) -> None:
        self._real.abort()

    def close(self) -> None:
        self._real.close()

    def is_closing(self) -> bool:
        return self._real.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._real.get_extra_info(name, default)

    def pause_reading(self) -> None:
        if self._real.is_reading():
            self._real.pause_reading()

    def resume_reading(self) -> None:
        if not self._guard.refusing:  # a refused connection reads nothing more
            self._real.resume_reading()

    def is_reading(self) -> bool:
        return self._real.is_reading()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._real.set_write_buffer_limits(high, low)

    def get_write_buffer_size(self) -> int:
        return self._real.get_write_buffer_size()

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._real.get_write_buffer_limits()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._real.set_protocol(protocol)  # a WebSocket upgrade: that protocol reads the socket from now on

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._real.get_protocol()


def guarded(
    http: str,
    *,
    header_timeout_s: float,
    max_header_bytes: int,
    on_refused: Callable[[str], None] | None = None,
) -> type[HeadGuard]:
    """The class to pass as ``uvicorn.Config(http=...)``: uvicorn's ``http`` protocol inside a guard."""
    inner = inner_protocol(http)

    class Guarded(HeadGuard):
        inner_class = inner

    Guarded.__name__ = Guarded.__qualname__ = f"Guarded{inner.__name__}"
    Guarded.header_timeout_s = header_timeout_s
    Guarded.max_header_bytes = max_header_bytes
    Guarded.refused = staticmethod(on_refused or _count_nothing)
    return Guarded


def _count_nothing(reason: str) -> None:
    pass
