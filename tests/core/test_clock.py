"""``veo_archiver.clock.iso``: the one time format, identical to datetime's isoformat whatever the instant."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from veo_archiver.clock import iso


def reference(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@given(st.floats(min_value=-2e9, max_value=4e9, allow_nan=False))
def test_iso_is_datetime_isoformat_in_milliseconds(ts: float) -> None:
    assert iso(ts) == reference(ts)


def test_iso_at_the_edges_of_a_second_and_of_its_cache() -> None:
    for ts in (0.0, 1.9995, 1.9999995, 1799999999.9999996, 1800000000.0, -0.0005, -1.5, 1799999999.0004999):
        assert iso(ts) == reference(ts), ts
    # alternating seconds: the one-entry cache must never answer for the wrong second
    assert [iso(t) for t in (10.1, 11.2, 10.3)] == [reference(t) for t in (10.1, 11.2, 10.3)]
    assert iso(None) is None
