"""When a result URL dies, and when to try again: pure arithmetic, clock injected.

A URL's deadline is the earlier of (a) when the callback arrived plus the provider's assumed lifetime and
(b) an expiry written into the URL itself by the common signing schemes: AWS SigV4 (``X-Amz-Date`` +
``X-Amz-Expires``), Google (``X-Goog-Date`` + ``X-Goog-Expires``), and epoch ``Expires=`` (SigV2,
CloudFront, GCS v2). Retries back off exponentially with jitter but never past the deadline.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import parse_qsl, urlsplit

#: last attempt must start at least this long before the URL dies
SAFETY_MARGIN_S = 60.0


def _parse_compact(value: str) -> float | None:
    try:
        return datetime.strptime(value, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None


def _digits(text: str) -> bool:
    return text.isascii() and text.isdigit()  # str.isdigit alone accepts "²", which int() refuses


def expiry_in_url(url: str) -> float | None:
    try:
        query = {k.lower(): v for k, v in parse_qsl(urlsplit(url).query)}
    except ValueError:
        return None
    for date_key, ttl_key in (("x-amz-date", "x-amz-expires"), ("x-goog-date", "x-goog-expires")):
        if date_key in query and _digits(query.get(ttl_key, "")):
            start = _parse_compact(query[date_key])
            if start is not None:
                return start + int(query[ttl_key])
    expires = query.get("expires", "")
    if _digits(expires) and len(expires) <= 11:
        return float(expires)
    return None


def url_deadline(url: str, received_at: float, lifetime_s: float) -> float:
    assumed = received_at + lifetime_s
    stated = expiry_in_url(url)
    return min(assumed, stated) if stated is not None else assumed


@dataclass(frozen=True)
class RetryDecision:
    delay_s: float | None  # None: give up
    reason: str


def next_retry(
    *,
    attempt: int,
    max_attempts: int,
    now: float,
    deadline: float,
    base_s: float,
    cap_s: float,
    retry_after_s: float | None = None,
    rng: random.Random | None = None,
) -> RetryDecision:
    """Backoff ``base * 2**attempt`` capped at ``cap``, full jitter on its upper half, honouring Retry-After,
    and never scheduled later than ``deadline - SAFETY_MARGIN_S``."""
    if attempt + 1 >= max_attempts:
        return RetryDecision(None, "retries_exhausted")
    latest = deadline - SAFETY_MARGIN_S
    if now >= latest:
        return RetryDecision(None, "url_expired")
    ceiling = min(cap_s, base_s * (2 ** min(attempt, 30)))
    delay = ceiling * (rng or random).uniform(0.5, 1.0)
    if retry_after_s is not None:
        delay = max(delay, min(retry_after_s, cap_s))
    if now + delay > latest:
        delay = max(1.0, latest - now)
    return RetryDecision(delay, "scheduled")
