"""Deadlines and retry scheduling (pure, clock injected)."""

from __future__ import annotations

import random

import pytest

from workers.deadline import SAFETY_MARGIN_S, expiry_in_url, next_retry, url_deadline

NOW = 1_800_000_000.0


def test_expiry_read_from_signed_urls() -> None:
    sigv4 = "https://b.s3.amazonaws.com/v.mp4?X-Amz-Date=20270115T080000Z&X-Amz-Expires=3600&X-Amz-Signature=x"
    goog = "https://storage.googleapis.com/b/v.mp4?X-Goog-Date=20270115T080000Z&X-Goog-Expires=21600"
    v2 = "https://cdn.example.com/v.mp4?Expires=1800003600&Signature=abc"
    from datetime import UTC, datetime

    start = datetime(2027, 1, 15, 8, 0, 0, tzinfo=UTC).timestamp()
    assert expiry_in_url(sigv4) == start + 3600
    assert expiry_in_url(goog) == start + 21600
    assert expiry_in_url(v2) == 1_800_003_600
    assert expiry_in_url("https://tempfile.aiquickdraw.com/v.mp4") is None
    assert expiry_in_url("https://x/v.mp4?X-Amz-Date=garbage&X-Amz-Expires=60") is None


def test_deadline_is_the_earlier_of_lifetime_and_url_expiry() -> None:
    assert url_deadline("https://x/v.mp4", NOW, 86400) == NOW + 86400
    assert url_deadline("https://x/v.mp4?Expires=1800003600", NOW, 86400) == 1_800_003_600
    assert url_deadline("https://x/v.mp4?Expires=1900000000", NOW, 86400) == NOW + 86400


def test_backoff_grows_exponentially_with_jitter_and_cap() -> None:
    rng = random.Random(7)
    delays = [
        next_retry(attempt=a, max_attempts=20, now=NOW, deadline=NOW + 10**6, base_s=15, cap_s=3600, rng=rng).delay_s
        for a in range(10)
    ]
    for attempt, delay in enumerate(delays):
        ceiling = min(3600, 15 * 2**attempt)
        assert delay is not None and ceiling / 2 <= delay <= ceiling
    assert delays[-1] is not None and delays[-1] >= 1800


def test_retry_never_scheduled_past_the_deadline() -> None:
    deadline = NOW + 300
    decision = next_retry(attempt=6, max_attempts=20, now=NOW, deadline=deadline, base_s=15, cap_s=3600)
    assert decision.delay_s is not None
    assert NOW + decision.delay_s <= deadline - SAFETY_MARGIN_S


def test_no_retry_once_the_url_is_about_to_expire() -> None:
    decision = next_retry(
        attempt=0, max_attempts=20, now=NOW, deadline=NOW + SAFETY_MARGIN_S - 1, base_s=15, cap_s=3600
    )
    assert decision.delay_s is None and decision.reason == "url_expired"


def test_attempts_exhausted() -> None:
    decision = next_retry(attempt=7, max_attempts=8, now=NOW, deadline=NOW + 10**6, base_s=15, cap_s=3600)
    assert decision.delay_s is None and decision.reason == "retries_exhausted"


@pytest.mark.parametrize("retry_after", [120.0, 10_000.0])
def test_retry_after_is_honoured_up_to_the_cap(retry_after: float) -> None:
    decision = next_retry(
        attempt=0, max_attempts=8, now=NOW, deadline=NOW + 10**6, base_s=15, cap_s=3600, retry_after_s=retry_after
    )
    assert decision.delay_s == min(retry_after, 3600)


def test_non_ascii_digits_in_an_expiry_are_ignored_not_a_crash() -> None:
    assert expiry_in_url("https://x.example/a.mp4?Expires=%C2%B2") is None
    assert expiry_in_url("https://x.example/a.mp4?X-Amz-Date=20270115T080000Z&X-Amz-Expires=%C2%B2") is None
