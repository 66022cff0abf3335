"""The outbox and the delivery worker against a scripted fake channel (the platform edge)."""

from __future__ import annotations

from collections import deque
from datetime import timedelta

import pytest
from sqlalchemy import select

from bot.adapters.base import (
    OutboundMessage,
    PermanentError,
    RecipientUnreachable,
    RetryAfter,
    SendReceipt,
    TransientError,
)
from bot.app.config import DeliveryConfig
from bot.core.events import ConversationRef
from bot.outbox.queue import Backoff, enqueue
from bot.outbox.worker import DeliveryWorker
from storage import repos
from storage.models import Identity, OutboxMessage


class FakeChannel:
    """A channel whose next answers are scripted; records what it delivered."""

    channel = "fake"

    def __init__(self) -> None:
        self.script: deque = deque()
        self.delivered: list[tuple[str, str]] = []
        self.attempts = 0

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def send(self, message: OutboundMessage) -> SendReceipt:
        self.attempts += 1
        if self.script:
            outcome = self.script.popleft()
            if isinstance(outcome, Exception):
                raise outcome
        self.delivered.append((message.chat_id, message.text))
        return SendReceipt(platform_message_id=f"p{len(self.delivered)}")


def queue(db, clock, *texts: str, chat: str = "c1", user: str = "c1") -> None:
    with db.transaction() as s:
        for i, text in enumerate(texts):
            enqueue(
                s,
                key=f"k:{chat}:{text}:{i}",
                to=ConversationRef("fake", chat, user),
                text=text,
                now=clock.now(),
            )


def rows(db) -> list[OutboxMessage]:
    with db.sessions() as s:
        return list(s.scalars(select(OutboxMessage).order_by(OutboxMessage.id)))


@pytest.fixture
def channel() -> FakeChannel:
    return FakeChannel()


@pytest.fixture
def worker(db, clock, channel) -> DeliveryWorker:
    return DeliveryWorker(
        db, {"fake": channel}, clock, DeliveryConfig(max_attempts=3, backoff_base_seconds=10)
    )


def test_same_idempotency_key_queues_once(db, clock):
    ref = ConversationRef("fake", "c1", "c1")
    with db.transaction() as s:
        assert enqueue(s, key="campaign:1:42", to=ref, text="hi", now=clock.now())
        assert not enqueue(s, key="campaign:1:42", to=ref, text="hi again", now=clock.now())
    assert [r.payload["text"] for r in rows(db)] == ["hi"]


async def test_messages_to_one_chat_go_in_order_and_are_recorded(db, clock, channel, worker):
    queue(db, clock, "one", "two", "three")
    queue(db, clock, "x", chat="c2", user="c2")
    assert await worker.drain_once() == 4
    assert [t for c, t in channel.delivered if c == "c1"] == ["one", "two", "three"]
    assert {r.status for r in rows(db)} == {"sent"}
    assert all(r.platform_message_id and r.sent_at == clock.now() for r in rows(db))
    assert await worker.drain_once() == 0


async def test_transient_failures_back_off_then_give_up(db, clock, channel, worker):
    queue(db, clock, "hello")
    channel.script.extend([TransientError("502"), TransientError("502"), TransientError("502")])
    await worker.drain_once()
    (row,) = rows(db)
    assert (row.status, row.attempts) == ("pending", 1)
    assert (
        clock.now() + timedelta(seconds=5)
        <= row.next_attempt_at
        <= clock.now() + timedelta(seconds=10)
    )
    assert await worker.drain_once() == 0  # not due yet
    clock.advance(60)
    await worker.drain_once()
    clock.advance(60)
    await worker.drain_once()
    (row,) = rows(db)
    assert (row.status, row.attempts, channel.attempts) == ("failed", 3, 3)
    assert "502" in row.last_error


async def test_retry_after_is_waited_out_and_delivered_once(db, clock, channel, worker):
    queue(db, clock, "hello")
    channel.script.append(RetryAfter(30))
    await worker.drain_once()
    (row,) = rows(db)
    assert row.status == "pending" and row.next_attempt_at == clock.now() + timedelta(seconds=30)
    clock.advance(29)
    assert await worker.drain_once() == 0
    clock.advance(1)
    assert await worker.drain_once() == 1
    assert channel.delivered == [("c1", "hello")]
    assert rows(db)[0].attempts == 0  # waiting as told is not a failed attempt


async def test_unreachable_recipient_is_marked_and_not_retried(db, clock, channel, worker):
    with db.transaction() as s:
        repos.upsert_customer(
            s, "fake", "c1", display_name="A", locale="en", timezone="UTC", now=clock.now()
        )
    queue(db, clock, "hello")
    channel.script.append(RecipientUnreachable("Forbidden: bot was blocked by the user"))
    await worker.drain_once()
    clock.advance(3600)
    assert await worker.drain_once() == 0
    (row,) = rows(db)
    assert row.status == "unreachable"
    with db.sessions() as s:
        identity = s.scalars(select(Identity)).one()
        assert identity.unreachable and "blocked" in identity.unreachable_reason


async def test_permanent_error_fails_at_once(db, clock, channel, worker):
    queue(db, clock, "hello")
    channel.script.append(PermanentError("message is too long"))
    await worker.drain_once()
    (row,) = rows(db)
    assert (row.status, row.last_error) == ("failed", "message is too long")


async def test_a_dead_workers_claim_is_taken_over_after_its_lease(db, clock, channel):
    queue(db, clock, "hello")
    crashed = DeliveryWorker(db, {"fake": channel}, clock, DeliveryConfig(lease_seconds=30))
    assert len(await db.run(crashed._claim)) == 1  # claimed, then the worker "dies"
    other = DeliveryWorker(db, {"fake": channel}, clock, DeliveryConfig(lease_seconds=30))
    assert await other.drain_once() == 0
    clock.advance(31)
    assert await other.drain_once() == 1
    assert channel.delivered == [("c1", "hello")]


async def test_a_live_workers_claims_keep_their_lease(db, clock, channel):
    queue(db, clock, "hello")
    busy = DeliveryWorker(db, {"fake": channel}, clock, DeliveryConfig(lease_seconds=30))
    assert len(await db.run(busy._claim)) == 1
    clock.advance(25)
    assert await db.run(busy._renew_leases) == 1  # still working on it
    clock.advance(25)  # 50 s after the claim, 25 s after the renewal
    other = DeliveryWorker(db, {"fake": channel}, clock, DeliveryConfig(lease_seconds=30))
    assert await other.drain_once() == 0
    assert channel.delivered == []


async def test_stop_requeues_claims_not_sent(db, clock, channel, worker):
    queue(db, clock, "a", "b")
    claimed = await db.run(worker._claim)
    assert len(claimed) == 2
    await worker.stop()
    assert {r.status for r in rows(db)} == {"pending"}
    assert all(r.claimed_by is None for r in rows(db))


def test_backoff_grows_and_is_capped():
    import random

    b = Backoff(base=2, cap=60)
    rng = random.Random(1)
    delays = [b.delay(n, rng) for n in range(1, 10)]
    assert 1 <= delays[0] <= 2 and 4 <= delays[2] <= 8
    assert max(delays) <= 60 and delays[-1] >= 30
