"""Telegram's limits hold across processes: two limiters sharing Redis stay within them together.

Needs the Redis at 127.0.0.1:6379 (skipped, saying so, when it is not running). Each test
uses its own key prefix and removes its keys. Time is a FakeClock.
"""

from __future__ import annotations

import asyncio
import logging
import uuid

import pytest
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from bot.adapters.telegram.limits import TelegramRateLimiter
from bot.adapters.telegram.limits_redis import RedisRateLimiter
from tests.fakes.telegram import FakeTime
from tests.support import free_port
from tests.test_telegram_limits import max_in_window

REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
async def shared(clock):
    """Two limiters as two processes would have them: own clients, one Redis, one clock."""
    probe = aioredis.Redis.from_url(REDIS_URL)
    try:
        await probe.ping()
    except RedisError:
        await probe.aclose()
        pytest.skip("Redis is not running at 127.0.0.1:6379")
    prefix = f"siyu:test:{uuid.uuid4().hex}:"
    fake = FakeTime(clock)
    limiters = [
        RedisRateLimiter(REDIS_URL, prefix=prefix, now=fake.now, sleep=fake.sleep) for _ in range(2)
    ]
    yield limiters
    for limiter in limiters:
        await limiter.aclose()
    keys = [k async for k in probe.scan_iter(f"{prefix}*")]
    if keys:
        await probe.delete(*keys)
    await probe.aclose()


async def burst(limiter, chats: list[str], *, is_group: bool) -> list[float]:
    return [await limiter.acquire(chat, is_group=is_group) for chat in chats]


async def test_two_processes_share_the_group_limit_of_20_per_minute(shared):
    a, b = shared
    times = await asyncio.gather(
        burst(a, ["-100"] * 30, is_group=True), burst(b, ["-100"] * 30, is_group=True)
    )
    together = times[0] + times[1]
    assert len(together) == 60
    assert max_in_window(together, 60.0) == 20
    assert max_in_window(together, 1.0) == 1


async def test_two_processes_share_the_overall_limit_of_30_per_second(shared):
    a, b = shared
    times = await asyncio.gather(
        burst(a, [str(1000 + i) for i in range(60)], is_group=False),
        burst(b, [str(2000 + i) for i in range(60)], is_group=False),
    )
    together = times[0] + times[1]
    assert max_in_window(together, 1.0) == 30
    assert max(together) - min(together) < 8.0  # still about as fast as allowed


async def test_per_process_limiters_alone_would_break_the_limit(clock):
    # The measure above catches the problem: unshared, two processes send 60 in a second.
    fake = FakeTime(clock)
    a, b = (TelegramRateLimiter(now=fake.now, sleep=fake.sleep) for _ in range(2))
    times = await asyncio.gather(
        burst(a, [str(1000 + i) for i in range(30)], is_group=False),
        burst(b, [str(2000 + i) for i in range(30)], is_group=False),
    )
    assert max_in_window(times[0] + times[1], 1.0) == 60


async def test_a_429_pauses_the_chat_for_every_process(shared):
    a, b = shared
    start = a._now()
    await a.pause("42", 5)
    assert await b.paused_for("42") == pytest.approx(5)
    assert await b.paused_for("43") == 0
    assert await b.acquire("42", is_group=False) >= start + 5


async def test_without_redis_it_limits_per_process_and_says_so(clock, caplog):
    fake = FakeTime(clock)
    limiter = RedisRateLimiter(f"redis://127.0.0.1:{free_port()}/0", now=fake.now, sleep=fake.sleep)
    caplog.set_level(logging.WARNING, logger="bot.adapters.telegram.limits_redis")
    try:
        times = await burst(limiter, ["-100"] * 3, is_group=True)
    finally:
        await limiter.aclose()
    assert times[1] - times[0] >= 1.0 and times[2] - times[1] >= 1.0
    assert "limiting per process" in caplog.text
