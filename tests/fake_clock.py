"""A clock a test moves by hand, for code that takes ``clock: Callable[[], float]`` (veo_archiver/clock.py keeps
the time formats; the code under test reads the time only through the clock it is given)."""

from __future__ import annotations


class FakeClock:
    """Epoch seconds that change only when the test calls :meth:`advance`."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now
