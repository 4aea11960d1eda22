"""Where the messages of one direction of an HTTP/1.1 byte stream begin and end, and nothing more.

:class:`Framer` is fed the bytes as they arrive and tells where each message's head ends and how its body
is framed (``Content-Length``, ``chunked``, none), so :mod:`receiver.http_edge` can bound the head of every
request and know when uvicorn has answered every request it was handed. It parses no more than that:
uvicorn's own parser still reads every byte and answers what is malformed (400). What it does not
understand (a ``Transfer-Encoding`` other than chunked, a malformed chunk size) ends the framing: the rest of
the connection is one body, which uvicorn refuses and closes anyway.

Cheap on purpose, it runs for every request and every response: ``bytes.find`` for the end of a head (a
complete head is copied once, an incomplete one is kept up to the cap), and a body is skipped by arithmetic.
"""

from __future__ import annotations

from collections.abc import Callable

#: how a message's body is framed, decided from its head
NO_BODY, LENGTH, CHUNKED, UNTIL_CLOSE = 0, 1, 2, 3
#: the states of a framer: in a head, in a body of known length, in chunk framing, past understanding
_HEAD, _BODY, _CHUNK_LINE, _CHUNK_DATA, _TRAILER, _OPAQUE = range(6)
#: a chunk-size line longer than this is not one (extensions included)
MAX_CHUNK_LINE = 4096
_HEX = b"0123456789abcdefABCDEF"

Body = tuple[int, int]
"""(kind, length): ``(LENGTH, n)``, ``(CHUNKED, 0)``, ``(NO_BODY, 0)`` or ``(UNTIL_CLOSE, 0)``."""


def _header_value(lower_head: bytes, name: bytes) -> bytes | None:
    """The value of header ``name`` (lower case, with its ``\\r\\n`` and colon) in a lower-cased head."""
    at = lower_head.find(name)
    if at < 0:
        return None
    start = at + len(name)
    return lower_head[start : lower_head.find(b"\r\n", start)].strip()


def body_framing(head: bytes) -> Body:
    """The framing of the body after ``head`` (start line and headers, each ending in ``\\r\\n``)."""
    lower = head.lower()
    coding = _header_value(lower, b"\r\ntransfer-encoding:")
    if coding is not None:
        return (CHUNKED, 0) if coding.rsplit(b",", 1)[-1].strip() == b"chunked" else (UNTIL_CLOSE, 0)
    length = _header_value(lower, b"\r\ncontent-length:")
    if length is None:
        return NO_BODY, 0
    return (LENGTH, int(length)) if length.isdigit() else (UNTIL_CLOSE, 0)


class HeadTooLarge(Exception):
    """A head over the framer's cap; ``at`` is where it begins in the bytes just fed (0 if it began earlier)."""

    def __init__(self, at: int) -> None:
        super().__init__(at)
        self.at = at


class Framer:
    """One direction of one connection. ``on_head(head)`` is called with each complete head (its start line
    and headers, without the blank line) and answers how the body after it is framed."""

    __slots__ = ("_line", "_partial", "_remaining", "_state", "heads", "in_head", "max_head", "messages", "on_head")

    def __init__(self, max_head: int, on_head: Callable[[bytes], Body]) -> None:
        self.max_head = max_head
        self.on_head = on_head
        #: complete heads seen so far, and complete messages (head and body)
        self.heads = 0
        self.messages = 0
        #: a head has begun (its first byte arrived) and is not complete yet
        self.in_head = False
        self._state = _HEAD
        self._partial = bytearray()  # an incomplete head or chunk line, never more than the cap
        self._remaining = 0
        self._line = bytearray()

    @property
    def opaque(self) -> bool:
        """Framing was given up: the rest of the stream is one body."""
        return self._state == _OPAQUE

    def feed(self, data: bytes) -> None:
        """Consume ``data``; raises :class:`HeadTooLarge` as soon as a head is known to be over the cap."""
        pos, end = 0, len(data)
        while pos < end:
            state = self._state
            if state == _BODY:
                if self._remaining > end - pos:
                    self._remaining -= end - pos
                    return
                pos += self._remaining
                self._remaining = 0
                self._state = _HEAD
                self.messages += 1
            elif state == _HEAD:
                pos = self._head(data, pos, end)
            elif state == _CHUNK_DATA:
                if self._remaining > end - pos:
                    self._remaining -= end - pos
                    return
                pos += self._remaining
                self._state = _CHUNK_LINE
            elif state == _OPAQUE:
                return
            else:
                pos = self._chunk_line(data, pos, end)

    def _head(self, data: bytes, pos: int, end: int) -> int:
        partial = self._partial
        if not partial:
            while data.startswith(b"\r\n", pos):  # empty lines before a request line are allowed (RFC 9112 2.2)
                pos += 2
            if pos >= end:
                return pos
            self.in_head = True
            stop = data.find(b"\r\n\r\n", pos, pos + self.max_head)
            if stop < 0:
                if end - pos >= self.max_head:
                    raise HeadTooLarge(pos)
                partial += data[pos:end]
                return end
            self._complete(data[pos : stop + 2])
            return stop + 4
        if len(partial) == 1 and partial == b"\r" and data.startswith(b"\n", pos):  # a CRLF split before a head
            partial.clear()
            return pos + 1
        room = self.max_head + 4 - len(partial)
        searched = max(0, len(partial) - 3)
        taken = min(end - pos, room)
        partial += data[pos : pos + taken]
        stop = partial.find(b"\r\n\r\n", searched)
        if stop < 0 or stop + 4 > self.max_head:
            if len(partial) > self.max_head or stop >= 0:
                raise HeadTooLarge(0)
            return pos + taken
        consumed = stop + 4 - (len(partial) - taken)
        head = bytes(partial[: stop + 2])
        partial.clear()
        self._complete(head)
        return pos + consumed

    def _complete(self, head: bytes) -> None:
        self.heads += 1
        self.in_head = False
        kind, length = self.on_head(head)
        if kind == LENGTH and length:
            self._state, self._remaining = _BODY, length
        elif kind == CHUNKED:
            self._state = _CHUNK_LINE
        elif kind == UNTIL_CLOSE:
            self._state = _OPAQUE
        else:
            self.messages += 1

    def _chunk_line(self, data: bytes, pos: int, end: int) -> int:
        """A chunk-size line (``_CHUNK_LINE``) or a trailer line (``_TRAILER``, ended by an empty line)."""
        stop = data.find(b"\n", pos, end)
        line = self._line
        if stop < 0:
            line += data[pos:end]
            if len(line) > (MAX_CHUNK_LINE if self._state == _CHUNK_LINE else self.max_head):
                self._state = _OPAQUE
            return end
        line += data[pos:stop]
        text = bytes(line).rstrip(b"\r")
        line.clear()
        if self._state == _TRAILER:
            if not text:
                self._state = _HEAD  # the message is complete
                self.messages += 1
            return stop + 1
        size = text.split(b";", 1)[0].strip()
        if not size or size.strip(_HEX) or len(size) > 16:
            self._state = _OPAQUE
            return end
        self._remaining = int(size, 16) + 2  # and the CRLF after the data
        self._state = _CHUNK_DATA if self._remaining > 2 else _TRAILER
        return stop + 1
