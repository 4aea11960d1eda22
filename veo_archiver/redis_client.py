"""The one way a command-line process or a worker connects to Redis: explicit timeouts, a clear error, and
one way to wait for it.

A long-running process (worker, sweeper, notifier) waits for Redis at start with :func:`wait_until_up`, the
same wait (same pace, same log lines) it does when Redis goes away later: PING after :data:`RETRY_FIRST_S`,
doubling up to :data:`RETRY_LONGEST_S`, a line saying where it waits (the URL without its password) and the
pace, a reminder every :data:`REMINDER_S`, and a line once Redis answers. ``REDIS_START_TIMEOUT`` bounds the
wait at start (0, the default: wait as long as it takes, which is what an orchestrator rolling workers out
during a Redis failover needs). The receiver does not wait: it serves and spools (:mod:`receiver.redis_wait`
keeps probing with the same pace and lines).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit, urlunsplit

import redis

from veo_archiver.errors import ConfigError

log = logging.getLogger(__name__)

#: a CLI command or a worker's side task waits at most this long for one Redis reply
SOCKET_TIMEOUT_S = 10.0
CONNECT_TIMEOUT_S = 2.0

#: the pace of every wait for Redis: first PING after this many seconds, doubling up to RETRY_LONGEST_S
RETRY_FIRST_S = 0.5
RETRY_LONGEST_S = 10.0
#: while waiting, a reminder line this often
REMINDER_S = 60.0


def connect(url: str, *, check: bool = True, socket_timeout: float | None = SOCKET_TIMEOUT_S) -> redis.Redis:
    """A client for ``url``; with ``check`` (the default) it is pinged once, and an unreachable server is a
    :class:`ConfigError` that says which variable to look at. An RQ worker passes ``socket_timeout=None``:
    its blocking dequeue waits longer than any reply timeout."""
    connection = redis.Redis.from_url(url, socket_timeout=socket_timeout, socket_connect_timeout=CONNECT_TIMEOUT_S)
    if check:
        try:
            connection.ping()
        except redis.RedisError as exc:
            raise ConfigError(f"cannot reach Redis at REDIS_URL ({exc}); is it running?") from exc
    return connection


def redacted(url: str) -> str:
    """``url`` without its password (``redis://:***@host:6379/0``): what a log line may say."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "<unparseable REDIS_URL>"
    if password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def retry_delays(first_s: float = RETRY_FIRST_S, longest_s: float = RETRY_LONGEST_S) -> Iterator[float]:
    """The seconds before each PING of a wait: ``first_s``, doubling, then ``longest_s`` for ever."""
    delay = first_s
    while True:
        yield delay
        delay = min(delay * 2, longest_s)


def pace(first_s: float = RETRY_FIRST_S, longest_s: float = RETRY_LONGEST_S) -> str:
    return f"retrying every {first_s:g} s, backing off to {longest_s:g} s"


class RedisWait:
    """The log lines of one wait for Redis (sync and async waits share them): where, how often, how long."""

    def __init__(self, url: str, why: str, *, timeout_s: float = 0, clock: Callable[[], float] | None = None) -> None:
        self.url = redacted(url)
        self.why = why
        self.timeout_s = timeout_s
        self.clock = clock or time.monotonic
        self.began = self.clock()
        self._reminded = self.began

    @property
    def fields(self) -> dict[str, object]:
        return {"redis_url": self.url, "first_retry_s": RETRY_FIRST_S, "longest_retry_s": RETRY_LONGEST_S}

    def waiting(self, error: object) -> None:
        bound = f"; giving up after {self.timeout_s:g} s (REDIS_START_TIMEOUT)" if self.timeout_s else ""
        log.warning(
            "%s: waiting for Redis at %s (%s); %s%s", self.why, self.url, error, pace(), bound, extra=self.fields
        )

    def failed(self) -> None:
        """One more PING without an answer: a reminder now and then, and the bound enforced."""
        now = self.clock()
        if self.timeout_s and now - self.began >= self.timeout_s:
            raise ConfigError(
                f"Redis at {self.url} did not answer within REDIS_START_TIMEOUT={self.timeout_s:g} s; is it running?"
            )
        if now - self._reminded >= REMINDER_S:
            self._reminded = now
            waited = now - self.began
            log.warning("%s: still waiting for Redis at %s (%.0f s); %s", self.why, self.url, waited, pace())

    def answered(self) -> None:
        log.info("Redis answers at %s after %.1f s", self.url, self.clock() - self.began, extra=self.fields)


def wait_until_up(
    connection: redis.Redis,
    url: str,
    *,
    why: str,
    timeout_s: float = 0,
    stopped: Callable[[], bool] = lambda: False,
    sleep: Callable[[float], None] | None = None,
    longest_s: float = RETRY_LONGEST_S,
) -> bool:
    """PING until Redis answers (True, at once when it does now) or ``stopped()`` (False). Past ``timeout_s``
    (0: never) a :class:`ConfigError`. Logs where it waits and at what pace (:class:`RedisWait`)."""
    sleep = sleep or time.sleep
    try:
        connection.ping()
        return True
    except redis.RedisError as exc:
        wait = RedisWait(url, why, timeout_s=timeout_s)
        wait.waiting(exc)
    for delay in retry_delays(min(RETRY_FIRST_S, longest_s), longest_s):
        if stopped():
            return False
        sleep(delay)
        if stopped():
            return False
        try:
            connection.ping()
        except redis.RedisError:
            wait.failed()
            continue
        wait.answered()
        return True
    return False  # not reached: retry_delays never ends
