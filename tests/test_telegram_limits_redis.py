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

from bot.adapters.telegram.limits import RateLimits, TelegramRateLimiter
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


class SteppedTime:
    """Time the test moves: sleepers wait until :meth:`advance`, then wake in the order
    they went to sleep."""

    def __init__(self, start: float) -> None:
        self.at = start
        self.sleepers: list[asyncio.Future] = []

    def now(self) -> float:
        return self.at

    async def sleep(self, _seconds: float) -> None:
        future = asyncio.get_running_loop().create_future()
        self.sleepers.append(future)
        await future

    async def advance(self, to: float) -> None:
        self.at = to
        woken, self.sleepers = self.sleepers, []
        for future in woken:
            future.set_result(None)
        for _ in range(50):  # let the woken take their turn at Redis
            await asyncio.sleep(0.002)


async def test_a_reply_waiting_in_one_process_goes_before_the_other_process_campaign():
    prefix = f"siyu:test:{uuid.uuid4().hex}:"
    time_ = SteppedTime(1_000_000.0)
    a, b = (
        RedisRateLimiter(
            REDIS_URL, RateLimits(overall=(5, 1.0)), prefix=prefix, now=time_.now, sleep=time_.sleep
        )
        for _ in range(2)
    )
    try:
        for i in range(5):  # process b's campaign fills the window ...
            await b.acquire(f"{2000 + i}", is_group=False)
        granted: list[str] = []

        async def send(limiter: RedisRateLimiter, chat: str, urgent: bool) -> None:
            await limiter.acquire(chat, is_group=False, urgent=urgent)
            granted.append(chat)

        # ... and 10 more of its messages wait, before process a's reply asks
        waiting = [asyncio.create_task(send(b, f"{3000 + i}", False)) for i in range(10)]
        await time_.advance(time_.at)
        reply = asyncio.create_task(send(a, "42", True))
        await time_.advance(time_.at)
        assert granted == []
        await time_.advance(time_.at + 1.0)  # the window opens: the first slot is the reply's
        assert granted[:1] == ["42"], granted
        for _ in range(5):
            await time_.advance(time_.at + 1.0)
        await asyncio.gather(reply, *waiting)
    finally:
        await a.redis.delete(*await a.redis.keys(f"{prefix}*"))
        await a.aclose()
        await b.aclose()


async def test_an_urgent_marker_does_not_hold_back_other_chats_for_its_own_chat(shared):
    a, b = shared
    start = await a.acquire("42", is_group=False)
    # a reply to chat 42 waits a second for that chat's own window, not for the overall one
    reply = asyncio.create_task(a.acquire("42", is_group=False, urgent=True))
    await asyncio.sleep(0)
    assert await b.acquire("43", is_group=False) < start + 0.5  # not held back
    assert await reply >= start + 1.0
