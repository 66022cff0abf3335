"""Official Account sending against a fake WeChat API: window, template fallback, quota
errors, shared access tokens, and customers joined by unionid."""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import timedelta

import pytest
from sqlalchemy import select

from bot.adapters.wechat.api import OfficialAccountApi, TokenStore
from bot.app.cli import main as cli_main
from bot.core.events import ConversationRef
from bot.outbox import queue as outbox
from storage.db import Database
from storage.models import Identity, OutboxMessage
from storage.wechat import AccessToken, WechatDelivery
from tests.fakes.wechat import (
    CallbackSigner,
    RunningSiyu,
    random_aes_key,
    wait_until,
)
from tests.support import free_port

APP_ID = "wx0123456789abcdef"
OPENID = "oABCDEFGHIJKLMNOPQRSTUVWXYZ1"


def make_config(config, db, fake_api, **wechat):
    return config.replace(
        database=replace(config.database, url=db.url),
        wechat=replace(
            config.wechat,
            app_id=APP_ID,
            app_secret="s3cret",
            token="callback-token",
            encoding_aes_key=random_aes_key(),
            api_base_url=fake_api.base_url,
            passive_reply=False,
            **wechat,
        ),
    )


async def say(siyu, config, clock, text: str, msg_id: int) -> None:
    import httpx

    c = config.wechat
    signer = CallbackSigner(
        c.token, c.encoding_aes_key, APP_ID, now=lambda: clock.now().timestamp()
    )
    query, body = signer.oa_callback(
        {
            "ToUserName": "gh_x",
            "FromUserName": OPENID,
            "CreateTime": int(clock.now().timestamp()),
            "MsgType": "text",
            "Content": text,
            "MsgId": msg_id,
        }
    )
    async with httpx.AsyncClient() as client:
        assert (
            await client.post(f"{siyu.base}/wechat/callback?{query}", content=body)
        ).text == "success"


def queue(db: Database, clock, key: str, text: str = "限时优惠") -> None:
    with db.transaction() as session:
        outbox.enqueue(
            session,
            key=key,
            to=ConversationRef("wechat", OPENID, OPENID),
            text=text,
            now=clock.now(),
        )


def outbox_row(db: Database, key: str) -> OutboxMessage:
    with db.sessions() as session:
        return session.scalars(
            select(OutboxMessage).where(OutboxMessage.idempotency_key == key)
        ).one()


def routes(db: Database) -> list[tuple[str, int | None]]:
    with db.sessions() as session:
        return [
            (d.route, d.errcode)
            for d in session.scalars(select(WechatDelivery).order_by(WechatDelivery.id))
        ]


async def test_inside_the_window_a_customer_service_message_is_sent(
    config, sqlite_db, clock, fake_api
):
    cfg = make_config(config, sqlite_db, fake_api)
    async with RunningSiyu(cfg, sqlite_db, clock, free_port()) as siyu:
        await say(siyu, cfg, clock, "/help", 1)
        await wait_until(lambda: len(fake_api.calls_to("message/custom/send")) == 1)
        queue(sqlite_db, clock, "k1")
        await siyu.runtime.worker.drain_once()
    sent = fake_api.calls_to("message/custom/send")
    assert [c.body["touser"] for c in sent] == [OPENID, OPENID]
    assert sent[1].body["text"]["content"] == "限时优惠"
    assert outbox_row(sqlite_db, "k1").status == "sent"
    assert routes(sqlite_db) == [("custom", None), ("custom", None)]


async def test_outside_the_window_the_template_goes_or_window_closed_is_recorded(
    config, sqlite_db, clock, fake_api
):
    cfg = make_config(config, sqlite_db, fake_api)
    async with RunningSiyu(cfg, sqlite_db, clock, free_port()) as siyu:
        await say(siyu, cfg, clock, "hello", 1)
        # the answer to "hello" goes inside the window (else it would be queued after it)
        await wait_until(lambda: len(fake_api.calls_to("message/custom/send")) == 1)
        clock.advance(timedelta(hours=49))
        queue(sqlite_db, clock, "late")
        await siyu.runtime.worker.drain_once()
    row = outbox_row(sqlite_db, "late")
    assert row.status == "failed" and row.last_error.startswith("window closed")
    assert ("window_closed", None) in routes(sqlite_db)

    cfg = make_config(config, sqlite_db, fake_api, fallback_template_id="TPL-1")
    async with RunningSiyu(cfg, sqlite_db, clock, free_port()) as siyu:
        queue(sqlite_db, clock, "late-2")
        await siyu.runtime.worker.drain_once()
    (call,) = fake_api.calls_to("message/template/send")
    assert call.body["template_id"] == "TPL-1"
    assert call.body["data"]["content"]["value"] == "限时优惠"
    assert outbox_row(sqlite_db, "late-2").status == "sent"


async def test_quota_errors_are_recorded_not_retried_blindly(config, sqlite_db, clock, fake_api):
    cfg = make_config(config, sqlite_db, fake_api, fallback_template_id="TPL-1")
    async with RunningSiyu(cfg, sqlite_db, clock, free_port()) as siyu:
        await say(siyu, cfg, clock, "hello", 1)  # answered: "didn't understand"
        await wait_until(lambda: len(fake_api.calls_to("message/custom/send")) == 1)
        fake_api.fail_next("message/custom/send", 45047, "out of response count limit")
        queue(sqlite_db, clock, "q1")
        await siyu.runtime.worker.drain_once()
        queue(sqlite_db, clock, "q2")  # the window is known closed now: no custom try
        fake_api.fail_next("message/template/send", 45009, "reach max api daily quota limit")
        await siyu.runtime.worker.drain_once()
    assert len(fake_api.calls_to("message/custom/send")) == 2
    assert outbox_row(sqlite_db, "q1").status == "sent"  # via the template
    q2 = outbox_row(sqlite_db, "q2")
    assert q2.status == "pending" and q2.next_attempt_at > clock.now() + timedelta(minutes=30)
    assert routes(sqlite_db)[1:] == [("quota", 45047), ("template", None), ("quota", 45009)]


def test_two_processes_share_one_token_fetch(sqlite_url, clock, fake_api):
    """Two Database/clients (as two Siyu processes would have) fetch the token once."""
    first = Database(sqlite_url)
    first.migrate()
    second = Database(sqlite_url)
    fake_api.token_delay = 0.3  # both ask while the first fetch is in flight
    clients = [
        OfficialAccountApi(APP_ID, "s", TokenStore(db, clock, 300), fake_api.base_url, 5)
        for db in (first, second)
    ]
    threads = [
        threading.Thread(target=c.call, args=(c.message.send_text, OPENID, "hi")) for c in clients
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert fake_api.token_fetches == 1
    assert len(fake_api.calls_to("message/custom/send")) == 2
    # refreshed before expiry: 7200 s minus the 300 s margin
    clock.advance(timedelta(seconds=6950))
    clients[1].call(clients[1].message.send_text, OPENID, "again")
    assert fake_api.token_fetches == 2
    # a revoked token (40001) is refetched once, and only once
    fake_api.revoked_tokens.add("tok-2")
    clients[0].call(clients[0].message.send_text, OPENID, "after revoke")
    assert fake_api.token_fetches == 3
    with first.sessions() as session:
        assert session.get(AccessToken, f"wechat:{APP_ID}").fetch_count == 3
    first.close()
    second.close()


async def test_same_unionid_is_one_customer_and_managers_can_merge(
    config, sqlite_db, clock, fake_api, tmp_path, capsys
):
    from storage.identity_links import link_unionid
    from storage.repos import upsert_customer

    with sqlite_db.transaction() as session:
        oa, _ = upsert_customer(
            session,
            "wechat",
            OPENID,
            display_name="A",
            locale="zh-CN",
            timezone="Asia/Shanghai",
            now=clock.now(),
        )
        wc, _ = upsert_customer(
            session,
            "wecom",
            "wmEXT",
            display_name="B",
            locale="zh-CN",
            timezone="Asia/Shanghai",
            now=clock.now(),
        )
        other, _ = upsert_customer(
            session,
            "sandbox",
            "c3",
            display_name="C",
            locale="zh-CN",
            timezone="Asia/Shanghai",
            now=clock.now(),
        )
        ids = (oa.id, wc.id, other.id)
    with sqlite_db.transaction() as session:
        link_unionid(session, "wechat", OPENID, "UNION-1", clock.now())
        assert link_unionid(session, "wecom", "wmEXT", "UNION-1", clock.now()) == ids[0]
    with sqlite_db.sessions() as session:
        owners = {i.external_id: i.customer_id for i in session.scalars(select(Identity))}
    assert owners[OPENID] == owners["wmEXT"] == ids[0]

    cfg_file = tmp_path / "siyu.toml"
    cfg_file.write_text(f'[database]\nurl = "{sqlite_db.url}"\n', encoding="utf-8")
    assert cli_main(["customer", "merge", str(ids[0]), str(ids[2]), "--config", str(cfg_file)]) == 0
    assert cli_main(["customer", "merge", str(ids[0]), "999999", "--config", str(cfg_file)]) == 2
    with sqlite_db.sessions() as session:
        assert (
            session.scalars(select(Identity).where(Identity.external_id == "c3")).one().customer_id
            == ids[0]
        )


SNIPPET = """
import sys
from bot.adapters.wechat.api import OfficialAccountApi, TokenStore
from bot.core.clock import SystemClock
from storage.db import Database
db = Database(sys.argv[1])
api = OfficialAccountApi("wxAPP", "s", TokenStore(db, SystemClock(), 300), sys.argv[2], 5)
api.call(api.message.send_text, "o" * 28, "hi")
"""


@pytest.mark.slow
def test_two_siyu_processes_fetch_the_token_once(sqlite_url, fake_api):
    import subprocess
    import sys

    Database(sqlite_url).migrate()
    fake_api.token_delay = 0.5
    procs = [
        subprocess.Popen([sys.executable, "-c", SNIPPET, sqlite_url, fake_api.base_url])
        for _ in range(2)
    ]
    assert [p.wait(timeout=60) for p in procs] == [0, 0]
    assert fake_api.token_fetches == 1
    assert len(fake_api.calls_to("message/custom/send")) == 2
