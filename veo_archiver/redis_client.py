"""The one way a command-line process or a worker connects to Redis: explicit timeouts, a clear error."""

from __future__ import annotations

import redis

from veo_archiver.errors import ConfigError

#: a CLI command or a worker's side task waits at most this long for one Redis reply
SOCKET_TIMEOUT_S = 10.0
CONNECT_TIMEOUT_S = 2.0


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
