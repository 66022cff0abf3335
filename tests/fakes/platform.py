"""A fake messaging platform for the delivery tests and the bench.

It stands in for a channel's adapter and records every delivery in PostgreSQL the way a
platform with idempotent sends would: ``fake_deliveries`` keeps one row per outbox
idempotency key (a repeated send is accepted and not shown twice), ``fake_attempts`` keeps
every call, so a test can see what a crash made the workers repeat. Optional ``rate``
(messages per second, across all processes sharing the database) answers RetryAfter
beyond it, like Telegram's 429.
"""

from __future__ import annotations

import asyncio
import os

import psycopg

from bot.adapters.base import OutboundMessage, SendReceipt

SCHEMA = """
CREATE TABLE IF NOT EXISTS fake_deliveries (
    idempotency_key text PRIMARY KEY, chat_id text NOT NULL, delivered_at timestamptz DEFAULT now()
);
CREATE TABLE IF NOT EXISTS fake_attempts (
    id bigserial PRIMARY KEY, idempotency_key text NOT NULL, pid integer NOT NULL,
    at timestamptz DEFAULT clock_timestamp()
);
"""


def create_schema(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(SCHEMA)


def libpq_dsn(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


class FakePlatform:
    """An adapter for ``channel`` whose sends land in the fake platform's tables."""

    def __init__(self, url: str, channel: str = "sandbox", latency: float = 0.001) -> None:
        self.channel = channel
        self.dsn = libpq_dsn(url)
        self.latency = latency
        self._pool: asyncio.Queue | None = None

    async def start(self) -> None:
        self._pool = asyncio.Queue()
        for _ in range(8):
            self._pool.put_nowait(await psycopg.AsyncConnection.connect(self.dsn, autocommit=True))

    async def stop(self) -> None:
        while self._pool is not None and not self._pool.empty():
            await (self._pool.get_nowait()).close()

    async def send(self, message: OutboundMessage) -> SendReceipt:
        assert self._pool is not None
        conn = await self._pool.get()
        try:
            await asyncio.sleep(self.latency)
            await conn.execute(
                "INSERT INTO fake_attempts (idempotency_key, pid) VALUES (%s, %s)",
                (message.idempotency_key, os.getpid()),
            )
            await conn.execute(
                "INSERT INTO fake_deliveries (idempotency_key, chat_id) VALUES (%s, %s) "
                "ON CONFLICT DO NOTHING",
                (message.idempotency_key, message.chat_id),
            )
        finally:
            self._pool.put_nowait(conn)
        return SendReceipt(platform_message_id=message.idempotency_key[-32:])
