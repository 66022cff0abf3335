"""One delivery worker process of bench/scaleout.py: Siyu's DeliveryWorker (its own run
loop, leases, SIGTERM handling) delivering through the fake rate-limited channel, with the
channel's global limit shared through Redis (the same RedisRateLimiter the Telegram
channel uses)."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.adapters.base import OutboundMessage, RetryAfter, SendReceipt, TransientError
from bot.adapters.telegram.limits import RateLimits
from bot.adapters.telegram.limits_redis import RedisRateLimiter
from bot.app.config import DeliveryConfig
from bot.core.clock import SystemClock
from bot.outbox.states import is_transactional
from bot.outbox.worker import DeliveryWorker
from storage.db import Database

CHANNEL = "fake"


class FakeChannel:
    """Sends to the bench's fake platform over HTTP after taking a shared rate slot."""

    channel = CHANNEL

    def __init__(self, base: str, limiter: RedisRateLimiter) -> None:
        self.base, self.limiter = base, limiter
        self.http = httpx.AsyncClient(timeout=10.0, limits=httpx.Limits(max_connections=100))

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        await self.http.aclose()
        await self.limiter.aclose()

    async def send(self, message: OutboundMessage) -> SendReceipt:
        urgent = is_transactional(message.purpose)
        await self.limiter.acquire(message.chat_id, is_group=False, urgent=urgent)
        try:
            r = await self.http.post(
                f"{self.base}/send", json={"key": message.idempotency_key, "chat": message.chat_id}
            )
        except httpx.HTTPError as exc:
            raise TransientError(str(exc)) from exc
        if r.status_code == 429:
            raise RetryAfter(float(r.json()["retry_after"]), "429")
        if r.status_code != 200:
            raise TransientError(f"HTTP {r.status_code}")
        return SendReceipt(platform_message_id=message.idempotency_key)


async def main(url: str, base: str, redis_url: str, limit: int, prefix: str) -> None:
    db = Database(url)
    limiter = RedisRateLimiter(
        redis_url, RateLimits(overall=(limit, 1.0), per_chat=(1000, 1.0)), prefix=prefix
    )
    channel = FakeChannel(base, limiter)
    config = DeliveryConfig(
        batch_size=50, lease_seconds=10, poll_interval_seconds=0.2, shutdown_grace_seconds=10
    )
    worker = DeliveryWorker(db, {CHANNEL: channel}, SystemClock(), config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    worker.start()
    print("ready", flush=True)
    await stop.wait()
    await worker.stop()  # in-flight sends finish, unfinished claims go back to the queue
    await channel.stop()
    db.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]))
