"""The one fake clock of the suite: tests pass ``now`` in, so time moves only when a test says."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass
class FakeClock:
    """A controllable UTC clock, called like ``datetime.now(UTC)``.

    Each reading moves it on by ``step``: zero (the default) keeps it still until ``advance``; the
    ``clock`` fixture steps by a millisecond so rows written in a row get distinct times.
    """

    now: datetime = field(default_factory=lambda: T0)
    step: timedelta = timedelta(0)

    def __call__(self) -> datetime:
        current = self.now
        self.now = current + self.step
        return current

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)
