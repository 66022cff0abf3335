"""Telegram's sending limits, enforced before every request that sends a message.

Telegram allows about 30 messages per second overall, about 1 per second to one chat and 20
per minute to one group. PTB's ``AIORateLimiter`` has no per-private-chat limit and pauses
every request on a 429, so Siyu keeps its own limiter. It is clock-injectable: ``now``
returns seconds and ``sleep`` waits, so a test can run a whole burst on fake time.

A chat that got a 429 is paused for the time Telegram asked (:meth:`pause`); while paused,
:meth:`paused_for` tells the adapter to put later messages to that chat back in the queue,
so messages to one chat keep their order.

Transactional messages (replies, staff answers) take the next free slot: while one waits
for a slot, marketing messages of the same process wait behind it (:class:`UrgentFirst`).

Two implementations of one :class:`RateLimiter` interface: :class:`TelegramRateLimiter`
keeps the windows in the process; :class:`RedisRateLimiter` (``[telegram] redis_url``)
keeps them in Redis, so that several Siyu processes sending for one bot stay within the
limits together (see telegram_limits_redis.py).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

__all__ = ["RateLimiter", "RateLimits", "TelegramRateLimiter", "UrgentFirst"]


@dataclass(frozen=True)
class RateLimits:
    """Sliding-window limits: (messages, per seconds)."""

    overall: tuple[int, float] = (30, 1.0)
    per_chat: tuple[int, float] = (1, 1.0)
    per_group: tuple[int, float] = (20, 60.0)


class RateLimiter(Protocol):
    """What the adapter needs of a limiter (in-process or shared)."""

    async def acquire(self, chat_id: str, *, is_group: bool, urgent: bool = False) -> float:
        """Wait for a free slot for ``chat_id`` and take it; returns the time it was taken.

        ``urgent`` (a transactional message) goes ahead of every waiting non-urgent one."""

    async def pause(self, chat_id: str, seconds: float) -> None:
        """Telegram asked to wait ``seconds`` before sending to this chat again."""

    async def paused_for(self, chat_id: str) -> float:
        """Seconds this chat is still paused for (0 if it is not)."""

    async def aclose(self) -> None:
        """Release connections, if any."""


class UrgentFirst:
    """Within one process: non-urgent takers wait while an urgent one waits for a slot."""

    def __init__(self) -> None:
        self._urgent = 0
        self._clear = asyncio.Event()
        self._clear.set()

    def enter(self, urgent: bool) -> None:
        if urgent:
            self._urgent += 1
            self._clear.clear()

    def leave(self, urgent: bool) -> None:
        if urgent:
            self._urgent -= 1
            if not self._urgent:
                self._clear.set()

    async def turn(self, urgent: bool) -> None:
        """Return when a taker of this kind may try for a slot now."""
        if not urgent:
            await self._clear.wait()


class _Window:
    """The send times of the last ``limit`` messages, to answer "how long until one more"."""

    __slots__ = ("limit", "period", "times")

    def __init__(self, limit: int, period: float) -> None:
        self.limit, self.period = limit, period
        self.times: deque[float] = deque(maxlen=limit)

    def wait(self, now: float) -> float:
        if len(self.times) < self.limit:
            return 0.0
        return self.times[0] + self.period - now

    def record(self, now: float) -> None:
        self.times.append(now)

    def idle(self, now: float) -> bool:
        return not self.times or self.times[-1] + self.period <= now


class TelegramRateLimiter:
    """Waits until a message to a chat may go without breaking any of Telegram's limits."""

    def __init__(
        self,
        limits: RateLimits | None = None,
        *,
        now: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        self.limits = limits or RateLimits()
        self._now = now
        self._sleep = sleep
        self._overall = _Window(*self.limits.overall)
        self._chats: dict[str, _Window] = {}
        self._groups: dict[str, _Window] = {}
        self._paused: dict[str, float] = {}
        self.urgent_first = UrgentFirst()

    def _windows(self, chat_id: str, is_group: bool) -> list[_Window]:
        windows = [self._overall]
        chat = self._chats.get(chat_id)
        if chat is None:
            chat = self._chats[chat_id] = _Window(*self.limits.per_chat)
        windows.append(chat)
        if is_group:
            group = self._groups.get(chat_id)
            if group is None:
                group = self._groups[chat_id] = _Window(*self.limits.per_group)
            windows.append(group)
        return windows

    async def acquire(self, chat_id: str, *, is_group: bool, urgent: bool = False) -> float:
        """Wait for a free slot for ``chat_id`` and take it; returns the time it was taken."""
        self.urgent_first.enter(urgent)
        try:
            while True:
                await self.urgent_first.turn(urgent)
                now = self._now()
                windows = self._windows(chat_id, is_group)
                wait = max(w.wait(now) for w in windows)
                wait = max(wait, self._paused.get(chat_id, now) - now)
                if wait <= 0:
                    for w in windows:
                        w.record(now)
                    self._forget_idle(now)
                    return now
                await self._sleep(wait)
        finally:
            self.urgent_first.leave(urgent)

    async def pause(self, chat_id: str, seconds: float) -> None:
        """Telegram asked to wait ``seconds`` before sending to this chat again."""
        self.pause_now(chat_id, seconds)

    def pause_now(self, chat_id: str, seconds: float) -> None:
        until = self._now() + seconds
        self._paused[chat_id] = max(self._paused.get(chat_id, until), until)

    async def paused_for(self, chat_id: str) -> float:
        """Seconds this chat is still paused for (0 if it is not)."""
        return self.paused_now(chat_id)

    async def aclose(self) -> None:
        return None

    def paused_now(self, chat_id: str) -> float:
        """Seconds this chat is still paused for (0 if it is not)."""
        until = self._paused.get(chat_id)
        if until is None:
            return 0.0
        left = until - self._now()
        if left <= 0:
            del self._paused[chat_id]
            return 0.0
        return left

    def _forget_idle(self, now: float) -> None:
        """Drop windows of chats not written to for a while, so memory stays bounded."""
        if len(self._chats) + len(self._groups) < 10_000:
            return
        for table in (self._chats, self._groups):
            for key in [k for k, w in table.items() if w.idle(now)]:
                del table[key]
