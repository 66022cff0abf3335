"""Never acknowledge what is not stored: WeChat callbacks during a bulk import on SQLite.

A real ``siyu import orders`` runs in another process and holds SQLite's write lock for
seconds (one transaction). Meanwhile 100 signed callbacks arrive; WeChat resends any
callback not answered (and sometimes one that was). At the moment a callback is answered
it must already be stored (committed, seen from another connection), and in the end every
one is stored exactly once. A callback that cannot be stored within the reply budget gets
an error status instead of a ``success`` that could lose it.
"""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import time
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, insert, select

from storage.models import Customer, Identity, Interaction
from storage.wechat_inbound import InboundCallback
from tests.fakes.wechat import (
    OA_APP_ID,
    CallbackSigner,
    RunningSiyu,
    oa_config,
    random_aes_key,
)
from tests.support import free_port

APP_ID = OA_APP_ID
ROOT = Path(__file__).resolve().parent.parent
CALLBACKS = 100
IMPORT_ROWS = 120_000  # long enough that the import still holds the lock when callbacks come
SHOPPERS = 2000
SIYU = [sys.executable, "-m", "bot.app.cli"]


@pytest.fixture
def wx_config(config, sqlite_db, fake_api):
    return oa_config(config, sqlite_db.url, fake_api, reply_budget_seconds=0.3)


def db_path(sqlite_db) -> str:
    return sqlite_db.url.removeprefix("sqlite:///")


def write_lock_held(path: str) -> bool:
    """True while another connection holds the database's write lock."""
    conn = sqlite3.connect(path, timeout=0)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("ROLLBACK")
        return False
    except sqlite3.OperationalError:
        return True
    finally:
        conn.close()


def stored_counts(sqlite_db) -> dict[str, int]:
    with sqlite_db.sessions() as session:
        rows = session.execute(
            select(Interaction.text, func.count())
            .where(Interaction.text.startswith("导入期间的消息"))
            .group_by(Interaction.text)
        ).all()
    return dict(rows)


def pending(sqlite_db) -> int:
    with sqlite_db.sessions() as session:
        return session.scalar(
            select(func.count())
            .select_from(InboundCallback)
            .where(InboundCallback.status != "done")
        )


def seed_shoppers(sqlite_db, now) -> None:
    """Customers the imported orders belong to (plain set-up rows)."""
    with sqlite_db.transaction() as session:
        session.execute(
            insert(Customer),
            [{"id": i + 1, "display_name": f"顾客{i}", "created_at": now} for i in range(SHOPPERS)],
        )
        session.execute(
            insert(Identity),
            [
                {"customer_id": i + 1, "channel": "sandbox", "external_id": f"shop{i}"}
                for i in range(SHOPPERS)
            ],
        )


def start_import(tmp_path: Path, sqlite_db) -> subprocess.Popen:
    csv_path = tmp_path / "orders.csv"
    lines = ["order_id,customer,phone,amount,currency,time,items"]
    lines += [
        f"B{i},sandbox:shop{i % SHOPPERS},,{i % 500 + 1}.50,CNY,2026-03-01T10:00:00+08:00,x"
        for i in range(IMPORT_ROWS)
    ]
    csv_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    cfg = tmp_path / "import.toml"
    cfg.write_text(f'[database]\nurl = "{sqlite_db.url}"\n')
    return subprocess.Popen(
        [*SIYU, "import", "orders", str(csv_path), "--config", str(cfg)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def stored_now(path: str, i: int) -> bool:
    """Is callback ``i`` committed (journal row or interaction), seen from another connection?"""
    conn = sqlite3.connect(path, timeout=5)
    try:
        journal = conn.execute(
            "SELECT count(*) FROM wechat_inbound WHERE key = ?", (f"wechat:{7_000_000 + i}",)
        ).fetchone()[0]
        routed = conn.execute(
            "SELECT count(*) FROM interactions WHERE text = ?", (f"导入期间的消息{i}",)
        ).fetchone()[0]
        return bool(journal or routed)
    finally:
        conn.close()


async def test_callbacks_during_a_bulk_import_are_all_stored_exactly_once(
    wx_config, sqlite_db, clock, tmp_path
):
    c = wx_config.wechat
    signer = CallbackSigner(
        c.token, c.encoding_aes_key, APP_ID, now=lambda: clock.now().timestamp()
    )
    callbacks = []
    for i in range(CALLBACKS):
        fields = {
            "ToUserName": "gh_account",
            "FromUserName": f"oBULK{i:024d}",
            "CreateTime": int(clock.now().timestamp()),
            "MsgType": "text",
            "Content": f"导入期间的消息{i}",
            "MsgId": 7_000_000 + i,
        }
        callbacks.append(signer.oa_callback(fields))
    refused: list[int] = []
    acknowledged: set[int] = set()
    unstored_acks: list[int] = []
    seed_shoppers(sqlite_db, clock.now())

    async with RunningSiyu(wx_config, sqlite_db, clock, free_port()) as siyu:
        journal = siyu.adapter("wechat").journal
        journal.sweep_interval = 0.2
        journal.sweep_min_age = timedelta(0)
        importer = start_import(tmp_path, sqlite_db)
        deadline = time.monotonic() + 60
        held_since = None  # the import's own transaction, not a brief lock while migrating
        while held_since is None or time.monotonic() - held_since < 0.3:
            assert importer.poll() is None, importer.communicate()
            assert time.monotonic() < deadline, "the import never held the write lock"
            if write_lock_held(db_path(sqlite_db)):
                held_since = held_since or time.monotonic()
            else:
                held_since = None
            await asyncio.sleep(0.02)

        gate = asyncio.Semaphore(20)

        async def until_answered(i: int, client: httpx.AsyncClient) -> None:
            query, body = callbacks[i]
            url = f"{siyu.base}/wechat/callback?{query}"
            while time.monotonic() < deadline + 120:
                r = await client.post(url, content=body)
                if r.status_code == 200:  # "success" or a passive reply
                    acknowledged.add(i)
                    if not await asyncio.to_thread(stored_now, db_path(sqlite_db), i):
                        unstored_acks.append(i)
                    return
                assert r.status_code == 503, (r.status_code, r.text)
                refused.append(i)
                await asyncio.sleep(0.3)  # WeChat's retry
            raise AssertionError(f"callback {i} never answered")

        async def deliver(i: int, client: httpx.AsyncClient) -> None:
            async with gate:
                await until_answered(i, client)
                # WeChat sometimes resends a callback that was answered (a slow answer)
                await until_answered(i, client)

        async with httpx.AsyncClient(timeout=30) as client:
            await asyncio.gather(*(deliver(i, client) for i in range(CALLBACKS)))
        out, err = await asyncio.to_thread(importer.communicate, timeout=120)
        assert importer.returncode == 0, err
        assert f"{IMPORT_ROWS} new order(s)" in out
        settle = time.monotonic() + 60
        while pending(sqlite_db) and time.monotonic() < settle:
            await asyncio.sleep(0.1)

    assert acknowledged == set(range(CALLBACKS))
    assert unstored_acks == [], "acknowledged before being stored"
    assert refused, "no callback met the import's lock: the test proved nothing"
    counts = stored_counts(sqlite_db)
    assert counts == {f"导入期间的消息{i}": 1 for i in range(CALLBACKS)}
    assert pending(sqlite_db) == 0


async def test_a_recorded_callback_left_unrouted_by_a_crash_is_routed_on_the_next_start(
    wx_config, sqlite_db, clock
):
    """The process answered after recording and died before routing: the row is routed by
    the next process's sweeper, and WeChat's retry of it is not routed a second time."""
    from bot.adapters.wechat.inbound import CallbackJournal

    c = wx_config.wechat
    signer = CallbackSigner(
        c.token, c.encoding_aes_key, APP_ID, now=lambda: clock.now().timestamp()
    )
    fields = {
        "ToUserName": "gh_account",
        "FromUserName": "oCRASHED00000000000000000001",
        "CreateTime": str(int(clock.now().timestamp())),
        "MsgType": "text",
        "Content": "导入期间的消息 crash",
        "MsgId": "7999999",
    }
    journal = CallbackJournal(sqlite_db, clock, "wechat", c.replay_window_seconds)
    assert await journal.record("wechat:7999999", fields["FromUserName"], fields, None, 5) is None
    assert pending(sqlite_db) == 1
    clock.advance(60)  # the next start comes later
    async with RunningSiyu(wx_config, sqlite_db, clock, free_port()) as siyu:
        deadline = time.monotonic() + 10
        while pending(sqlite_db) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert pending(sqlite_db) == 0, "the sweeper did not route the recorded callback"
        assert stored_counts(sqlite_db) == {"导入期间的消息 crash": 1}
        query, body = signer.oa_callback({**fields, "MsgId": 7999999})
        async with httpx.AsyncClient(timeout=10) as client:
            r = await client.post(f"{siyu.base}/wechat/callback?{query}", content=body)
        assert r.status_code == 200 and r.text == "success"
    assert pending(sqlite_db) == 0
    assert stored_counts(sqlite_db) == {"导入期间的消息 crash": 1}


@pytest.mark.parametrize("channel", ["wechat", "wecom"])
async def test_a_callback_that_cannot_be_stored_is_not_acknowledged(
    channel, wx_config, sqlite_db, clock
):
    """While the database refuses writes the answer is 503 (WeChat retries), never success."""
    config = wx_config.replace(
        wecom=replace(
            wx_config.wecom,
            corp_id="ww0123456789abcdef",
            secret="s3cret-corp",
            agent_id=1000002,
            token="wecom-token",
            encoding_aes_key=random_aes_key(),
            api_base_url=wx_config.wechat.api_base_url,
            reply_budget_seconds=0.3,
        )
    )
    section = config.wechat if channel == "wechat" else config.wecom
    receiver = APP_ID if channel == "wechat" else "ww0123456789abcdef"
    signer = CallbackSigner(
        section.token, section.encoding_aes_key, receiver, now=lambda: clock.now().timestamp()
    )
    fields = {
        "ToUserName": receiver,
        "FromUserName": "zhangsan" if channel == "wecom" else "oLOCKED000000000000000000001",
        "CreateTime": int(clock.now().timestamp()),
        "MsgType": "text",
        "Content": f"导入期间的消息 locked {channel}",
        "MsgId": 8_000_001,
    }
    query, body = (
        signer.oa_callback(fields) if channel == "wechat" else signer.wecom_callback(fields)
    )
    lock = sqlite3.connect(db_path(sqlite_db), timeout=5, isolation_level=None)
    async with RunningSiyu(config, sqlite_db, clock, free_port()) as siyu:
        url = f"{siyu.base}/{channel}/callback?{query}"
        async with httpx.AsyncClient(timeout=30) as client:
            lock.execute("BEGIN IMMEDIATE")  # another process holds the write lock
            try:
                for _ in range(2):
                    r = await client.post(url, content=body)
                    assert r.status_code == 503, r.text
                    assert stored_counts(sqlite_db) == {}
            finally:
                lock.execute("ROLLBACK")
                lock.close()
            r = await client.post(url, content=body)  # WeChat's next retry
            assert r.status_code == 200
    assert stored_counts(sqlite_db) == {f"导入期间的消息 locked {channel}": 1}
