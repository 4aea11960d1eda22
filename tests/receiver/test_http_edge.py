"""The head guard (receiver/http_edge.py) around uvicorn's httptools protocol, served by a real uvicorn on
loopback (in a thread, with the exact ``receiver.server.config``), driven through raw sockets: keep-alive,
pipelining and chunked bodies pass through untouched; a head over the cap is answered 431 without reaching
the app, after the answers already due; a head that takes too long closes the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from receiver import server
from receiver.framing import Framer, HeadTooLarge, body_framing
from tests.servers import free_port

CAP = 4096


class Served:
    def __init__(self, port: int) -> None:
        self.port = port
        self.calls: list[str] = []
        self.refused: list[str] = []

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=10)


def _app(served: Served) -> Starlette:
    async def echo(request: Request) -> Response:
        served.calls.append(request.url.path)
        body = await request.body()
        if request.query_params.get("slow"):
            await asyncio.sleep(0.3)
        return JSONResponse({"path": request.url.path, "body": body.decode()})

    return Starlette(routes=[Route("/{name}", echo, methods=["GET", "POST", "HEAD"])])


@pytest.fixture
def served() -> Iterator[Served]:
    port = free_port()
    served = Served(port)
    config = server.config(
        _app(served),
        "127.0.0.1",
        port,
        header_timeout_s=0.5,
        max_header_bytes=CAP,
        on_refused=served.refused.append,
    )
    config.lifespan = "off"
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not uv.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.02)
    yield served
    uv.should_exit = True
    thread.join(10)


def _read_responses(sock: socket.socket, count: int, after: list[bytes] | None = None) -> list[tuple[int, bytes]]:
    """``count`` complete responses (status, body) read with the same framer the guard uses; whatever arrived
    after them (a later answer in the same read) is appended to ``after``."""
    got: list[tuple[int, bytes]] = []
    data = b""
    while len(got) < count:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed after {len(got)} responses: {data!r}"
        data += chunk
        while len(got) < count and b"\r\n\r\n" in data:
            head, _, rest = data.partition(b"\r\n\r\n")
            kind, length = body_framing(head + b"\r\n")
            assert kind in (0, 1), head  # these answers carry a Content-Length
            if len(rest) < length:
                break
            got.append((int(head[9:12]), rest[:length]))
            data = rest[length:]
    if after is not None:
        after.append(data)
    return got


def _closed(sock: socket.socket, within: float) -> bytes:
    """Everything the server sent until it closed, failing if it stays open past ``within`` seconds."""
    sock.settimeout(within)
    out = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return out
        out += chunk


def test_keep_alive_requests_pass(served: Served) -> None:
    with served.connect() as sock:
        for i in range(3):
            sock.sendall(f"GET /k{i} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            [(status, body)] = _read_responses(sock, 1)
            assert status == 200 and json.loads(body)["path"] == f"/k{i}"
    assert served.calls == ["/k0", "/k1", "/k2"]


def test_pipelined_requests_and_chunked_bodies_pass(served: Served) -> None:
    requests = (
        b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
        b"POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
        b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nchunk\r\n3;x=y\r\ned!\r\n0\r\n\r\n"
        b"HEAD /d HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET /e HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    with served.connect() as sock:
        sock.sendall(requests)
        later: list[bytes] = []
        first = _read_responses(sock, 3, after=later)
        assert [json.loads(b) for _, b in first] == [
            {"path": "/a", "body": ""},
            {"path": "/b", "body": "hello"},
            {"path": "/c", "body": "chunked!"},
        ]
        # the HEAD answer has a Content-Length but no body: then /e
        rest = later[0]
        while b'"/e"' not in rest:
            rest += sock.recv(65536)
        assert rest.startswith(b"HTTP/1.1 200") and rest.count(b"HTTP/1.1 200") == 2
    # byte by byte, a chunked body across many reads
    with served.connect() as sock:
        for byte in b"POST /f HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n4\r\ndrip\r\n0\r\n\r\n":
            sock.send(bytes([byte]))
        assert json.loads(_read_responses(sock, 1)[0][1]) == {"path": "/f", "body": "drip"}


def test_a_head_over_the_cap_is_answered_431_and_never_reaches_the_app(served: Served) -> None:
    with served.connect() as sock:
        sock.sendall(b"POST /big HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * (CAP * 4))
        answer = _closed(sock, 5)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 431 Request Header Fields Too Large"), head
    assert json.loads(body)["reason"] == "headers_too_large" and json.loads(body)["code"] == 431
    assert served.calls == [] and served.refused == ["headers_too_large"]
    # split across reads, after a keep-alive request: the same
    with served.connect() as sock:
        sock.sendall(b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _read_responses(sock, 1)[0][0] == 200
        sock.sendall(b"GET /big2 HTTP/1.1\r\nHost: x\r\n")
        with contextlib.suppress(OSError):  # the server may have closed before the last piece
            for _ in range(2 * CAP // 100):
                sock.sendall(b"X-Pad: " + b"b" * 91 + b"\r\n")
                time.sleep(0.001)
        assert b"headers_too_large" in _closed(sock, 5)
    assert served.calls == ["/ok"] and served.refused == ["headers_too_large"] * 2


def test_a_431_waits_for_the_answer_to_a_pipelined_request_before_it(served: Served) -> None:
    with served.connect() as sock:
        sock.sendall(
            b"POST /first?slow=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi"
            b"GET /big HTTP/1.1\r\nX-Pad: " + b"a" * (CAP * 2) + b"\r\n\r\n"
        )
        answer = _closed(sock, 5)
    first, _, rest = answer.partition(b"HTTP/1.1 431")
    assert first.startswith(b"HTTP/1.1 200") and first.endswith(b'{"path":"/first","body":"hi"}'), answer
    assert b"headers_too_large" in rest
    assert served.calls == ["/first"]


def test_a_client_still_sending_its_oversized_head_reads_the_431_not_a_reset(served: Served) -> None:
    """The staged close (RFC 9112 9.6): closed at once with the client's bytes unread, the kernel resets the
    connection and a client still sending gets a broken pipe (5 of 5 runs before the change)."""
    head = b"POST /big HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * (CAP * 16) + b"\r\nContent-Length: 2\r\n\r\n{}"
    for _ in range(3):
        with served.connect() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)  # small pieces, as over a real network
            for at in range(0, len(head), 8192):
                sock.sendall(head[at : at + 8192])  # never a broken pipe or a reset
                time.sleep(0.0005)
            assert _closed(sock, 5).startswith(b"HTTP/1.1 431 Request Header Fields Too Large")
    assert served.calls == [] and served.refused == ["headers_too_large"] * 3


def test_what_follows_a_431_is_dropped_within_a_bound(served: Served) -> None:
    """A client that never stops sending after its 431 is cut once the linger's bytes are read."""
    sent = 0
    with served.connect() as sock:
        sock.sendall(b"POST /big HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * (CAP * 2))
        piece = b"z" * 65536
        with contextlib.suppress(OSError):
            while sent < 256 * 1024 * 1024:
                sock.sendall(piece)
                sent += len(piece)
    assert sent < 64 * 1024 * 1024, sent  # the linger reads 4 MiB at most (and 2 s), then closes
    assert served.refused == ["headers_too_large"]


def test_a_slow_head_closes_the_connection_but_an_idle_keep_alive_one_is_left_to_uvicorn(served: Served) -> None:
    with served.connect() as sock:
        sock.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        assert _closed(sock, 5) == b""  # closed within 5 s (uvicorn alone would wait for the head forever)
        assert time.monotonic() - started > 0.4  # and not before the 0.5 s head deadline
    with served.connect() as sock:  # nothing sent at all: closed the same way
        assert _closed(sock, 5) == b""
    with served.connect() as sock:
        sock.sendall(b"GET /one HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _read_responses(sock, 1)[0][0] == 200
        time.sleep(1.2)  # past the header time, within uvicorn's keep-alive (5 s): still open
        sock.sendall(b"GET /two HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _read_responses(sock, 1)[0][0] == 200
    assert served.calls == ["/one", "/two"]


# ------------------------------------------------------------------------------------------ the framer


@pytest.mark.parametrize("step", [1, 2, 3, 7, 64, 10_000])
def test_framer_finds_every_message_whatever_the_reads(step: int) -> None:
    stream = (
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
        b"\r\nPOST /a HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello"
        b"POST /b HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n3;e=1\r\nabc\r\n0\r\nT: 1\r\n\r\n"
    ) * 2
    heads: list[bytes] = []
    framer = Framer(1024, lambda head: (heads.append(head), body_framing(head))[1])
    for i in range(0, len(stream), step):
        framer.feed(stream[i : i + step])
    assert (framer.heads, framer.messages, framer.in_head) == (6, 6, False)
    assert [h.split(b" ")[1] for h in heads] == [b"/", b"/a", b"/b"] * 2


def test_framer_cap_counts_the_whole_head() -> None:
    start = b"GET / HTTP/1.1\r\nX: "
    exact = start + b"a" * (100 - len(start) - 4) + b"\r\n\r\n"
    over = exact[:-4] + b"b\r\n\r\n"
    for cut in (len(exact), 50, 1):
        framer = Framer(100, body_framing)
        framer.feed(exact[:cut])
        framer.feed(exact[cut:])
        assert framer.heads == 1
        with pytest.raises(HeadTooLarge) as caught:
            framer = Framer(100, body_framing)
            framer.feed(over[:cut])
            framer.feed(over[cut:])
        assert caught.value.at == 0
    framer = Framer(100, body_framing)
    with pytest.raises(HeadTooLarge) as caught:
        framer.feed(exact + over)
    assert caught.value.at == len(exact)  # the request before it is whole, and handed on
