"""A loopback HTTP/1.1 file server that misbehaves on purpose, at the byte level, one way per path.

Raw sockets rather than ``http.server`` so a response can lie: promise more bytes than it sends, send
more than it promised, stop half way, trickle, or stream for ever. Every request is recorded (path,
``Range``, ``If-Range``) and every body byte written is counted, so a test can say exactly what the
client asked for and how much it pulled.

    with MisbehavingServer() as server:
        url = server.add("/v.mp4", Route(body=data, drop_after=100_000))
        ...
        assert server.ranges("/v.mp4") == [None, "bytes=100000-"]
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

_RANGE = re.compile(r"bytes=(\d+)-(\d*)$")
_REASONS = {
    200: "OK",
    206: "Partial Content",
    301: "Moved Permanently",
    302: "Found",
    307: "Temporary Redirect",
    403: "Forbidden",
    404: "Not Found",
    416: "Range Not Satisfiable",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}
SEND_BYTES = 64 * 1024


@dataclass
class Route:
    """How one path answers. The defaults are a well-behaved CDN: Content-Length, ETag, byte ranges."""

    #: the file (ranges, ETag and lies need the whole body); or ``stream`` for huge / endless bodies
    body: bytes = b""
    stream: Callable[[], Iterable[bytes]] | None = None
    content_type: str | None = "video/mp4"
    #: honour ``Range`` and advertise ``Accept-Ranges: bytes``
    ranges: bool = True
    etag: bool = True
    #: close the connection after this many body bytes, on the first ``drop_times`` responses (None: always)
    drop_after: int | None = None
    drop_times: int | None = 1
    #: send ``trickle[0]`` bytes, then sleep ``trickle[1]`` seconds, and so on
    trickle: tuple[int, float] | None = None
    #: send this Content-Length instead of the true one, then close after the body (a lie either way)
    declared_length: int | None = None
    #: no Content-Length: ``Transfer-Encoding: chunked``
    chunked: bool = False
    #: statuses to answer, one per request, before serving normally (e.g. ``[503, 503]``)
    fail_first: list[int] = field(default_factory=list)
    #: answer every request with this status (and ``body`` as an error page) instead of the file
    status: int | None = None
    #: ``Location`` for a redirect (with ``status``, default 302)
    location: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    #: treat every ``If-Range`` as stale: the file "changed", so a range request gets a 200 full body
    stale_if_range: bool = False
    #: a broken edge that ignores ``If-Range`` and answers ranges from another version of the file
    range_source: bytes | None = None
    #: ...sending that version's ETag with the 206 (False: the original's, as a broken cache might)
    range_source_etag: bool = True

    @property
    def etag_value(self) -> str:
        return '"' + hashlib.sha256(self.body).hexdigest()[:32] + '"'


@dataclass(frozen=True)
class Seen:
    path: str
    range: str | None
    if_range: str | None
    headers: dict[str, str]


class MisbehavingServer:
    """Serves :class:`Route` s on 127.0.0.1 from a thread per connection."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.requests: list[Seen] = []
        self.hits: Counter[str] = Counter()
        self.body_bytes_sent: Counter[str] = Counter()
        self._served: Counter[str] = Counter()  # responses that reached the misbehaviour stage
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._connections: set[socket.socket] = set()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self._thread = threading.Thread(target=self._accept_loop, name="misbehaving-accept", daemon=True)

    @property
    def port(self) -> int:
        return int(self._listener.getsockname()[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def add(self, path: str, route: Route) -> str:
        self.routes[path] = route
        return self.base_url + path

    def ranges(self, path: str) -> list[str | None]:
        """The ``Range`` header of each request for ``path``, in order (None when absent)."""
        with self._lock:
            return [seen.range for seen in self.requests if seen.path == path]

    def if_ranges(self, path: str) -> list[str | None]:
        with self._lock:
            return [seen.if_range for seen in self.requests if seen.path == path]

    def __enter__(self) -> MisbehavingServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self._closing.set()
        try:
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accept loop at once (Linux), not at its timeout
        except OSError:
            pass
        self._thread.join(5)
        self._listener.close()
        with self._lock:
            for conn in list(self._connections):
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                conn.close()

    # -----------------------------------------------------------------------------------------------------

    def _accept_loop(self) -> None:
        while not self._closing.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self._connections.add(conn)
            threading.Thread(target=self._connection, args=(conn,), daemon=True).start()

    def _connection(self, conn: socket.socket) -> None:
        buffer = b""
        try:
            conn.settimeout(30)  # inside the try: the server may close the socket before this thread runs
            while not self._closing.is_set():
                while b"\r\n\r\n" not in buffer:
                    data = conn.recv(65536)
                    if not data or len(buffer) > 65536:
                        return
                    buffer += data
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, target, _version = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
                keep_alive = self._respond(conn, method, target.split("?", 1)[0], headers)
                if not keep_alive or headers.get("connection", "").lower() == "close":
                    return
        except OSError:
            return
        finally:
            with self._lock:
                self._connections.discard(conn)
            try:
                conn.shutdown(socket.SHUT_WR)  # FIN after everything written: the client reads all of it
            except OSError:
                pass
            conn.close()

    def _respond(self, conn: socket.socket, method: str, path: str, headers: dict[str, str]) -> bool:
        """Answer one request; True when the connection may serve another one."""
        with self._lock:
            self.hits[path] += 1
            self.requests.append(Seen(path, headers.get("range"), headers.get("if-range"), headers))
            route = self.routes.get(path)
            n = self.hits[path]
        if route is None:
            self._head(conn, 404, {"Content-Length": "0"})
            return True
        if n <= len(route.fail_first):  # a short plain-text error page, then normal service
            page = f"temporarily unavailable ({n})\n".encode()
            extra = {"Content-Type": "text/plain", "Content-Length": str(len(page)), **route.headers}
            self._head(conn, route.fail_first[n - 1], extra)
            return self._send(conn, path, page, None)
        if route.status is not None:  # ``body`` (or ``stream``) is the error page or the redirect's body
            extra = dict(route.headers)
            if route.location is not None:
                extra["Location"] = route.location
            if route.content_type and (route.body or route.stream is not None):
                extra["Content-Type"] = route.content_type
            if route.stream is not None:
                extra["Transfer-Encoding"] = "chunked"
                self._head(conn, route.status, extra)
                self._send_chunked(conn, path, route.stream(), None)
                return False
            extra["Content-Length"] = str(len(route.body))
            self._head(conn, route.status, extra)
            return self._send(conn, path, route.body, None)
        with self._lock:
            self._served[path] += 1
            served = self._served[path]
        dropping = route.drop_after is not None and (route.drop_times is None or served <= route.drop_times)
        limit = route.drop_after if dropping else None
        out: dict[str, str] = {}
        if route.content_type:
            out["Content-Type"] = route.content_type
        if route.etag and route.stream is None:
            out["ETag"] = route.etag_value
        if route.ranges:
            out["Accept-Ranges"] = "bytes"
        out.update(route.headers)

        if route.stream is not None:  # huge or endless: always the whole thing from the start
            if route.chunked:
                out["Transfer-Encoding"] = "chunked"
                self._head(conn, 200, out)
                self._send_chunked(conn, path, route.stream(), limit)
                return False
            assert route.declared_length is not None, "a streamed route needs chunked or declared_length"
            out["Content-Length"] = str(route.declared_length)
            self._head(conn, 200, out)
            self._send(conn, path, iter(route.stream()), limit, trickle=route.trickle)
            return False

        body = route.body
        status = 200
        match = _RANGE.match(headers.get("range", ""))
        if_range = headers.get("if-range")
        fresh = if_range is None or (if_range == route.etag_value and not route.stale_if_range)
        if route.range_source is not None and match:
            body, fresh = route.range_source, True
            if route.range_source_etag:
                out["ETag"] = Route(body=body).etag_value
        if route.ranges and match and fresh:
            start = int(match.group(1))
            end = int(match.group(2)) if match.group(2) else len(body) - 1
            if start >= len(body):
                self._head(conn, 416, {"Content-Range": f"bytes */{len(body)}", "Content-Length": "0"})
                return True
            out["Content-Range"] = f"bytes {start}-{end}/{len(body)}"
            body = body[start : end + 1]
            status = 206
        if route.chunked:
            out["Transfer-Encoding"] = "chunked"
            self._head(conn, status, out)
            self._send_chunked(conn, path, _pieces(body), limit)
            return False
        lying = route.declared_length is not None
        out["Content-Length"] = str(route.declared_length if lying else len(body))
        self._head(conn, status, out)
        complete = self._send(conn, path, body, limit, trickle=route.trickle)
        return complete and not lying and limit is None

    # -----------------------------------------------------------------------------------------------------

    def _head(self, conn: socket.socket, status: int, headers: dict[str, str]) -> None:
        lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        conn.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))

    def _send(
        self,
        conn: socket.socket,
        path: str,
        body: bytes | Iterator[bytes],
        limit: int | None,
        *,
        trickle: tuple[int, float] | None = None,
    ) -> bool:
        """Write ``body`` (stopping after ``limit`` bytes); False when it stopped early or the client left."""
        pieces = _pieces(body, trickle[0] if trickle else SEND_BYTES) if isinstance(body, bytes) else body
        sent = 0
        for piece in pieces:
            if self._closing.is_set():
                return False
            if limit is not None and sent + len(piece) >= limit:
                piece = piece[: limit - sent]
                self._write(conn, path, piece)
                return False
            if not self._write(conn, path, piece):
                return False
            sent += len(piece)
            if trickle:
                time.sleep(trickle[1])
        return True

    def _send_chunked(self, conn: socket.socket, path: str, pieces: Iterable[bytes], limit: int | None) -> None:
        sent = 0
        for piece in pieces:
            if self._closing.is_set():
                return
            if limit is not None and sent + len(piece) >= limit:
                piece = piece[: limit - sent]
                self._write(conn, path, f"{len(piece):x}\r\n".encode() + piece + b"\r\n", counted=len(piece))
                return
            if piece and not self._write(
                conn, path, f"{len(piece):x}\r\n".encode() + piece + b"\r\n", counted=len(piece)
            ):
                return
            sent += len(piece)
        self._write(conn, path, b"0\r\n\r\n", counted=0)

    def _write(self, conn: socket.socket, path: str, data: bytes, *, counted: int | None = None) -> bool:
        try:
            conn.sendall(data)
        except OSError:
            return False
        with self._lock:
            self.body_bytes_sent[path] += len(data) if counted is None else counted
        return True


def _pieces(body: bytes, size: int = SEND_BYTES) -> Iterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


def endless(piece: bytes = b"\0" * SEND_BYTES, head: bytes = b"") -> Callable[[], Iterator[bytes]]:
    """A stream factory that never ends (for caps and redirects with a body that never stops)."""

    def stream() -> Iterator[bytes]:
        if head:
            yield head
        while True:
            yield piece

    return stream


class LoopbackOnlyNetwork:
    """Stands in for ``socket.create_connection`` (which httpcore's sync backend calls for every connect).

    Records each ``(host, port)`` asked for; lets loopback through; sends the addresses in ``nat`` to a
    loopback one instead (a stand-in for a public host, so no test ever leaves the machine); resolves a
    *name* with ``resolver`` like the OS would; and fails the test on anything else.

        network = LoopbackOnlyNetwork.install(monkeypatch)
    """

    def __init__(self, real: Callable[..., socket.socket]) -> None:
        self.connects: list[tuple[str, int]] = []
        self.nat: dict[tuple[str, int], tuple[str, int]] = {}
        self.resolver: Callable[[str, int], list[str]] | None = None
        self._real = real

    @classmethod
    def install(cls, monkeypatch: Any) -> LoopbackOnlyNetwork:
        network = cls(socket.create_connection)
        monkeypatch.setattr(socket, "create_connection", network)
        return network

    def __call__(self, address: tuple[str, int], *args: Any, **kwargs: Any) -> socket.socket:
        host, port = str(address[0]), int(address[1])
        self.connects.append((host, port))
        try:
            ipaddress.ip_address(host)
        except ValueError:
            if self.resolver is None:
                raise AssertionError(f"connect by name to {host}:{port}: nothing checked that address") from None
            host = self.resolver(host, port)[0]
        if (host, port) in self.nat:
            return self._real(self.nat[(host, port)], *args, **kwargs)
        if host in ("127.0.0.1", "::1"):
            return self._real((host, port), *args, **kwargs)
        raise AssertionError(f"a test tried to connect to {host}:{port}")
