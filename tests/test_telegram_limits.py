"""Telegram's sending limits hold: ≤ 20/min per group, ≤ 1/s per chat, ≤ 30/s overall."""

from __future__ import annotations

import pytest

from bot.adapters.telegram.limits import TelegramRateLimiter
from bot.core.events import ConversationRef
from bot.outbox import queue as outbox
from tests.fakes.telegram import FakeTime, TelegramHarness

pytestmark = pytest.mark.filterwarnings("ignore::telegram.warnings.PTBDeprecationWarning")


def max_in_window(times: list[float], period: float) -> int:
    """The most events inside any window [t, t + period)."""
    times = sorted(times)
    best, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] >= period:
            start += 1
        best = max(best, end - start + 1)
    return best


async def test_limiter_spreads_a_group_burst_at_20_per_minute(clock):
    fake = FakeTime(clock)
    limiter = TelegramRateLimiter(now=fake.now, sleep=fake.sleep)
    times = [await limiter.acquire("-100", is_group=True) for _ in range(200)]
    assert max_in_window(times, 60.0) == 20
    assert max_in_window(times, 1.0) == 1
    assert 9 * 60 <= times[-1] - times[0] < 9 * 60 + 25  # as fast as allowed, no faster


async def test_limiter_sends_private_chats_at_30_per_second_and_1_per_chat(clock):
    fake = FakeTime(clock)
    limiter = TelegramRateLimiter(now=fake.now, sleep=fake.sleep)
    times = [await limiter.acquire(str(1000 + i), is_group=False) for i in range(100)]
    assert max_in_window(times, 1.0) == 30
    assert times[-1] - times[0] < 4.0
    again = await limiter.acquire("1000", is_group=False)
    assert again - times[0] >= 1.0


async def test_a_paused_chat_waits_and_others_do_not(clock):
    fake = FakeTime(clock)
    limiter = TelegramRateLimiter(now=fake.now, sleep=fake.sleep)
    start = fake.now()
    await limiter.pause("1", 5)
    assert await limiter.paused_for("1") == 5
    assert await limiter.acquire("2", is_group=False) == start
    assert await limiter.acquire("1", is_group=False) >= start + 5


@pytest.fixture
async def tg(config, sqlite_db, clock):
    async with TelegramHarness(config, sqlite_db, clock) as harness:
        yield harness


def queue(h: TelegramHarness, chats: list[int]) -> None:
    with h.db.transaction() as session:
        for n, chat in enumerate(chats):
            outbox.enqueue(
                session,
                key=f"burst:{n}",
                to=ConversationRef("telegram", str(chat), str(abs(chat))),
                text=f"消息 {n}",
                now=h.clock.now(),
            )


async def test_200_queued_group_messages_go_out_at_most_20_per_minute(tg):
    group = -1009876
    queue(tg, [group] * 200)
    assert await tg.deliver() == 200
    sent = tg.api.sent(group)
    assert [c.params["text"] for c in sent] == [f"消息 {n}" for n in range(200)]
    times = [c.at for c in sent]
    assert max_in_window(times, 60.0) <= 20
    assert max_in_window(times, 1.0) <= 1
    assert times[-1] - times[0] < 10 * 60


class RecordingLimiter(TelegramRateLimiter):
    """The real limiter, keeping the moment each send was let through."""

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.granted: list[tuple[str, float]] = []

    async def acquire(self, chat_id: str, *, is_group: bool, urgent: bool = False) -> float:
        moment = await super().acquire(chat_id, is_group=is_group, urgent=urgent)
        self.granted.append((chat_id, moment))
        return moment


async def test_100_private_chats_go_out_at_most_30_per_second(tg):
    # Chats are served concurrently, so the fake server's arrival times on fake time say
    # little; the moments the limiter let each send through are what it controls.
    limiter = tg.adapter.limiter = RecordingLimiter(now=tg.time.now, sleep=tg.time.sleep)
    queue(tg, [2000 + i for i in range(100)])
    assert await tg.deliver() == 100
    assert len(tg.api.sent()) == 100
    assert sorted(chat for chat, _ in limiter.granted) == [str(2000 + i) for i in range(100)]
    times = [t for _, t in limiter.granted]
    assert max_in_window(times, 1.0) == 30
    assert max(times) - min(times) < 6.0
