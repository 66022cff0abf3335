"""The production topology as local processes: 2 web, 2 workers and 1 scheduler on
PostgreSQL and Redis (what compose.yaml and the systemd units run), with the sandbox and
Telegram (against the fake Bot API) as channels. A message goes in at one web process and
its reply comes out of a worker; each role does only its part."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
import redis
from sqlalchemy import create_engine, text

from tests.fakes.telegram import TOKEN, message, private_chat, user
from tests.processes import SiyuProcess, stop_all
from tests.test_process_roles import AttributingBotAPI

pytestmark = pytest.mark.slow


def _env(pg_url: str, api: AttributingBotAPI, who: str, redis_url: str) -> dict[str, str]:
    return {
        "SIYU_DATABASE_URL": pg_url,
        "SIYU_SANDBOX_ENABLED": "true",  # loopback only: allowed next to a real channel
        "SIYU_TELEGRAM_TOKEN": TOKEN,
        "SIYU_TELEGRAM_BASE_URL": api.base_url_for(who),
        "SIYU_TELEGRAM_POLL_TIMEOUT": "1",
        "SIYU_TELEGRAM_REDIS_URL": redis_url,
        "SIYU_PROCESS_STANDBY_SECONDS": "0.3",
        "SIYU_DELIVERY_POLL_INTERVAL_SECONDS": "0.2",
        "SIYU_LOGGING_FORMAT": "json",
    }


def _outbox(pg_url: str) -> dict[str, str]:
    engine = create_engine(pg_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT channel, status, claimed_by FROM outbox")).all()
    finally:
        engine.dispose()
    return rows


async def _until(predicate, timeout: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def test_two_web_two_workers_one_scheduler_deliver_a_message(pg_url, redis_url, tmp_path):
    async with AttributingBotAPI() as api:
        roles = [("web", "web-1"), ("web", "web-2"), ("worker", "worker-1")]
        roles += [("worker", "worker-2"), ("scheduler", "scheduler")]
        procs = {
            name: SiyuProcess(role, _env(pg_url, api, name, redis_url), tmp_path, name)
            for role, name in roles
        }
        try:
            for p in procs.values():
                await asyncio.to_thread(p.wait_ready)
            web1, web2 = procs["web-1"], procs["web-2"]
            async with httpx.AsyncClient() as http:
                # in at web-1 ...
                r = await http.post(
                    f"{web1.url}/sandbox/api/messages",
                    json={"user_id": "alice", "text": "/start", "locale": "zh-CN"},
                    headers={"Origin": web1.url},
                )
                assert r.status_code == 202, r.text

                async def replied() -> bool:  # ... the reply is seen through web-2
                    got = await http.get(f"{web2.url}/sandbox/api/chats/alice/messages")
                    return any(m["direction"] == "out" for m in got.json()["messages"])

                await _until(replied, what="the sandbox reply")
                # workers and the scheduler serve no customer routes
                for name in ("worker-1", "scheduler"):
                    r = await http.post(f"{procs[name].url}/sandbox/api/messages", json={})
                    assert r.status_code == 404

            # Telegram: one web process polls; a worker sends the reply (Redis limits)
            api.push(message(private_chat(801), user(801), "/start"))

            async def telegram_replied() -> bool:
                return bool(api.sent(801))

            await _until(telegram_replied, what="the Telegram reply")
            senders = {c.params["_who"] for c in api.sent()}
            assert senders <= {"worker-1", "worker-2"}, senders
            assert len(api.pollers()) == 1 and api.pollers() <= {"web-1", "web-2"}
            assert redis.Redis.from_url(redis_url).keys("siyu:telegram:*")  # limits in Redis
            rows = await asyncio.to_thread(_outbox, pg_url)
            assert rows and all(status == "sent" for _, status, _ in rows), rows
            assert "this process runs the scheduler" in procs["scheduler"].output()
            for name in ("web-1", "web-2", "worker-1", "worker-2"):
                assert "this process runs the scheduler" not in procs[name].output()
        finally:
            # in a thread: the fake Bot API in this loop answers their last calls meanwhile
            codes = dict(zip(procs, await asyncio.to_thread(stop_all, procs.values()), strict=True))
        assert codes == dict.fromkeys(procs, 0), codes  # every role stops cleanly on SIGTERM
