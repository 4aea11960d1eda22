"""One client cannot take every request slot (MAX_REQUESTS_PER_CLIENT): a real uvicorn receiver on loopback.

The issue's report: 300 slow senders filled MAX_CONCURRENT_REQUESTS (256) and valid callbacks got 503. Here,
scaled down (MAX_CONCURRENT_REQUESTS=40, so the default share is 10), two floods of 60 stalled bodies each
(more than all the slots together): one straight from 127.0.0.2, one through the trusted proxy on 127.0.0.1
with ``X-Forwarded-For: 203.0.113.7``. Each flood holds at most its share; the rest of it is answered 503
``client_concurrency`` with Retry-After at once; and while both floods hold their sockets a signed callback
from 127.0.0.3, and one forwarded for another address, are answered 200.
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import httpx
import pytest

from tests.procs import start_receiver, wait_for
from veo_archiver.sim import kie as kie_sim

pytestmark = pytest.mark.slow

KEY = "fairness-hmac-key"
FLOOD = 60
SLOTS = 40
SHARE = SLOTS // 4  # MAX_REQUESTS_PER_CLIENT left to its default


def stall(port: int, source: str, forwarded_for: str | None = None) -> socket.socket:
    """A sender that declares a 1000-byte body, sends none of it and waits: it holds a request slot. (With
    part of a body sent, the receiver's close after a refusal finds unread bytes and resets the connection,
    which can discard the 503 before it is read here.)"""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30, source_address=(source, 0))
    forwarded = f"X-Forwarded-For: {forwarded_for}\r\n" if forwarded_for else ""
    head = (
        "POST /callbacks/kie HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"{forwarded}Content-Length: 1000\r\n\r\n"
    )
    sock.sendall(head.encode())
    return sock


class Answers:
    """What the receiver wrote on each socket so far, read without blocking and kept across looks."""

    def __init__(self) -> None:
        self.got: dict[socket.socket, bytes] = {}
        self.closed: set[socket.socket] = set()

    def of(self, sock: socket.socket) -> bytes | None:
        """Everything answered on ``sock`` once the receiver closed it (b"" for a bare close); None before."""
        while sock not in self.closed and (chunk := answer_of(sock)) is not None:
            if not chunk:
                self.closed.add(sock)
            self.got[sock] = self.got.get(sock, b"") + chunk
        return self.got[sock] if sock in self.closed else None


def answer_of(sock: socket.socket) -> bytes | None:
    """What the receiver said on this socket so far; None while it holds it without answering."""
    sock.setblocking(False)
    try:
        return sock.recv(65536)
    except BlockingIOError:
        return None
    except OSError:
        return b""
    finally:
        sock.setblocking(True)


def signed(base: str, task_id: str, *, source: str, forwarded_for: str | None = None) -> httpx.Response:
    body = json.dumps(kie_sim.success_body(task_id, [f"https://cdn.example.com/{task_id}.mp4"]))
    headers = kie_sim.signed_headers(KEY, task_id)
    if forwarded_for:
        headers["X-Forwarded-For"] = forwarded_for
    transport = httpx.HTTPTransport(local_address=source)
    with httpx.Client(transport=transport, timeout=30) as client:
        return client.post(f"{base}/callbacks/kie", content=body, headers=headers)


def test_a_flood_from_one_client_cannot_starve_the_others(redis_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    env = {
        "REDIS_URL": redis_server.url,
        "KIE_WEBHOOK_HMAC_KEYS": KEY,
        "MAX_CONCURRENT_REQUESTS": str(SLOTS),
        "REQUEST_READ_TIMEOUT": "60",  # the floods hold their slots for the whole test
        "FORWARDED_ALLOW_IPS": "127.0.0.1",
        "LOG_LEVEL": "WARNING",
        "PATH": "/usr/bin:/bin",
    }
    service, base = start_receiver(env, tmp_path)
    port = int(base.rsplit(":", 1)[1])
    floods: dict[str, list[socket.socket]] = {"127.0.0.2": [], "203.0.113.7": []}
    try:
        for _ in range(FLOOD):
            floods["127.0.0.2"].append(stall(port, "127.0.0.2"))
            floods["203.0.113.7"].append(stall(port, "127.0.0.1", forwarded_for="203.0.113.7"))

        replies = Answers()

        def settled() -> dict[str, list[bytes | None]] | None:
            seen = {who: [replies.of(s) for s in socks] for who, socks in floods.items()}
            shed = sum(a is not None for answers in seen.values() for a in answers)
            return seen if shed >= 2 * (FLOOD - SHARE) else None

        seen = wait_for(settled, 20, interval=0.2, what="each flood shed past its share")
        for who, answers in seen.items():
            held = [a for a in answers if a is None]
            refused = [a for a in answers if a is not None]
            assert len(held) == SHARE, (who, len(held))
            assert all(a.startswith(b"HTTP/1.1 503") for a in refused), (who, refused[:1])
            assert all(b"client_concurrency" in a and b"retry-after: 5" in a.lower() for a in refused), refused[:1]

        # both floods still hold their sockets: other senders are answered at once
        started = time.monotonic()
        direct = signed(base, "veo_fair_direct", source="127.0.0.3")
        forwarded = signed(base, "veo_fair_forwarded", source="127.0.0.1", forwarded_for="198.51.100.9")
        assert (direct.status_code, direct.headers["x-archiver-outcome"]) == (200, "accepted"), direct.text
        assert (forwarded.status_code, forwarded.headers["x-archiver-outcome"]) == (200, "accepted"), forwarded.text
        assert time.monotonic() - started < 10
        assert sum(replies.of(s) is None for socks in floods.values() for s in socks) == 2 * SHARE  # still held

        # the flooders themselves are refused, with the reason, even for a valid callback
        again = signed(base, "veo_fair_flooder", source="127.0.0.2")
        assert (again.status_code, again.json()["reason"]) == (503, "client_concurrency")
        assert again.headers["retry-after"] == "5"
        metrics = httpx.get(f"{base}/metrics", timeout=10).text
        assert f'veo_archiver_requests_shed_total{{reason="client_concurrency"}} {float(2 * (FLOOD - SHARE) + 1)}' in (
            metrics
        )
    finally:
        for socks in floods.values():
            for sock in socks:
                sock.close()
        service.stop()
