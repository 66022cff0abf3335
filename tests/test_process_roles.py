"""Process roles with real processes: Telegram polling by exactly one process (a leader
lock on PostgreSQL), taken over when the poller dies; web processes in webhook mode all
take updates; a worker process never polls; a split role refuses an unmigrated database."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
import uvicorn
from sqlalchemy import create_engine, func, select, text
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Route

from tests.fakes.telegram import TOKEN, FakeBotAPI, message, private_chat, user
from tests.processes import SiyuProcess, stop_all

pytestmark = pytest.mark.slow


class AttributingBotAPI(FakeBotAPI):
    """The fake Bot API, also served under ``/as/<who>/bot<token>/<method>``: every call
    records which process made it (``params["_who"]``)."""

    def base_url_for(self, who: str) -> str:
        return f"http://127.0.0.1:{self.port}/as/{who}/bot{{token}}"

    async def __aenter__(self) -> AttributingBotAPI:
        app = Starlette(
            routes=[
                Route("/bot{token}/{method}", self._endpoint, methods=["POST"]),
                Route("/as/{who}/bot{token}/{method}", self._endpoint, methods=["POST"]),
            ]
        )
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off"
        )
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:
            await asyncio.sleep(0.01)
        return self

    async def _params(self, request: Request) -> dict:
        params = await super()._params(request)
        params["_who"] = request.path_params.get("who")
        return params

    def pollers(self, since: float = 0.0) -> set[str]:
        return {c.params["_who"] for c in self.called("getUpdates") if c.at >= since}


def _telegram_env(pg_url: str, api: AttributingBotAPI, who: str, **extra: str) -> dict[str, str]:
    return {
        "SIYU_DATABASE_URL": pg_url,
        "SIYU_TELEGRAM_TOKEN": TOKEN,
        "SIYU_TELEGRAM_BASE_URL": api.base_url_for(who),
        "SIYU_TELEGRAM_POLL_TIMEOUT": "1",
        "SIYU_PROCESS_STANDBY_SECONDS": "0.3",
        "SIYU_SCENARIOS_SCHEDULER": "false",
        **extra,
    }


async def _until(predicate, timeout: float = 20.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def _interactions(pg_url: str) -> int:
    engine = create_engine(pg_url)
    try:
        with engine.connect() as conn:
            return conn.execute(text("SELECT count(*) FROM interactions")).scalar_one()
    finally:
        engine.dispose()


async def test_exactly_one_of_two_processes_polls_and_the_other_takes_over(pg_url, tmp_path):
    async with AttributingBotAPI() as api:
        a = SiyuProcess("web", _telegram_env(pg_url, api, "a"), tmp_path, "a")
        b = SiyuProcess("web", _telegram_env(pg_url, api, "b"), tmp_path, "b")
        procs = {"a": a, "b": b}
        try:
            await asyncio.to_thread(a.wait_ready)
            await asyncio.to_thread(b.wait_ready)
            await _until(lambda: api.pollers(), what="a first getUpdates")
            await asyncio.sleep(3.0)  # both stand-bys had ten chances to take the lock
            pollers = api.pollers()
            assert len(pollers) == 1, f"getUpdates from {pollers}"
            leader = pollers.pop()
            other = "b" if leader == "a" else "a"
            first = api.push(message(private_chat(501), user(501), "你好"))
            await api.wait_confirmed(first)

            procs[leader].kill()  # a crash: the server drops its advisory lock
            killed_at = api.now()
            await _until(lambda: other in api.pollers(killed_at), what="the takeover")
            second = api.push(message(private_chat(502), user(502), "在吗"))
            await api.wait_confirmed(second)
            assert api.pollers(killed_at) == {other}
            # each update routed once, by whichever process polled it
            assert await asyncio.to_thread(_interactions, pg_url) == 2
        finally:
            await asyncio.to_thread(stop_all, procs.values())


async def test_web_processes_in_webhook_mode_all_take_updates(pg_url, tmp_path):
    secret = "hook-secret-0123456789"
    async with AttributingBotAPI() as api:
        env = {"SIYU_TELEGRAM_MODE": "webhook", "SIYU_TELEGRAM_WEBHOOK_SECRET": secret}
        procs = [
            SiyuProcess("web", _telegram_env(pg_url, api, f"w{i}", **env), tmp_path, f"w{i}")
            for i in range(2)
        ]
        try:
            for p in procs:
                await asyncio.to_thread(p.wait_ready)
            async with httpx.AsyncClient() as http:
                for i, p in enumerate(procs):
                    update = message(private_chat(600 + i), user(600 + i), "hi")
                    update["update_id"] = 9000 + i
                    answer = await http.post(
                        f"{p.url}/telegram/webhook",
                        json=update,
                        headers={"X-Telegram-Bot-Api-Secret-Token": secret},
                    )
                    assert answer.status_code == 200, answer.text
                refused = await http.post(
                    f"{procs[0].url}/telegram/webhook",
                    json=message(private_chat(700), user(700), "x"),
                    headers={"X-Telegram-Bot-Api-Secret-Token": "wrong"},
                )
                assert refused.status_code in (401, 403)
            assert await asyncio.to_thread(_interactions, pg_url) == 2
            assert api.called("getUpdates") == []
        finally:
            await asyncio.to_thread(stop_all, procs)


async def test_a_worker_connects_to_send_but_never_polls_nor_serves_webhooks(pg_url, tmp_path):
    async with AttributingBotAPI() as api:
        worker = SiyuProcess("worker", _telegram_env(pg_url, api, "w"), tmp_path)
        try:
            await asyncio.to_thread(worker.wait_ready)
            await asyncio.sleep(1.5)
            assert api.called("getMe")
            assert api.called("getUpdates") == [] and api.called("deleteWebhook") == []
            async with httpx.AsyncClient() as http:
                assert (
                    await http.post(f"{worker.url}/telegram/webhook", json={})
                ).status_code == 404
                assert (await http.get(f"{worker.url}/livez")).json()["role"] == "worker"
        finally:
            worker.stop()


def test_a_split_role_refuses_an_unmigrated_database(empty_pg_url, tmp_path):
    proc = SiyuProcess("worker", {"SIYU_DATABASE_URL": empty_pg_url}, tmp_path)
    assert proc.proc.wait(60) == 2
    assert "siyu migrate" in proc.output()
    engine = create_engine(empty_pg_url)
    with engine.connect() as conn:  # nothing was created behind the operator's back
        tables = conn.execute(
            select(func.count())
            .select_from(text("information_schema.tables"))
            .where(text("table_schema = 'public'"))
        ).scalar_one()
    engine.dispose()
    assert tables == 0
    proc.stop()


def _queue_telegram(pg_url: str, n: int) -> None:
    from datetime import UTC, datetime

    from storage.bulk import insert_outbox_rows
    from storage.db import Database

    now = datetime.now(UTC)
    rows = [
        (
            f"tg:{i}",
            "telegram",
            str(1000 + i),
            str(1000 + i),
            None,
            "campaign",
            10,
            '{"text": "新品上架"}',
            now,
            now,
        )
        for i in range(n)
    ]
    db = Database(pg_url)
    with db.transaction() as session:
        insert_outbox_rows(session, rows)
    db.close()


def _busiest(times: list[float], period: float) -> int:
    """The most calls the fake saw within any ``period`` seconds."""
    times = sorted(times)
    best = start = 0
    for end, t in enumerate(times):
        while t - times[start] >= period:
            start += 1
        best = max(best, end - start + 1)
    return best


async def test_two_worker_processes_stay_within_telegrams_30_per_second_together(
    pg_url, redis_url, tmp_path
):
    async with AttributingBotAPI() as api:
        env = {"SIYU_TELEGRAM_REDIS_URL": redis_url, "SIYU_DELIVERY_POLL_INTERVAL_SECONDS": "0.1"}
        workers = [
            SiyuProcess("worker", _telegram_env(pg_url, api, f"w{i}", **env), tmp_path, f"w{i}")
            for i in range(2)
        ]
        try:
            for w in workers:
                await asyncio.to_thread(w.wait_ready)
            await asyncio.to_thread(_queue_telegram, pg_url, 75)
            await _until(lambda: len(api.sent()) >= 75, timeout=30, what="75 sends")
            sent = api.sent()
            assert {c.params["_who"] for c in sent} == {"w0", "w1"}  # both worked
            assert len({c.params["chat_id"] for c in sent}) == 75  # each once
            at = [c.at for c in sent]
            # 30/s together: 30 at once, 30 a second later, 15 after two seconds, so the
            # sends span 2 s at least. With a limit per process (30/s each) 75 messages
            # would span about 1 s: 30 + 30 at once, the last 15 a second later.
            assert max(at) - min(at) >= 1.8, max(at) - min(at)
            # Slots are taken just before a request leaves, so arrivals at the fake bunch
            # a little on a busy machine; separate limits would put all 75 within 1.3 s.
            assert _busiest(at, 1.3) < 75
        finally:
            await asyncio.to_thread(stop_all, workers)


def test_split_roles_need_postgresql(sqlite_url, tmp_path):
    proc = SiyuProcess("web", {"SIYU_DATABASE_URL": sqlite_url}, tmp_path)
    assert proc.proc.wait(60) == 2
    assert "needs PostgreSQL" in proc.output()
    proc.stop()
