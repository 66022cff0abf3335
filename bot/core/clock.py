"""Time, injectable so tests can move it: every part asks a Clock, never datetime.now()."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from storage.clock import utcnow

__all__ = ["Clock", "FakeClock", "SystemClock", "utcnow"]


class Clock:
    """The time source used by the router, the outbox and the scheduler."""

    def now(self) -> datetime:
        raise NotImplementedError


class SystemClock(Clock):
    """Wall-clock time in UTC."""

    def now(self) -> datetime:
        return utcnow()


class FakeClock(Clock):
    """A clock that only moves when told to (for tests and simulations)."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 1, 5, 0, 0, tzinfo=UTC)
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, delta: timedelta | float) -> datetime:
        if not isinstance(delta, timedelta):
            delta = timedelta(seconds=delta)
        with self._lock:
            self._now += delta
            return self._now

    def set(self, moment: datetime) -> None:
        with self._lock:
            self._now = moment
