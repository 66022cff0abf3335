"""Split roles on PostgreSQL: a reply queued by a web process wakes the worker process at
once (the outbox trigger's NOTIFY), not at the worker's next poll."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from storage.outbox_notify import OutboxNotifications
from tests.processes import SiyuProcess

pytestmark = pytest.mark.slow

POLL_SECONDS = 30.0  # far longer than the test may wait: only a wake-up can deliver in time


def _env(pg_url: str) -> dict[str, str]:
    return {
        "SIYU_DATABASE_URL": pg_url,
        "SIYU_SANDBOX_ENABLED": "true",
        "SIYU_SCENARIOS_SCHEDULER": "false",
        "SIYU_DELIVERY_POLL_INTERVAL_SECONDS": str(POLL_SECONDS),
    }


async def test_a_message_in_at_web_is_delivered_by_the_worker_without_waiting_for_a_poll(
    pg_url, tmp_path
):
    web = SiyuProcess("web", _env(pg_url), tmp_path, "web")
    worker = SiyuProcess("worker", _env(pg_url), tmp_path, "worker")
    try:
        await asyncio.to_thread(web.wait_ready)
        await asyncio.to_thread(worker.wait_ready)
        await asyncio.sleep(1.0)  # past the worker's first claims (it claims when it starts)
        async with httpx.AsyncClient() as http:
            waits = []
            for user in ("alice", "bob"):
                started = time.monotonic()
                r = await http.post(
                    f"{web.url}/sandbox/api/messages",
                    json={"user_id": user, "text": "/start", "locale": "zh-CN"},
                    headers={"Origin": web.url},
                )
                assert r.status_code == 202, r.text
                while True:
                    got = await http.get(f"{web.url}/sandbox/api/chats/{user}/messages")
                    if any(m["direction"] == "out" for m in got.json()["messages"]):
                        break
                    assert time.monotonic() - started < 10, worker.output()
                    await asyncio.sleep(0.02)
                waits.append(time.monotonic() - started)
        assert max(waits) < 5.0, waits  # the poll would take up to 30 s
    finally:
        codes = [web.stop(), worker.stop()]
    assert codes == [0, 0]


async def test_the_listener_wakes_on_commit_and_comes_back_after_a_lost_connection(pg_url):
    import psycopg

    woken = asyncio.Event()
    listener = OutboxNotifications(pg_url, woken.set, retry_seconds=0.2)
    listener.start()
    try:
        await asyncio.wait_for(listener.listening.wait(), 10)
        woken.clear()
        async with await psycopg.AsyncConnection.connect(listener.dsn) as conn:
            await conn.execute(
                "INSERT INTO outbox (idempotency_key, channel, chat_id, user_id, purpose,"
                " priority, payload, status, attempts, next_attempt_at, created_at)"
                " VALUES ('k1', 'sandbox', 'c', 'c', 'reply', 0, '{}', 'pending', 0,"
                " now(), now())"
            )
            await asyncio.sleep(0.3)
            assert not woken.is_set()  # not before the commit
            await conn.commit()
        await asyncio.wait_for(woken.wait(), 5)
        # the server ends the listening connection: the listener reconnects and wakes once
        # (for what may have been queued while it was away)
        woken.clear()
        async with await psycopg.AsyncConnection.connect(listener.dsn, autocommit=True) as c:
            await c.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE query LIKE 'LISTEN%' AND pid <> pg_backend_pid()"
            )
        await asyncio.wait_for(woken.wait(), 10)
        assert listener.listening.is_set()
        woken.clear()
        async with await psycopg.AsyncConnection.connect(listener.dsn, autocommit=True) as c:
            await c.execute("UPDATE outbox SET attempts = 1")  # no insert, no wake-up
            await asyncio.sleep(0.3)
            assert not woken.is_set()
            await c.execute(
                "INSERT INTO outbox (idempotency_key, channel, chat_id, user_id, purpose,"
                " priority, payload, status, attempts, next_attempt_at, created_at)"
                " VALUES ('k2', 'sandbox', 'c', 'c', 'reply', 0, '{}', 'pending', 0,"
                " now(), now())"
            )
        await asyncio.wait_for(woken.wait(), 5)
    finally:
        await listener.stop()
