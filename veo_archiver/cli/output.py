"""What every command-line command shares: its settings and Redis connection, and how it prints."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import redis

from veo_archiver import clock, queue_view
from veo_archiver.cli import local_env
from veo_archiver.errors import ConfigError
from veo_archiver.redis_client import connect
from veo_archiver.settings import Settings

#: how many leading characters of a long error are shown in tables
ERROR_WIDTH = 90


def settings() -> Settings:
    return local_env.settings()  # the environment, completed by a live `up` in this folder


def connect_redis(settings: Settings) -> redis.Redis:
    """A checked client; an unreachable Redis is a :class:`ConfigError` that says where the command looked and,
    when no ``up`` runs in this folder, to start one (:func:`veo_archiver.cli.local_env.unreachable`)."""
    try:
        return connect(settings.redis_url)
    except ConfigError as exc:
        if not isinstance(exc.__cause__, redis.RedisError):
            raise
        raise ConfigError(local_env.unreachable(settings.redis_url, str(exc.__cause__))) from exc.__cause__


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=True, default=str))


age = queue_view.duration


def when(stamp: str | None, now: float) -> str:
    """``2026-11-21T10:00:00Z (3m05s ago)`` or ``(in 14s)``."""
    ts = clock.epoch(stamp)
    if stamp is None or ts is None:
        return "-"
    delta = now - ts
    return f"{stamp} ({age(delta)} ago)" if delta >= 0 else f"{stamp} (in {age(delta)})"


def table(header: Sequence[str], rows: Sequence[Sequence[object]], indent: str = "  ") -> list[str]:
    cells = [[str(c) for c in header], *[["-" if c is None else str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return [indent + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]


def clip(text: str | None, width: int = ERROR_WIDTH) -> str:
    """``text`` on one line, at most ``width`` characters, cut at a word boundary (then ``…``)."""
    text = " ".join((text or "").split())
    if len(text) <= width:
        return text
    cut = text[: width - 1]
    head, space, _ = cut.rpartition(" ")
    if space and len(head) >= width // 2:  # a word boundary not too far back; else one very long word is cut
        cut = head.rstrip(" ,;:")
    return cut + "…"
