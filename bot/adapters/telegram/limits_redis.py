"""Telegram's sending limits shared by several Siyu processes, in Redis.

The same sliding windows as :class:`~bot.adapters.telegram.limits.TelegramRateLimiter`
(30/s overall, 1/s per chat, 20/min per group), kept as Redis sorted sets of send times
(``<prefix>all``, ``<prefix>chat:<id>``, ``<prefix>group:<id>``) and checked and taken in
one Lua script, so two processes can never both take the last slot of a window. A 429's
pause is a key too (``<prefix>pause:<id>``), so every process holds off that chat. A
transactional message that has to wait for a slot marks it (``<prefix>urgent``, until its
slot comes), and the marketing messages of every process wait behind it.

Times come from ``now`` (wall-clock seconds by default, so the hosts' clocks must be
NTP-synchronized; tests pass a fake clock). If Redis cannot be reached the limiter logs a
warning and falls back to the in-process limiter until Redis answers again: sending goes
on, within the limits per process, and a 429 is still honoured.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from bot.adapters.telegram.limits import RateLimits, TelegramRateLimiter, UrgentFirst

__all__ = ["RedisRateLimiter"]

log = logging.getLogger(__name__)

# KEYS[1] = the chat's pause key, KEYS[2] = the urgent marker, KEYS[3..] = window keys.
# ARGV[1] = now, ARGV[2] = a unique member, ARGV[3] = 1 if urgent, then (limit, period)
# for each window key. Returns "0" when the slot was taken, else the seconds to wait (as a
# string: Lua numbers would be truncated to integers in a Redis reply). An urgent taker
# that has to wait for the overall window (KEYS[3]) marks, until its slot there comes, that
# non-urgent takers yield to it (not for its own chat's window or pause: that is its own).
_ACQUIRE = """
local now = tonumber(ARGV[1])
local urgent = ARGV[3] == '1'
local wait = 0
local overall = 0
local paused = tonumber(redis.call('GET', KEYS[1]) or '0')
if paused > now then wait = paused - now end
if not urgent then
  local marked = tonumber(redis.call('GET', KEYS[2]) or '0')
  if marked > now and marked - now > wait then wait = marked - now end
end
for i = 3, #KEYS do
  local limit = tonumber(ARGV[2 * i - 2])
  local period = tonumber(ARGV[2 * i - 1])
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now - period)
  local n = redis.call('ZCARD', KEYS[i])
  if n >= limit then
    local edge = redis.call('ZRANGE', KEYS[i], n - limit, n - limit, 'WITHSCORES')
    local w = tonumber(edge[2]) + period - now
    if w > wait then wait = w end
    if i == 3 then overall = w end
  end
end
if wait > 0 then
  if urgent and overall > 0 then
    local until_ = now + overall + 0.01
    local marked = tonumber(redis.call('GET', KEYS[2]) or '0')
    if until_ > marked then
      redis.call('SET', KEYS[2], tostring(until_), 'PX', math.ceil(overall * 1000) + 1000)
    end
  end
  return tostring(wait)
end
for i = 3, #KEYS do
  redis.call('ZADD', KEYS[i], now, ARGV[2])
  redis.call('PEXPIRE', KEYS[i], math.ceil(tonumber(ARGV[2 * i - 1]) * 1000) + 1000)
end
return '0'
"""

# KEYS[1] = pause key; ARGV[1] = until, ARGV[2] = real milliseconds to keep the key.
_PAUSE = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) > current then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
end
return 1
"""


class RedisRateLimiter:
    """Telegram's limits for all processes sharing one Redis (see the module docstring)."""

    def __init__(
        self,
        url: str | None = None,
        limits: RateLimits | None = None,
        *,
        client: aioredis.Redis | None = None,
        prefix: str = "siyu:telegram:rate:",
        now: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        if client is None and not url:
            raise ValueError("a Redis URL or client is needed")
        self.redis = client or aioredis.Redis.from_url(url or "")
        self.limits = limits or RateLimits()
        self.prefix = prefix
        self._now = now
        self._sleep = sleep
        self._acquire = self.redis.register_script(_ACQUIRE)
        self._pause = self.redis.register_script(_PAUSE)
        self._local = TelegramRateLimiter(self.limits, now=now, sleep=sleep)
        self._urgent_first = UrgentFirst()
        self._warned_at = float("-inf")

    def _keys(self, chat_id: str, is_group: bool) -> tuple[list[str], list[float]]:
        p = self.prefix
        keys = [f"{p}pause:{chat_id}", f"{p}urgent", f"{p}all", f"{p}chat:{chat_id}"]
        windows = [self.limits.overall, self.limits.per_chat]
        if is_group:
            keys.append(f"{p}group:{chat_id}")
            windows.append(self.limits.per_group)
        return keys, [x for limit, period in windows for x in (limit, period)]

    def _degraded(self, exc: Exception) -> None:
        moment = time.monotonic()
        if moment - self._warned_at > 60:
            self._warned_at = moment
            log.warning("telegram: Redis rate limiter unavailable (%s); limiting per process", exc)

    async def acquire(self, chat_id: str, *, is_group: bool, urgent: bool = False) -> float:
        """Wait for a free slot for ``chat_id`` in every process's view and take it.

        ``urgent`` goes ahead of the non-urgent takers: of this process's at once, of other
        processes' through a marker in Redis while it waits."""
        keys, args = self._keys(chat_id, is_group)
        self._urgent_first.enter(urgent)
        try:
            while True:
                await self._urgent_first.turn(urgent)
                now = self._now()
                try:
                    answer = await self._acquire(
                        keys=keys, args=[repr(now), _member(now), int(urgent), *args]
                    )
                except RedisError as exc:
                    self._degraded(exc)
                    return await self._local.acquire(chat_id, is_group=is_group, urgent=urgent)
                wait = float(answer)
                if wait <= 0:
                    return now
                await self._sleep(wait)
        finally:
            self._urgent_first.leave(urgent)

    async def pause(self, chat_id: str, seconds: float) -> None:
        """Pause the chat for every process (Telegram answered 429)."""
        self._local.pause_now(chat_id, seconds)
        until = self._now() + seconds
        try:
            await self._pause(
                keys=[f"{self.prefix}pause:{chat_id}"],
                args=[repr(until), int(seconds * 1000) + 1000],
            )
        except RedisError as exc:
            self._degraded(exc)

    async def paused_for(self, chat_id: str) -> float:
        try:
            value = await self.redis.get(f"{self.prefix}pause:{chat_id}")
        except RedisError as exc:
            self._degraded(exc)
            return self._local.paused_now(chat_id)
        left = float(value) - self._now() if value is not None else 0.0
        return max(left, self._local.paused_now(chat_id), 0.0)

    async def aclose(self) -> None:
        await self.redis.aclose()


def _member(now: float) -> str:
    return f"{now!r}:{uuid.uuid4().hex[:12]}"
