"""Slow and stalling senders against the real receiver (uvicorn, real redis-server): they are cut, and a
valid callback sent meanwhile is answered while they still hold their sockets.

Done-when of the issue: 60 unauthenticated connections that send 1 MiB − 1 of a 1 MiB body and stall are
cut within 45 s, while a valid callback sent meanwhile is answered 200. And of issue 19: a signed callback
carrying a 1 MiB header is refused with 431 and nothing of it is stored; 20 connections each sending a
16 MB header raise the receiver's memory by less than 64 MB.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from pathlib import Path

import httpx
import psutil
import pytest
import redis

from tests.procs import start_receiver, wait_for
from tests.stacks import stored_keys
from veo_archiver.providers.kie import sign

pytestmark = pytest.mark.slow

HMAC_KEY = "slow-senders-hmac-key"
MIB = 1024 * 1024


def _stall(port: int, path: str, declared: int, sent: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {declared}\r\n\r\n"
    ).encode()
    sock.sendall(head + b" " * sent)
    return sock


def _closed_or_answered(sock: socket.socket) -> bytes | None:
    """What the server said before closing (b"" for a bare close); None while the socket is still open."""
    sock.setblocking(False)
    try:
        data = sock.recv(65536)
    except BlockingIOError:
        return None
    except OSError:
        return b""
    finally:
        sock.setblocking(True)
    return data


def test_stalled_bodies_are_cut_and_a_valid_callback_is_answered_meanwhile(redis_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    env = {
        "REDIS_URL": redis_server.url,
        "KIE_WEBHOOK_HMAC_KEYS": HMAC_KEY,
        "CALLBACK_SIGNING_KEYS": "slow-senders-signing-key",
        "REQUEST_READ_TIMEOUT": "10",
        "LOG_LEVEL": "WARNING",
        "PATH": "/usr/bin:/bin",
    }
    service, base = start_receiver(env, tmp_path)
    port = int(base.rsplit(":", 1)[1])
    stalled: list[socket.socket] = []
    try:
        started = time.monotonic()
        for _ in range(60):
            stalled.append(_stall(port, "/callbacks/apixo", MIB, MIB - 1))
        # every stalled sender is connected and holds its socket: now a genuine callback
        assert all(_closed_or_answered(s) is None for s in stalled)
        ts = int(time.time())
        body = json.dumps({"code": 200, "msg": "ok", "data": {"taskId": "veo_slow_ok", "info": {"resultUrls": []}}})
        headers = {"X-Webhook-Timestamp": str(ts), "X-Webhook-Signature": sign(HMAC_KEY, "veo_slow_ok", ts)}
        answer = httpx.post(f"{base}/callbacks/kie", content=body, headers=headers, timeout=30)
        assert answer.status_code == 200, answer.text
        # answered while the slow senders were all still holding their sockets: it did not wait for them
        still_open = sum(_closed_or_answered(s) is None for s in stalled)
        assert still_open == len(stalled)

        endings = wait_for(
            lambda: (lambda got: got if all(g is not None for g in got) else None)(
                [_closed_or_answered(s) for s in stalled]
            ),
            timeout=45,
            interval=0.5,
            what="the receiver to cut 60 stalled bodies",
        )
        assert time.monotonic() - started < 45
        answered = [e for e in endings if e]
        # each one gets a 408 with the JSON reason before the close (a bare close would also be acceptable)
        assert all(e.startswith(b"HTTP/1.1 408") and b"request_timeout" in e for e in answered), answered[:2]
        metrics = httpx.get(f"{base}/metrics", timeout=10).text
        assert 'veo_archiver_requests_shed_total{reason="request_timeout"} 60.0' in metrics
    finally:
        for sock in stalled:
            sock.close()
        service.stop()


def test_past_the_concurrency_bound_a_request_gets_503_with_retry_after(redis_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    env = {
        "REDIS_URL": redis_server.url,
        "CALLBACK_SIGNING_KEYS": "slow-senders-signing-key",
        "MAX_CONCURRENT_REQUESTS": "4",
        "MAX_REQUESTS_PER_CLIENT": "4",  # every sender here is 127.0.0.1: this test is about the global bound
        "REQUEST_READ_TIMEOUT": "30",
        "LOG_LEVEL": "WARNING",
        "PATH": "/usr/bin:/bin",
    }
    service, base = start_receiver(env, tmp_path)
    port = int(base.rsplit(":", 1)[1])
    stalled = [_stall(port, "/callbacks/evolink", 1000, 10) for _ in range(4)]
    try:

        def shed() -> httpx.Response | None:
            answer = httpx.post(f"{base}/callbacks/evolink", content=b"{}", timeout=10)
            return answer if answer.status_code == 503 else None

        answer = wait_for(shed, timeout=20, what="a request past the bound to be shed")
        assert answer.headers["retry-after"]
        assert answer.json()["reason"] == "overloaded"
        assert httpx.get(f"{base}/healthz", timeout=10).status_code == 200  # never shed
    finally:
        for sock in stalled:
            sock.close()
        service.stop()


def test_forwarded_for_cannot_open_metrics_through_real_uvicorn(redis_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """With FORWARDED_ALLOW_IPS=* (once suggested by deploy/README.md) a forged ``127.0.0.1`` on the left of
    X-Forwarded-For must not make a remote sender look local to the loopback-only /metrics."""
    env = {"REDIS_URL": redis_server.url, "FORWARDED_ALLOW_IPS": "*", "LOG_LEVEL": "WARNING", "PATH": "/usr/bin:/bin"}
    service, base = start_receiver(env, tmp_path)
    try:
        assert httpx.get(f"{base}/metrics", timeout=10).status_code == 200  # really local: allowed
        forged = {"X-Forwarded-For": "127.0.0.1, 203.0.113.9"}
        answer = httpx.get(f"{base}/metrics", headers=forged, timeout=10)
        assert answer.status_code == 403, answer.text
        assert answer.json()["reason"] == "loopback_only"
    finally:
        service.stop()


def test_senders_dripping_their_headers_are_closed(redis_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """uvicorn bounds no header time by itself: 300 sockets dripping a byte every 10 s stayed open. With
    REQUEST_READ_TIMEOUT=3 every dripping connection is closed, and a valid request meanwhile is answered."""
    env = {"REDIS_URL": redis_server.url, "REQUEST_READ_TIMEOUT": "3", "LOG_LEVEL": "WARNING", "PATH": "/usr/bin:/bin"}
    service, base = start_receiver(env, tmp_path)
    port = int(base.rsplit(":", 1)[1])
    drippers = []
    try:
        for _ in range(30):
            sock = socket.create_connection(("127.0.0.1", port), timeout=30)
            sock.sendall(b"POST /callbacks/apixo HTTP/1.1\r\nHost: x\r\n")  # and never the end of the headers
            drippers.append(sock)
        assert httpx.get(f"{base}/healthz", timeout=10).status_code == 200  # not blocked by them

        def all_closed() -> bool:
            for sock in drippers:
                with contextlib.suppress(OSError):
                    sock.sendall(b"X")  # keep dripping, as the attacker would
            return all(_closed_or_answered(s) is not None for s in drippers)

        wait_for(all_closed, timeout=30, interval=0.5, what="dripping connections to be closed")
        # a keep-alive connection that starts a second request and stalls in its headers is closed too
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 200")
            sock.sendall(b"GET /healthz HTTP/1.1\r\n")
            wait_for(lambda: _closed_or_answered(sock) is not None, timeout=30, interval=0.5, what="a close")
    finally:
        for sock in drippers:
            sock.close()
        service.stop()


def _signed_kie(task_id: str) -> tuple[bytes, dict[str, str]]:
    ts = int(time.time())
    body = json.dumps({"code": 200, "msg": "ok", "data": {"taskId": task_id, "info": {"resultUrls": []}}})
    return body.encode(), {"X-Webhook-Timestamp": str(ts), "X-Webhook-Signature": sign(HMAC_KEY, task_id, ts)}


def _raw_request(path: str, body: bytes, headers: dict[str, str]) -> bytes:
    lines = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n{lines}"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def test_a_signed_callback_with_a_1_mib_header_gets_431_and_nothing_is_stored(redis_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    env = {
        "REDIS_URL": redis_server.url,
        "KIE_WEBHOOK_HMAC_KEYS": HMAC_KEY,
        "CALLBACK_SIGNING_KEYS": "header-cap-signing-key",
        "LOG_LEVEL": "INFO",
        "PATH": "/usr/bin:/bin",
    }
    service, base = start_receiver(env, tmp_path)
    port = int(base.rsplit(":", 1)[1])
    client = redis.Redis.from_url(redis_server.url)
    try:
        before = stored_keys(client)
        body, headers = _signed_kie("veo_big_header")
        answer = httpx.post(f"{base}/callbacks/kie", content=body, headers={**headers, "X-Pad": "p" * MIB}, timeout=30)
        assert answer.status_code == 431, answer.text
        assert answer.json() == {
            "code": 431,
            "msg": "request headers over 65536 bytes (MAX_HEADER_BYTES)",
            "reason": "headers_too_large",
        }
        assert answer.headers["connection"] == "close"
        assert stored_keys(client) == before  # no delivery, no job, no dedupe key: nothing of it
        # the same callback with ordinary headers, pipelined behind a keep-alive one, is accepted
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            ok_body, ok_headers = _signed_kie("veo_small_header")
            sock.sendall(
                b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" + _raw_request("/callbacks/kie", ok_body, ok_headers)
            )
            got = b""
            while got.count(b"HTTP/1.1 200") < 2 or not got.endswith(b"}"):
                chunk = sock.recv(65536)
                assert chunk, got
                got += chunk
            assert b"x-archiver-outcome" in got.lower()
        metrics = httpx.get(f"{base}/metrics", timeout=10).text
        assert 'veo_archiver_requests_shed_total{reason="headers_too_large"} 1.0' in metrics
        assert "over MAX_HEADER_BYTES" in service.log()
    finally:
        client.close()
        service.stop()


def test_twenty_16_mb_headers_leave_the_receivers_memory_flat(redis_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    env = {"REDIS_URL": redis_server.url, "LOG_LEVEL": "WARNING", "PATH": "/usr/bin:/bin"}
    service, base = start_receiver(env, tmp_path)
    port = int(base.rsplit(":", 1)[1])
    process = psutil.Process(service.pid)
    for _ in range(20):  # warm: the first requests allocate what every later one reuses
        assert httpx.get(f"{base}/healthz", timeout=10).status_code == 200
    baseline = process.memory_info().rss
    peak = baseline
    answers: list[bytes] = []

    def flood() -> None:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            with contextlib.suppress(OSError):  # the receiver closes once the cap is passed
                sock.sendall(b"POST /callbacks/kie HTTP/1.1\r\nHost: x\r\nX-Pad: ")
                piece = b"z" * MIB
                for _ in range(16):
                    sock.sendall(piece)
            with contextlib.suppress(OSError):
                answers.append(sock.recv(65536))

    threads = [threading.Thread(target=flood) for _ in range(20)]
    try:
        for thread in threads:
            thread.start()
        while any(t.is_alive() for t in threads):
            peak = max(peak, process.memory_info().rss)
            time.sleep(0.01)
        peak = max(peak, process.memory_info().rss)
        growth = peak - baseline
        assert growth < 64 * MIB, f"receiver RSS grew by {growth / MIB:.1f} MiB"
        print(f"receiver RSS: {baseline / MIB:.1f} MiB before, peak {peak / MIB:.1f} MiB (+{growth / MIB:.1f})")
        assert any(a.startswith(b"HTTP/1.1 431") for a in answers), answers[:2]
        assert httpx.get(f"{base}/healthz", timeout=10).status_code == 200
    finally:
        service.stop()
