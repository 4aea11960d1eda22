"""Downstream notifications with real components: redis-server, ``veo-archiver notify`` processes (and
``veo-archiver up``), outcomes published by the worker's own :func:`veo_archiver.records.outcome.publish`, and a real
downstream HTTP server on loopback that checks every notification's Standard Webhooks signature with
:func:`veo_archiver.standard_webhooks.verify`."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import redis

from tests import stacks
from tests.fake_clock import FakeClock
from tests.procs import REPO, Service, wait_for
from tests.servers import RedisServer, free_port
from veo_archiver import archive_keys, redis_keys, standard_webhooks
from veo_archiver.errors import Rejected
from veo_archiver.records import outcome as outcomes
from workers import notify

SECRET = "whsec_" + base64.b64encode(b"downstream-test-secret-32-bytes!").decode()
FAST = ["--retry-base", "0.3", "--retry-cap", "2", "--claim-after", "1", "--timeout", "5"]


@dataclass
class Received:
    path: str
    webhook_id: str
    verified: bool
    status: int
    body: dict[str, Any]


class Downstream:
    """A pipeline's webhook endpoint: verifies, records, answers what each path's behaviour says."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.behaviours: dict[str, Callable[[int], int]] = {}
        self.in_flight = threading.Event()
        self.release = threading.Event()
        self.hold_first: set[str] = set()
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}
        downstream = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                try:
                    standard_webhooks.verify(dict(self.headers), body, [SECRET], now=time.time())
                    verified = True
                except Rejected:
                    verified = False
                with downstream._lock:
                    n = downstream._counts.get(self.path, 0)
                    downstream._counts[self.path] = n + 1
                if self.path in downstream.hold_first and n == 0:
                    downstream.in_flight.set()
                    downstream.release.wait(30)
                    status = 503
                elif self.path == "/redirect":
                    status = 302
                else:
                    status = downstream.behaviours.get(self.path, lambda n: 200)(n)
                with downstream._lock:
                    webhook_id = self.headers.get("webhook-id", "")
                    record = Received(self.path, webhook_id, verified, status, json.loads(body or b"{}"))
                    downstream.received.append(record)
                try:
                    self.send_response(status)
                    if status == 302:
                        self.send_header("Location", f"http://127.0.0.1:{downstream.port}/redirected")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except OSError:
                    pass  # the notifier was killed while we held its request

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def on(self, path: str) -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.path == path]


@pytest.fixture
def downstream() -> Iterator[Downstream]:
    server = Downstream()
    server.thread.start()
    try:
        yield server
    finally:
        server.release.set()
        server.server.shutdown()
        server.server.server_close()


def notifier(redis_server: RedisServer, urls: list[str], tmp_path: Path, *extra: str, secret: str = SECRET) -> Service:
    env = {"REDIS_URL": redis_server.url, "NOTIFY_URLS": ",".join(urls), "NOTIFY_SECRET": secret}
    log = tmp_path / f"notify-{time.monotonic_ns()}.log"
    return Service(["notify", *FAST, "--from-start", *extra], env, log).start()


def publish(rds: redis.Redis, task_id: str, outcome: str = "archived") -> str:
    outcomes.publish(
        rds,
        outcome=outcome,
        provider="kie",
        task_id=task_id,
        status="succeeded",
        manifest_key=archive_keys.manifest_key("kie", task_id),
        location=f"s3://b/kie/{task_id}/manifest.json",
        files=[{"index": 0, "key": f"kie/{task_id}/0.mp4", "size": 1234, "sha256": "ab" * 32}],
    )
    [(entry_id, _)] = rds.xrevrange(redis_keys.outcomes_stream(), count=1)
    return str(entry_id.decode())


def pending(rds: redis.Redis) -> int:
    return int(rds.xpending(redis_keys.outcomes_stream(), notify.GROUP)["pending"])


@contextlib.contextmanager
def in_process(
    redis_server: RedisServer, urls: list[str], clock: FakeClock, **policy: Any
) -> Iterator[notify.Notifier]:
    """A Notifier in the test's process on ``clock``, with the backoff of ``FAST``; the test drives its steps."""
    settings = stacks.settings_for(redis_server, notify_urls=tuple(urls), notify_secret=SECRET)
    fast = {"retry_base_s": 0.3, "retry_cap_s": 2.0, "claim_after_s": 1.0, "timeout_s": 5.0, **policy}
    connection = redis_server.client()
    notifier = notify.Notifier(connection, settings, policy=notify.NotifyPolicy(**fast), clock=clock)
    notifier.ensure_group(from_start=True)
    try:
        yield notifier
    finally:
        notifier.close()
        connection.close()


def steps_until(notifier: notify.Notifier, clock: FakeClock, done: Callable[[], bool], limit: int = 10) -> int:
    """Step, then move the clock past the longest backoff, until ``done()``; how many steps it took."""
    for n in range(1, limit + 1):
        notifier.step(block_ms=0)
        if done():
            return n
        assert notifier.step(block_ms=0) == 0  # a retry is sent when it is due, not before
        clock.advance(notifier.policy.retry_cap_s)
    raise AssertionError(f"not done after {limit} steps")


def test_a_failing_url_gets_the_notification_once_after_retries(
    redis_server: RedisServer, downstream: Downstream
) -> None:
    downstream.behaviours["/flaky"] = lambda n: 503 if n < 2 else 200
    rds = redis_server.client()
    clock = FakeClock(time.time())  # the downstream checks webhook-timestamp against its own time
    with in_process(redis_server, [downstream.url("/flaky"), downstream.url("/ok")], clock) as notifier:
        entry_id = publish(rds, "veo_task_notify_1")
        assert steps_until(notifier, clock, lambda: any(r.status == 200 for r in downstream.on("/flaky"))) == 3
        assert pending(rds) == 0
        clock.advance(24 * 3600)  # nothing more arrives, however long it waits
        assert notifier.step(block_ms=0) == 0
    flaky, ok = downstream.on("/flaky"), downstream.on("/ok")
    assert [r.status for r in flaky] == [503, 503, 200]
    assert [r.status for r in ok] == [200]
    assert all(r.verified for r in flaky + ok)
    assert {r.webhook_id for r in flaky} == {f"{entry_id}-{notify.url_hash(downstream.url('/flaky'))}"}
    assert ok[0].webhook_id == f"{entry_id}-{notify.url_hash(downstream.url('/ok'))}"
    body = ok[0].body
    assert body["type"] == "veo.outcome.archived"
    assert body["data"]["task_id"] == "veo_task_notify_1" and body["data"]["stream_id"] == entry_id
    assert body["data"]["files"][0]["size"] == 1234 and body["data"]["bytes"] == 1234
    assert not rds.exists(notify.DEAD_LIST, notify.RETRY_ZSET, notify.entry_key(entry_id))


def test_a_url_that_always_fails_is_dead_lettered(redis_server: RedisServer, downstream: Downstream) -> None:
    downstream.behaviours["/down"] = lambda n: 503
    rds = redis_server.client()
    urls = [downstream.url("/down"), downstream.url("/redirect")]
    clock = FakeClock(time.time())
    with in_process(redis_server, urls, clock, max_attempts=3) as notifier:
        entry_id = publish(rds, "veo_task_notify_2", outcome="dead_letter")
        assert steps_until(notifier, clock, lambda: rds.llen(notify.DEAD_LIST) == 2) == 3
        assert pending(rds) == 0
    assert [r.status for r in downstream.on("/down")] == [503, 503, 503]
    assert len(downstream.on("/redirect")) == 3
    assert downstream.on("/redirected") == []  # redirects are never followed
    dead = {d["url"]: d for d in notify.dead_letters(rds)}
    assert dead[urls[0]]["attempts"] == 3 and dead[urls[0]]["error"] == "HTTP 503"
    assert "not followed" in dead[urls[1]]["error"]
    for record in dead.values():
        assert record["entry_id"] == entry_id and record["entry"]["task_id"] == "veo_task_notify_2"
    assert not rds.exists(notify.RETRY_ZSET, notify.entry_key(entry_id))


@pytest.mark.slow  # notifier processes, one killed
def test_a_killed_notifier_s_pending_entry_is_delivered_by_the_next(
    redis_server: RedisServer, tmp_path: Path, downstream: Downstream
) -> None:
    downstream.hold_first.add("/slow")
    rds = redis_server.client()
    first = notifier(redis_server, [downstream.url("/slow")], tmp_path)
    second: Service | None = None
    try:
        entry_id = publish(rds, "veo_task_notify_3")
        assert downstream.in_flight.wait(20), first.log()[-3000:]
        first.kill_group()  # SIGKILL mid-request: the entry stays pending in its consumer
        downstream.release.set()
        assert pending(rds) == 1
        second = notifier(redis_server, [downstream.url("/slow")], tmp_path)
        wait_for(
            lambda: any(r.status == 200 for r in downstream.on("/slow")),
            30,
            what=f"delivery by the second notifier\n{second.log()[-3000:]}",
        )
        wait_for(lambda: pending(rds) == 0, 10, what="the entry acknowledged")
    finally:
        first.stop()
        if second is not None:
            second.stop()
    delivered = [r for r in downstream.on("/slow") if r.status == 200]
    assert len(delivered) == 1 and delivered[0].verified
    assert delivered[0].webhook_id == f"{entry_id}-{notify.url_hash(downstream.url('/slow'))}"
    assert "took over an outcome" in second.log()
    # a stopped notifier with nothing pending leaves the group
    consumers = rds.xinfo_consumers(redis_keys.outcomes_stream(), notify.GROUP)
    assert all(int(c["pending"]) == 0 for c in consumers)


@pytest.mark.slow  # a process per case
@pytest.mark.parametrize(
    ("secret", "words"),
    [
        ("not-a-webhook-secret", "whsec_"),
        ("whsec_" + base64.b64encode(b"short").decode(), "at least 24"),
        ("whsec_!!!", "base64"),
    ],
)
def test_notify_secret_must_be_a_whsec_secret(redis_server: RedisServer, secret: str, words: str) -> None:
    env = {**os.environ, "REDIS_URL": redis_server.url, "NOTIFY_URLS": "http://127.0.0.1:9/x", "NOTIFY_SECRET": secret}
    done = subprocess.run(
        [sys.executable, "-m", "veo_archiver", "notify"], env=env, cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert "NOTIFY_SECRET" in done.stderr and words in done.stderr


@pytest.mark.slow  # `veo-archiver up`: receiver, worker and notifier processes
def test_up_starts_the_notifier_when_notify_urls_is_set(
    redis_server: RedisServer, tmp_path: Path, downstream: Downstream
) -> None:
    rds = redis_server.client()
    port = free_port()
    env = {
        "REDIS_URL": redis_server.url,
        "ARCHIVE_URL": str(tmp_path / "archive"),
        "NOTIFY_URLS": downstream.url("/up"),
        "NOTIFY_SECRET": SECRET,
        "KIE_WEBHOOK_HMAC_KEYS": "k",
    }
    argv = ["up", "--port", str(port), "--data-dir", str(tmp_path / "data"), "--stop-timeout", "20"]
    up = Service(argv, env, tmp_path / "up.log").start()
    try:
        # the notifier `up` starts creates its group at the stream's end: publish once it exists
        wait_for(
            lambda: rds.exists(redis_keys.outcomes_stream()) and rds.xinfo_groups(redis_keys.outcomes_stream()),
            30,
            what=f"the notifier's consumer group\n{up.log()[-3000:]}",
        )
        publish(rds, "veo_task_notify_up")
        wait_for(lambda: downstream.on("/up"), 30, what=f"a notification\n{up.log()[-3000:]}")
    finally:
        assert up.stop(timeout=60) == 0, up.log()[-3000:]
    [received] = downstream.on("/up")
    assert received.verified and received.body["data"]["task_id"] == "veo_task_notify_up"
