"""The HTTP server: uvloop + httptools (the stack with the most durable callbacks per CPU-second, measured in
bench/RESULTS.md), inside the head guard of :mod:`receiver.http_edge`, which adds the bounds uvicorn lacks on
a request's head: the time it takes (``REQUEST_READ_TIMEOUT``) and its size (``MAX_HEADER_BYTES``, 431).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import uvicorn

from receiver.http_edge import HeadGuard, guarded

#: the event loop and HTTP parser ``serve`` asks uvicorn for, named explicitly: a missing wheel must fail at
#: start, not fall back silently to a stack that costs a quarter more CPU per callback
LOOP = "uvloop"
HTTP = "httptools"
#: the head cap when none is configured (``MAX_HEADER_BYTES``'s default)
DEFAULT_MAX_HEADER_BYTES = 64 * 1024


def protocol_class(
    header_timeout_s: float,
    http: str = HTTP,
    *,
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
    on_refused: Callable[[str], None] | None = None,
) -> type[HeadGuard]:
    """uvicorn's ``http=`` protocol (``httptools`` or ``h11``) inside the head guard: connections whose
    request head takes over ``header_timeout_s`` are closed, heads over ``max_header_bytes`` answered 431."""
    return guarded(http, header_timeout_s=header_timeout_s, max_header_bytes=max_header_bytes, on_refused=on_refused)


def config(
    app: Any,
    host: str,
    port: int,
    *,
    header_timeout_s: float,
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
    on_refused: Callable[[str], None] | None = None,
) -> uvicorn.Config:
    """uvicorn as ``veo-archiver serve`` runs it (and bench/ack_servers.py, to compare on the same stack).
    ``on_refused(reason)`` is called for each request the guard refuses (to count it)."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        loop=LOOP,
        http=protocol_class(header_timeout_s, HTTP, max_header_bytes=max_header_bytes, on_refused=on_refused),
        log_config=None,
        access_log=False,
        # X-Forwarded-* are read by the app itself, from the trusted hop only (receiver/proxy.py)
        proxy_headers=False,
        timeout_graceful_shutdown=10,
        h11_max_incomplete_event_size=max_header_bytes,
    )
