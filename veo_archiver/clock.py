"""Times as veo-archiver writes and reads them: ISO-8601 UTC with a ``Z``, and HTTP ``Retry-After``."""

from __future__ import annotations

import email.utils
import math
import time
from datetime import UTC, datetime
from typing import overload


@overload
def iso(ts: float) -> str: ...
@overload
def iso(ts: None) -> None: ...
def iso(ts: float | None) -> str | None:
    """``2026-11-27T16:10:59.123Z``: every record, manifest, outcome and JSON answer uses this form.

    The same text as ``datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")`` (microseconds
    rounded half-even, then cut to milliseconds), with the date and time of day formatted once a second:
    the receiver stamps every callback with it."""
    if ts is None:
        return None
    frac, whole = math.modf(ts)
    micros = round(frac * 1_000_000)
    second = int(whole)
    if micros < 0:  # before 1970: modf keeps the sign
        second, micros = second - 1, micros + 1_000_000
    if micros >= 1_000_000:
        second, micros = second + 1, micros - 1_000_000
    return f"{utc_second(second)}.{micros // 1000:03d}Z"


def utc_second(second: int) -> str:
    """``2026-11-27T16:10:59``: a whole second of the epoch, formatted once per second (strftime is the dear
    part of a timestamp; :func:`iso` and RQ's job stamps in :mod:`veo_archiver.job_template` add the fraction)."""
    global _second_cache  # one entry, replaced whole: safe between threads
    cached_second, text = _second_cache
    if second != cached_second:
        text = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        _second_cache = (second, text)
    return text


_second_cache: tuple[int | None, str] = (None, "")


def epoch(value: datetime | str | None) -> float | None:
    """RQ keeps naive UTC datetimes; our own records keep ISO strings ending in Z. None when unreadable."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


def retry_after_seconds(value: str | None, *, cap: float, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds from now (delta-seconds or an HTTP date), clamped to ``[0, cap]``."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        seconds = float(value)
    else:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    return min(max(seconds, 0.0), cap)
