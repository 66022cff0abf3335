"""Exactly one scheduler across processes: a :class:`storage.leader.LeaderLock`."""

from __future__ import annotations

from storage.leader import LeaderLock, lock_key

__all__ = ["LOCK_KEY", "SchedulerLock"]

#: The advisory lock key: "siyu-sch" as a 64-bit number.
LOCK_KEY = lock_key(b"siyu-sch")


class SchedulerLock(LeaderLock):
    """The scheduler's leader lock (``<database>.scheduler.lock`` on SQLite)."""

    def __init__(self, url: str) -> None:
        super().__init__(url, "scheduler", b"siyu-sch")
