"""Platform API quotas shared by every Siyu process: fixed-window call counters in Redis.

WeChat counts calls per day (customer-service messages 500,000, template messages 100,000
by default; the day starts at midnight Beijing time) and WeCom per minute and per hour
(10,000 and 150,000 per API). A :class:`SharedQuota` takes one call from every window of a
quota before the call is made, in one Lua script, so processes never take more than the
windows allow together; when a window is full it waits for the next one.

Transactional replies go ahead of marketing when a window is tight: marketing (every purpose
not in :data:`bot.outbox.states.TRANSACTIONAL_PURPOSES`: campaigns, scenarios, follow-ups,
surveys, group posts) may use only ``1 - reply_reserve`` of each window; replies and staff
answers may use all of it.

Without Redis (no ``[limits] redis_url``), or while Redis is unreachable, the counters are
kept in the process with a warning: several processes then share the quota only by
sizing (their counts add up).
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import redis as syncredis
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from bot.outbox.states import is_transactional

__all__ = ["QuotaWindow", "SharedQuota", "is_marketing"]

log = logging.getLogger(__name__)

# KEYS = one counter key per window; ARGV = now, then (limit, seconds, bucket end) per key.
# Returns "0" when a call was taken from every window, else the seconds until the earliest
# full window ends (a string: Lua numbers would be truncated to integers).
_TAKE = """
local now = tonumber(ARGV[1])
local wait = 0
for i, key in ipairs(KEYS) do
  local limit = tonumber(ARGV[2 + (i - 1) * 3])
  local ends = tonumber(ARGV[4 + (i - 1) * 3])
  local used = tonumber(redis.call('GET', key) or '0')
  if used >= limit and ends - now > wait then wait = ends - now end
end
if wait > 0 then return tostring(wait) end
for i, key in ipairs(KEYS) do
  local seconds = tonumber(ARGV[3 + (i - 1) * 3])
  redis.call('INCR', key)
  redis.call('EXPIRE', key, math.ceil(seconds) + 60)
end
return '0'
"""


@dataclass(frozen=True)
class QuotaWindow:
    """At most ``limit`` calls per fixed window of ``seconds`` (shifted by ``offset``)."""

    name: str
    limit: int
    seconds: float
    offset: float = 0.0  # e.g. 8 h: a day that starts at midnight Beijing time

    def bucket(self, now: float) -> tuple[int, float]:
        """The window ``now`` falls in, and when that window ends (epoch seconds)."""
        index = math.floor((now + self.offset) / self.seconds)
        return index, (index + 1) * self.seconds - self.offset


def is_marketing(purpose: str) -> bool:
    """Whether calls of ``purpose`` yield to replies when a window is tight."""
    return not is_transactional(purpose)


class SharedQuota:
    """One platform quota (one or more windows), shared through Redis when configured.

    A quota may count apart for each ``scope`` (WeCom limits every API on its own: the
    scope is the API's endpoint). :meth:`take` is for the event loop; :meth:`take_blocking`
    for code in a worker thread (the platforms' blocking SDK clients)."""

    def __init__(
        self,
        name: str,
        windows: Sequence[QuotaWindow],
        *,
        redis_url: str = "",
        client: aioredis.Redis | None = None,
        reply_reserve: float = 0.2,
        now: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        self.name = name
        self.windows = tuple(windows)
        self.reply_reserve = reply_reserve
        self.redis = client or (aioredis.Redis.from_url(redis_url) if redis_url else None)
        self._take = self.redis.register_script(_TAKE) if self.redis is not None else None
        self.blocking_redis = syncredis.Redis.from_url(redis_url) if redis_url else None
        self._take_blocking = (
            self.blocking_redis.register_script(_TAKE) if self.blocking_redis is not None else None
        )
        self._now, self._sleep = now, sleep
        self._local: dict[str, tuple[int, float]] = {}  # key → (calls, window end)
        self._local_lock = threading.Lock()
        self._warned_at = float("-inf")
        if self.redis is None:
            log.warning(
                "%s: no [limits] redis_url: API quota counted per process (processes add up)",
                name,
            )

    def _limit(self, window: QuotaWindow, purpose: str) -> int:
        if is_marketing(purpose):
            return max(int(window.limit * (1 - self.reply_reserve)), 1)
        return window.limit

    async def acquire(self, purpose: str = "reply") -> None:
        """Wait until every window has room for one more call of ``purpose``; take it."""
        while True:
            wait = await self.take(purpose)
            if wait <= 0:
                return
            await self._sleep(wait)

    async def take(self, purpose: str = "reply", scope: str = "") -> float:
        """Take one call of ``purpose`` now (0.0), or say how long until a window has room.

        Adapters turn a wait into ``RetryAfter``, so the outbox row waits in the queue and
        not in a worker's lane."""
        now, keys, args = self._request(purpose, scope)
        if self._take is not None:
            try:
                return float(await self._take(keys=keys, args=args))
            except RedisError as exc:
                self._degraded(exc)
        return self._take_local(keys, args, now)

    def take_blocking(self, purpose: str = "reply", scope: str = "") -> float:
        """:meth:`take` for code running in a thread (it blocks on Redis)."""
        now, keys, args = self._request(purpose, scope)
        if self._take_blocking is not None:
            try:
                return float(self._take_blocking(keys=keys, args=args))
            except RedisError as exc:
                self._degraded(exc)
        return self._take_local(keys, args, now)

    def _request(self, purpose: str, scope: str) -> tuple[float, list[str], list[str]]:
        now = self._now()
        prefix = f"siyu:quota:{self.name}:{scope}:" if scope else f"siyu:quota:{self.name}:"
        keys, args = [], [repr(now)]
        for window in self.windows:
            index, ends = window.bucket(now)
            keys.append(f"{prefix}{window.name}:{index}")
            args += [str(self._limit(window, purpose)), repr(window.seconds), repr(ends)]
        return now, keys, args

    def _degraded(self, exc: Exception) -> None:
        moment = time.monotonic()
        if moment - self._warned_at > 60:
            self._warned_at = moment
            log.warning("%s: Redis unavailable (%s); counting per process", self.name, exc)

    def _take_local(self, keys: list[str], args: list[str], now: float) -> float:
        with self._local_lock:  # also called from worker threads
            wait = 0.0
            for i, key in enumerate(keys):
                limit, ends = int(args[1 + i * 3]), float(args[3 + i * 3])
                if self._local.get(key, (0, ends))[0] >= limit:
                    wait = max(wait, ends - now)
            if wait > 0:
                return wait
            for i, key in enumerate(keys):
                used, ends = self._local.get(key, (0, float(args[3 + i * 3])))
                self._local[key] = (used + 1, ends)
            if len(self._local) > 1024:  # forget windows that ended
                for key in [k for k, (_, ends) in self._local.items() if ends <= now]:
                    del self._local[key]
            return 0.0

    async def aclose(self) -> None:
        if self.redis is not None:
            await self.redis.aclose()
        if self.blocking_redis is not None:
            self.blocking_redis.close()
