"""Benchmark: does the delivery worker keep a channel limited to 30 msg/s busy?

    .venv/bin/python -m bench.delivery --messages 900 --rate 30 --latency 0.15

Queues a campaign-like batch (one message per chat, plus a few chats with several
messages) and runs Siyu's DeliveryWorker (its own run loop, default batch size) against a
fake channel that accepts one message per 1/rate seconds — a send that comes early waits
for its slot, as behind an adapter's rate limiter — and answers after ``latency`` seconds
(the platform's round trip). Prints the busy share (messages sent / slots between the first
slot and the last), duplicates (a key sent more than once) and order violations per chat.
SQLite by default; ``--url`` for PostgreSQL.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.adapters.base import OutboundMessage, SendReceipt
from bot.app.config import DeliveryConfig
from bot.core.clock import SystemClock
from bot.outbox.worker import DeliveryWorker
from storage.bulk import insert_outbox_rows
from storage.db import Database


class PacedChannel:
    """A fake channel: one message per ``1/rate`` seconds, each answered after ``latency``."""

    def __init__(self, rate: float, latency: float) -> None:
        self.interval, self.latency = 1 / rate, latency
        self.next_slot = 0.0
        self.sent: Counter[str] = Counter()
        self.slots: list[float] = []
        self.order: dict[str, list[int]] = defaultdict(list)

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def send(self, message: OutboundMessage) -> SendReceipt:
        loop = asyncio.get_running_loop()
        now = loop.time()
        slot = max(now, self.next_slot)
        self.next_slot = slot + self.interval
        await asyncio.sleep(slot - now)
        self.slots.append(slot)
        self.sent[message.idempotency_key] += 1
        self.order[message.chat_id].append(int(message.idempotency_key.rsplit(":", 1)[1]))
        await asyncio.sleep(self.latency)
        return SendReceipt(platform_message_id=message.idempotency_key)


async def run(db: Database, n: int, rate: float, latency: float) -> None:
    now = datetime.now(UTC)
    rows = []
    for i in range(n):
        chat = f"c{i % (n - n // 10)}"  # a tenth of the chats get two messages
        rows.append(
            (
                f"bench:{i:07d}",
                "sandbox",
                chat,
                chat,
                None,
                "campaign",
                10,
                '{"text": "hi"}',
                now,
                now,
            )
        )
    with db.transaction() as session:
        insert_outbox_rows(session, rows)
    channel = PacedChannel(rate, latency)
    worker = DeliveryWorker(db, {"sandbox": channel}, SystemClock(), DeliveryConfig())
    start = time.perf_counter()
    worker.start()
    while sum(channel.sent.values()) < n:
        await asyncio.sleep(0.05)
    await worker.stop()
    elapsed = time.perf_counter() - start
    span = channel.slots[-1] - channel.slots[0] + channel.interval
    duplicates = sum(c - 1 for c in channel.sent.values())
    disorder = sum(seq != sorted(seq) for seq in channel.order.values())
    print(f"{n} messages at {rate:g}/s, round trip {latency * 1000:.0f} ms: {elapsed:.1f}s")
    print(f"busy:       {n / (span * rate):.1%} of the channel's slots")
    print(f"duplicates: {duplicates}")
    print(f"chats out of order: {disorder}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=900)
    parser.add_argument("--rate", type=float, default=30.0)
    parser.add_argument("--latency", type=float, default=0.15)
    parser.add_argument("--url", default="")
    args = parser.parse_args()
    url = args.url or f"sqlite:///{Path(tempfile.mkdtemp()) / 'delivery.db'}"
    db = Database(url)
    try:
        db.migrate()
        asyncio.run(run(db, args.messages, args.rate, args.latency))
    finally:
        db.close()


if __name__ == "__main__":
    main()
