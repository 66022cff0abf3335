"""Referrals (老带新) through the real adapters: a Telegram deep link and an Official Account
QR scene attribute the newcomer once; rewards are issued once when the newcomer's first
order is imported; self-referral is refused; the referrer's cap holds."""

from __future__ import annotations

import re
from dataclasses import replace
from zoneinfo import ZoneInfo

import httpx
import pytest
from sqlalchemy import select

from bot.core.templating import Renderer
from bot.customers.orders import store_orders, validate_order
from bot.customers.segments import count_segment
from bot.measures.referrals import settle_first_orders
from storage.measures import Referral, ReferralReward
from tests.fakes.wechat import (
    OA_APP_ID,
    CallbackSigner,
    RunningSiyu,
    oa_config,
)
from tests.support import free_port
from tests.telegram_fake_api import TelegramHarness, message, private_chat, user

pytestmark = pytest.mark.filterwarnings("ignore::telegram.warnings.PTBDeprecationWarning")

ALICE, BOB, CAROL = 5001, 5002, 5003


def referral_config(config, **referrals):
    return config.replace(
        referrals=replace(config.referrals, telegram_bot_username="siyu_test_bot", **referrals)
    )


async def invite_code(tg: TelegramHarness, uid: int, name: str) -> str:
    await tg.push(message(private_chat(uid), user(uid, name), "我的邀请"))
    await tg.deliver()
    text = tg.api.texts(uid)[-1]
    link = re.search(r"https://t\.me/siyu_test_bot\?start=ref_([a-z0-9]{8})", text)
    assert link, text
    return link.group(1)


def import_order(db, clock, config, order_id: str, uid: int) -> None:
    """What ``siyu import orders`` and ``POST /api/orders`` do: store, then settle."""
    order = validate_order(
        {"order_id": order_id, "customer": f"telegram:{uid}", "amount": "88.00",
         "time": clock.now().isoformat()},
        tz=ZoneInfo("Asia/Shanghai"), now=clock.now(), default_currency="CNY",
    )  # fmt: skip
    with db.transaction() as session:
        store_orders(session, [(1, order)], source="test", now=clock.now())
        settle_first_orders(session, config=config, renderer=Renderer(), now=clock.now())


def rewards(db) -> list[tuple[int, str, str]]:
    with db.sessions() as s:
        rows = s.scalars(select(ReferralReward).order_by(ReferralReward.id))
        return [(r.customer_id, r.beneficiary, r.status) for r in rows]


async def test_telegram_deep_link_attributes_once_and_rewards_on_first_order(
    config, sqlite_db, clock
):
    config = referral_config(config)
    async with TelegramHarness(config, sqlite_db, clock) as tg:
        await tg.push(message(private_chat(ALICE), user(ALICE, "Alice"), "/start"))
        code = await invite_code(tg, ALICE, "Alice")
        assert "已邀请 0 位好友" in tg.api.texts(ALICE)[-1]

        await tg.push(message(private_chat(BOB), user(BOB, "Bob"), f"/start ref_{code}"))
        await tg.push(message(private_chat(BOB), user(BOB, "Bob"), f"/start ref_{code}"))
        alice, bob = tg.profile(ALICE)["id"], tg.profile(BOB)["id"]
        with sqlite_db.sessions() as s:
            (ref,) = s.scalars(select(Referral)).all()
            assert (ref.referrer_id, ref.referred_id, ref.via) == (alice, bob, "deep_link")
            assert count_segment(s, "referrals >= 1", config=config, now=clock.now()) == 1
            assert count_segment(s, f"referred_by:{alice}", config=config, now=clock.now()) == 1
        assert rewards(sqlite_db) == []  # the default rule waits for the first order

        await tg.deliver()
        sent_before = {uid: len(tg.api.texts(uid)) for uid in (ALICE, BOB)}
        import_order(sqlite_db, clock, tg.runtime.config, "order-1", BOB)
        import_order(sqlite_db, clock, tg.runtime.config, "order-2", BOB)  # not a first order
        await tg.deliver()
        assert rewards(sqlite_db) == [(alice, "referrer", "issued"), (bob, "newcomer", "issued")]
        alice_new = tg.api.texts(ALICE)[sent_before[ALICE] :]
        bob_new = tg.api.texts(BOB)[sent_before[BOB] :]
        assert len(alice_new) == 1 and "感谢您的推荐" in alice_new[0] and "REF-" in alice_new[0]
        assert len(bob_new) == 1 and "好友邀请的见面礼券" in bob_new[0]

        await invite_code(tg, ALICE, "Alice")
        assert "已邀请 1 位好友，其中 1 位已下单；您已获得 1 份邀请礼" in tg.api.texts(ALICE)[-1]


async def test_self_referral_and_existing_customers_are_refused(config, sqlite_db, clock):
    config = referral_config(config)
    async with TelegramHarness(config, sqlite_db, clock) as tg:
        await tg.push(message(private_chat(ALICE), user(ALICE, "Alice"), "/start"))
        code = await invite_code(tg, ALICE, "Alice")
        await tg.push(message(private_chat(ALICE), user(ALICE, "Alice"), f"/start ref_{code}"))
        # Carol has been a customer for two days: not a newcomer any more.
        await tg.push(message(private_chat(CAROL), user(CAROL, "Carol"), "hi"))
        clock.advance(2 * 24 * 3600)
        await tg.push(message(private_chat(CAROL), user(CAROL, "Carol"), f"/start ref_{code}"))
        await tg.push(message(private_chat(BOB), user(BOB, "Bob"), "/start ref_zzzzzzzz"))
        with sqlite_db.sessions() as s:
            assert s.scalars(select(Referral)).all() == []


async def test_the_referrers_cap_holds_and_the_newcomer_still_gets_theirs(config, sqlite_db, clock):
    config = referral_config(config, cap_per_referrer=1)
    async with TelegramHarness(config, sqlite_db, clock) as tg:
        await tg.push(message(private_chat(ALICE), user(ALICE, "Alice"), "/start"))
        code = await invite_code(tg, ALICE, "Alice")
        for uid, name in ((BOB, "Bob"), (CAROL, "Carol")):
            await tg.push(message(private_chat(uid), user(uid, name), f"/start ref_{code}"))
            import_order(sqlite_db, clock, tg.runtime.config, f"order-{uid}", uid)
        alice, bob, carol = (tg.profile(u)["id"] for u in (ALICE, BOB, CAROL))
        assert rewards(sqlite_db) == [
            (alice, "referrer", "issued"),
            (bob, "newcomer", "issued"),
            (alice, "referrer", "capped"),
            (carol, "newcomer", "issued"),
        ]


APP_ID = OA_APP_ID


@pytest.fixture
def wx(config, sqlite_db, clock, fake_api):
    cfg = oa_config(config, sqlite_db.url, fake_api)
    signer = CallbackSigner(
        cfg.wechat.token, cfg.wechat.encoding_aes_key, APP_ID, now=lambda: clock.now().timestamp()
    )
    return cfg, signer


async def test_wechat_qr_scene_attributes_the_follower(wx, sqlite_db, clock):
    cfg, signer = wx
    async with (
        RunningSiyu(cfg, sqlite_db, clock, free_port()) as siyu,
        httpx.AsyncClient(timeout=10) as client,
    ):

        async def callback(openid: str, **fields) -> httpx.Response:
            base = {"ToUserName": "gh_account", "FromUserName": openid,
                    "CreateTime": int(clock.now().timestamp())}  # fmt: skip
            query, body = signer.oa_callback(base | fields)
            return await client.post(f"{siyu.base}/wechat/callback?{query}", content=body)

        answer = await callback("oInviter", MsgType="text", Content="我的邀请", MsgId=1)
        text = signer.open_reply(answer.text)["Content"]
        code = re.search(r"邀请码：([a-z0-9]{8})", text).group(1)
        await callback(
            "oNewcomer", MsgType="event", Event="subscribe", EventKey=f"qrscene_ref_{code}"
        )
        with sqlite_db.sessions() as s:
            (ref,) = s.scalars(select(Referral)).all()
            assert (ref.channel, ref.via, ref.code) == ("wechat", "qr_scene", code)
