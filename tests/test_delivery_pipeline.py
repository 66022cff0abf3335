"""The running delivery worker refills its claims without waiting for a batch's slowest
chat, and still sends each chat's messages in order."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from bot.adapters.base import OutboundMessage, SendReceipt
from bot.app.config import DeliveryConfig
from bot.core.clock import SystemClock
from bot.outbox.worker import DeliveryWorker
from storage.bulk import insert_outbox_rows


class SlowChatChannel:
    """A fake channel where chat ``slow`` takes 0.6 s per message and others 10 ms."""

    def __init__(self) -> None:
        self.log: list[tuple[str, str, float]] = []  # (chat, key, finished at)

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def send(self, message: OutboundMessage) -> SendReceipt:
        await asyncio.sleep(0.6 if message.chat_id == "slow" else 0.01)
        self.log.append(
            (message.chat_id, message.idempotency_key, asyncio.get_running_loop().time())
        )
        return SendReceipt(platform_message_id=message.idempotency_key)


async def test_worker_keeps_sending_while_a_slow_chat_finishes_and_keeps_chat_order(db):
    now = datetime.now(UTC)
    rows = [("k:00", "sandbox", "slow", "slow", None, "reply", 5, '{"text": "1"}', now, now)]
    rows.append(("k:01", "sandbox", "slow", "slow", None, "reply", 5, '{"text": "2"}', now, now))
    rows += [
        (
            f"k:{i:02d}",
            "sandbox",
            f"c{i % 5}",
            f"c{i % 5}",
            None,
            "reply",
            0,
            '{"text": "x"}',
            now,
            now,
        )
        for i in range(2, 42)
    ]
    with db.transaction() as session:
        insert_outbox_rows(session, rows)
    channel = SlowChatChannel()
    worker = DeliveryWorker(
        db,
        {"sandbox": channel},
        SystemClock(),
        DeliveryConfig(batch_size=8, poll_interval_seconds=0.05),
    )
    worker.start()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while len(channel.log) < len(rows) and loop.time() < deadline:
        await asyncio.sleep(0.02)
    await worker.stop()

    keys = [key for _, key, _ in channel.log]
    assert sorted(keys) == sorted(r[0] for r in rows)  # each exactly once
    for chat in ("slow", "c0", "c1", "c2", "c3", "c4"):
        sent = [key for c, key, _ in channel.log if c == chat]
        assert sent == sorted(sent), chat  # claimed order kept within the chat
    slow_done = max(t for c, _, t in channel.log if c == "slow")
    fast_done = max(t for c, _, t in channel.log if c != "slow")
    # the 40 fast messages (5 batches of 8) did not wait behind the slow chat's 1.2 s
    assert fast_done < slow_done
