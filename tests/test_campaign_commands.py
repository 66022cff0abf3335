"""Managers run campaigns from chat; staff redeem; customers opt out and back in."""

from __future__ import annotations

import re

from sqlalchemy import select

from bot.app.services import Services
from bot.marketing.campaigns.manage import run_due
from bot.marketing.coupons import format_code, sync_definitions
from storage import repos
from storage.campaigns import Campaign, ConsentChange
from storage.coupons import CouponCode
from storage.models import Customer
from tests.support import SandboxHarness, run_jobs


async def _harness(db, config, clock):
    h = SandboxHarness(config, db, clock)
    with db.transaction() as session:
        sync_definitions(session, config.coupons, clock.now())
    return h


async def test_opt_out_keywords_and_opt_in_are_recorded_and_answered_alone(db, config, clock):
    h = await _harness(db, config, clock)
    result = await h.say("alice", "退订")
    assert result.handlers[-1] == "consent"
    await h.say("alice", "TD")
    await h.deliver()
    with db.sessions() as session:
        customer = repos.find_identity(session, "sandbox", "alice").customer
        assert customer.marketing_opt_out is True
    await h.say("alice", "订阅")
    await h.deliver()
    messages = await h.bot_messages("alice")
    assert "已为你退订" in messages[0] and "已经退订" in messages[1] and "恢复订阅" in messages[2]
    with db.sessions() as session:
        changes = session.scalars(select(ConsentChange).order_by(ConsentChange.id)).all()
        assert [c.opted_out for c in changes] == [True, False]  # the repeat is not a change
        assert session.get(Customer, changes[0].customer_id).marketing_opt_out is False


async def test_manager_runs_a_campaign_and_staff_redeem(db, config, clock):
    h = await _harness(db, config, clock)
    for user in ("c1", "c2", "c3"):
        await h.say(user, "我想吃早餐")  # keyword tagging gives 早餐
    await h.say(
        "bob",
        '/campaign new b1 segment="tag:早餐" template=morning_offer coupon=breakfast5 pilot=0 holdout=0',
    )
    assert (await h.say("manager", '/campaign new bad segment="tag:" text=hi')).handlers
    await h.say(
        "manager",
        '/campaign new spring segment="tag:早餐" template=morning_offer coupon=breakfast5 pilot=0 holdout=0 buttons="领券=claim"',
    )
    await h.say("manager", "/campaign preview spring")
    await h.say("manager", "/campaign launch spring")
    await h.deliver()
    texts = await h.bot_messages("manager")
    assert "segment" in texts[0] or "tag" in texts[0]  # the bad definition is explained
    assert "spring" in texts[1]
    assert "人群 3 人" in texts[2]
    assert re.search(
        r"「早餐立减 5 元」：[0-9A-Z]{4}-[0-9A-Z]{4}-[0-9A-Z]{4}（\d{4}-\d{2}-\d{2} 前有效）",
        texts[2],
    )
    assert "已排队" in texts[3]
    assert len(await h.bot_messages("bob")) == 1  # refused
    with db.sessions() as session:
        assert session.scalars(select(Campaign.name)).all() == ["spring"]

    services = Services(db, h.runtime.config, h.runtime.renderer, clock)
    assert run_due(services) == []  # the command queued the preparation already
    assert [(j.kind, j.payload["step"]) for j in run_jobs(services)] == [
        ("campaign.prepare", "launch")
    ]
    await h.deliver()
    pushed = await h.bot_messages("c1")
    assert "早上好" in pushed[-1]
    with db.sessions() as session:
        code = session.scalars(select(CouponCode.code).order_by(CouponCode.id)).first()
    assert format_code(code) in pushed[-1]

    await h.sandbox.receive({"user_id": "c1", "chat_id": "c1", "button_data": "c:1:main:claim"})
    await h.say("manager", f"/redeem {format_code(code)} 30")
    await h.say("manager", f"/redeem {code}")
    await h.say("manager", "/redeem WRONG-CODE")
    await h.say("manager", "/campaign stats spring")
    await h.deliver()
    texts = await h.bot_messages("manager")
    assert "核销成功" in texts[-4]
    assert "核销过" in texts[-3]
    assert "没有这个券码" in texts[-2]
    assert texts[-1].splitlines() == [
        "📊 活动「spring」（发送中）",
        "覆盖 3 人：发送 3，送达 3（100%）；对照组 0，未发 0",
        "点击 1（33.3%） · 核销 1（33.3%） · 退订 0（0.0%）",
    ]
    with db.sessions() as session:
        assert session.scalars(select(Campaign.status)).one() == "running"
