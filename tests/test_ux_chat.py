"""What customers and managers meet in chat, through the sandbox and the Telegram adapter:
/help per role and the command menus, greeting, "my coupons", /redeem without an amount,
a coupon's total stock, group privacy, and campaign safety."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import timedelta

import pytest
from sqlalchemy import select

from bot.app.config import CouponDef
from bot.app.services import Services
from bot.core.commands import COMMANDS, commands_for
from bot.marketing.campaigns.manage import evaluate
from bot.marketing.coupons import format_code, sync_definitions
from storage.campaigns import Campaign
from storage.coupons import CouponCode
from storage.handoff import HandoffTicket
from tests.support import SandboxHarness, run_jobs
from tests.telegram_fake_api import TelegramHarness
from tests.test_inbox_web import add_staff, flagged, login


def harness(config, db, clock) -> SandboxHarness:
    h = SandboxHarness(config, db, clock)
    with db.transaction() as s:
        sync_definitions(s, h.runtime.config.coupons, clock.now())
    return h


async def test_help_lists_every_command_of_the_readers_role_with_one_line(config, sqlite_db, clock):
    h = harness(config, sqlite_db, clock)
    await h.say("c1", "/help")
    await h.say("manager", "/help")
    await h.say("c1", "/help", chat="group-1")
    await h.say("e1", "/help", locale="en")
    await h.deliver()
    customer = (await h.bot_messages("c1"))[0]
    manager = (await h.bot_messages("manager"))[0]
    member = (await h.bot_messages("group-1"))[0]
    for c in commands_for("customer"):
        assert f"/{c.name} — " in customer
    assert "/campaign" not in customer and "/whois" not in customer
    assert customer.count("\n/") + customer.startswith("/") == len(commands_for("customer"))
    for c in commands_for("manager"):
        assert f"/{c.name} — " in manager
    assert "/coupons — 我的券：查看可用优惠券和有效期" in customer
    assert "/redeem — 核销优惠券（/redeem 券码 消费金额）" in manager
    assert member.splitlines()[1:] == ["/help — 查看您可以使用的命令"]
    assert (
        "/coupons — My coupons: valid coupons and their expiry" in (await h.bot_messages("e1"))[0]
    )


async def test_telegram_command_menus_are_registered_per_scope_and_language(
    config, sqlite_db, clock
):
    async with TelegramHarness(config, sqlite_db, clock) as tg:
        calls = tg.api.called("setMyCommands")
    menus = {
        (c.params["scope"]["type"], c.params.get("language_code")): [
            x["command"] for x in c.params["commands"]
        ]
        for c in calls
    }
    assert menus[("all_private_chats", None)] == [c.name for c in commands_for("customer")]
    assert menus[("all_group_chats", None)] == ["help"]
    assert menus[("all_chat_administrators", "en")] == [c.name for c in commands_for("group_admin")]
    assert len(menus) == 6
    described = {x["command"]: x["description"] for x in calls[0].params["commands"]}
    assert described["coupons"] == "我的券：查看可用优惠券和有效期"
    assert all(3 <= len(x["description"]) <= 256 for c in calls for x in c.params["commands"])
    assert {c.name for c in COMMANDS} >= {"start", "help", "campaign", "redeem"}


async def test_greeting_and_my_coupons_with_expiry(config, sqlite_db, clock):
    h = harness(config, sqlite_db, clock)
    await h.say("c1", "hi", name="Ann", locale="en")
    await h.say("c1", "my coupons")
    await h.say("c2", "我的券", name="小周")
    await h.deliver()
    hello, none = await h.bot_messages("c1")
    assert hello.startswith("Hello, Ann! I'm the assistant") and "my coupons" in hello
    assert none.startswith("You have no valid coupons right now.")
    # a customer with a coupon sees it with its expiry in their own time
    await flagged(h, user="c2", text="我要投诉")
    add_staff(h.db, clock, "alice")
    alice, token = login(h, "alice")
    with h.db.sessions() as s:
        ticket_id = s.scalars(select(HandoffTicket.id)).one()
    alice.post(f"/inbox/c/{ticket_id}/claim", data={"csrf": token})
    alice.post(
        f"/inbox/c/{ticket_id}/coupon", data={"csrf": token, "nonce": "n", "coupon": "welcome_back"}
    )
    alice.post(f"/inbox/c/{ticket_id}/resolve", data={"csrf": token, "confirm": "yes"})
    await h.say("c2", "/coupons")
    await h.deliver()
    mine = (await h.bot_messages("c2"))[-1]
    with h.db.sessions() as s:
        code = format_code(s.scalars(select(CouponCode.code)).one())
    expires = (clock.now() + timedelta(days=14)).astimezone().strftime("%Y-%m-%d")
    assert mine.startswith("您的可用优惠券（1 张）：")
    assert f"· 回归礼 20 元：{code}，有效期至 " in mine and "满 99.00 元可用" in mine
    assert expires[:4] in mine


async def test_redeem_without_an_amount_asks_for_it_when_a_minimum_spend_applies(
    config, sqlite_db, clock
):
    h = harness(config, sqlite_db, clock)
    await h.say("c1", "我想吃早餐")
    await h.say(
        "manager",
        '/campaign new am segment="tag:早餐" template=morning_offer coupon=breakfast5 pilot=0 holdout=0',
    )
    await h.say("manager", "/campaign launch am")
    run_jobs(Services(h.db, h.runtime.config, h.runtime.renderer, clock))
    with h.db.sessions() as s:
        code = format_code(s.scalars(select(CouponCode.code)).one())
    await h.say("manager", f"/redeem {code}")
    await h.say("manager", f"/redeem {code} 10")
    await h.say("manager", f"/redeem {code} 25")
    await h.deliver()
    asked, low, ok = (await h.bot_messages("manager"))[-3:]
    assert (
        asked
        == f"「早餐立减 5 元」满 20.00 元可用，请带上消费金额：/redeem {code} 金额，例如 /redeem {code} 20.00"
    )
    assert low.startswith("未达到使用门槛")
    assert ok.startswith(f"核销成功：{code}")
    with h.db.sessions() as s:
        assert s.scalars(select(CouponCode.status)).one() == "redeemed"


async def test_a_coupons_total_stock_is_enforced_with_a_reason(config, sqlite_db, clock):
    limited = CouponDef("vip_gift", "VIP 礼券", amount=30.0, valid_days=7, total_stock=2)
    config = config.replace(
        coupons=replace(config.coupons, definitions=[*config.coupons.definitions, limited])
    )
    h = harness(config, sqlite_db, clock)
    add_staff(h.db, clock, "alice")
    alice, token = login(h, "alice")
    flashes = []
    for user_id in ("c1", "c2", "c3"):
        ticket_id = await flagged(h, user=user_id, text="我要投诉")
        page = f"/inbox/c/{ticket_id}"
        alice.post(f"{page}/claim", data={"csrf": token})
        alice.post(f"{page}/coupon", data={"csrf": token, "nonce": user_id, "coupon": "vip_gift"})
        flashes.append(re.search(r'id="flash">([^<]*)<', alice.get(page).text).group(1))
    # sandbox personas get visibly demo codes (DEMO-STAFF-…); real customers STAFF-…
    assert all(re.match(r"已发券 (DEMO-)?STAFF-", f) for f in flashes[:2]), flashes
    assert flashes[2] == "「VIP 礼券」已发完（总量 2 张），无法再发放"
    with h.db.sessions() as s:
        assert len(s.scalars(select(CouponCode)).all()) == 2
    # a campaign past the stock drops the rest with the reason coupon_unavailable
    for user_id in ("d1", "d2", "d3"):
        await h.say(user_id, "我想吃早餐")
    await h.say(
        "manager",
        '/campaign new gift segment="tag:早餐" text="送您 {{ coupon.code }}" coupon=vip_gift pilot=0 holdout=0',
    )
    await h.say("manager", "/campaign launch gift")
    run_jobs(Services(h.db, h.runtime.config, h.runtime.renderer, clock))
    await h.say("manager", "/campaign stats gift")
    await h.deliver()
    stats = (await h.bot_messages("manager"))[-1]
    assert "未发原因：券已发完 3" in stats


async def test_campaign_stats_in_a_group_answer_the_manager_privately(config, sqlite_db, clock):
    h = harness(config, sqlite_db, clock)
    await h.say("c1", "我想吃早餐")
    await h.say(
        "manager", '/campaign new am segment="tag:早餐" template=morning_offer pilot=0 holdout=0'
    )
    await h.say("manager", "/campaign stats am", chat="group-1")
    await h.say("manager", "/campaign", chat="group-1")  # usage: no data, stays in the group
    await h.deliver()
    notice, usage = await h.bot_messages("group-1")
    assert notice.startswith("🔒 /campaign 的结果含个人或经营数据，已私信发给您")
    assert usage.startswith("用法：")
    assert (await h.bot_messages("manager"))[-1].startswith("📊 活动「am」（草稿）")


async def test_campaign_safety_typos_empty_audiences_preview_list_and_verdict(
    config, sqlite_db, clock
):
    config = config.replace(campaigns=replace(config.campaigns, min_pilot_size=1))
    h = harness(config, sqlite_db, clock)
    await h.say("c1", "周末去哪玩")  # 周末出游
    await h.say("c2", "周末去哪玩")
    await h.say("c2", "退订")  # opted out: not in the preview
    await h.say("manager", '/campaign new wk segment="tag:周末出" template=weekend_trip')
    await h.say("manager", '/campaign new nobody segment="city:火星" template=weekend_trip')
    await h.say("manager", "/campaign launch nobody")
    await h.say(
        "manager",
        '/campaign new wk segment="tag:周末出游" template=weekend_trip coupon=birthday20 pilot=50% holdout=0 hours=1',
    )
    await h.say("manager", "/campaign preview wk")
    await h.say("manager", "/campaign list")
    await h.say("manager", "/campaign pilot wk")
    await h.deliver()
    said = await h.bot_messages("manager")
    assert said[0] == "活动操作失败：没有客户带过标签「周末出」。您是不是想找：周末出游？"
    assert said[2] == (
        "活动操作失败：活动「nobody」当前可发送人数为 0（人群为空，或都已退订/达到频控），不能试点或发送"
    )
    preview = said[4]
    assert "人群 2 人，可发送（已排除退订和频控）1 人" in preview
    assert preview.count("\n— ") == 1 and "c2" not in preview
    assert re.search(r"[0-9A-Z]{4}-[0-9A-Z]{4}-[0-9A-Z]{4}", preview)
    assert "SAMP-LE23-4567" not in preview
    assert said[5].splitlines()[0] == "活动列表（最近 2 个）："
    assert "· wk — 草稿，人群 tag:周末出游，已覆盖 0 人" in said[5]
    with h.db.sessions() as s:
        assert s.scalars(select(Campaign.status).where(Campaign.name == "nobody")).one() == "draft"
    services = Services(h.db, h.runtime.config, h.runtime.renderer, clock)
    run_jobs(services)
    clock.advance(timedelta(hours=2))
    with h.db.sessions() as s:
        cid = s.scalars(select(Campaign.id).where(Campaign.name == "wk")).one()
    evaluate(services, cid)
    await h.deliver()
    verdict = (await h.bot_messages("manager"))[-1]
    assert verdict.startswith("⛔ 活动「wk」试点未通过，已停止。")
    assert "原因：试点转化率 0.0% 未比对照组 0.0% 高出" in verdict
    assert "试点 1 人：购买 0，退订 0，拉黑 0；对照组 0 人：购买 0。" in verdict


@pytest.mark.parametrize("locale", ["en"])
async def test_a_managers_campaign_errors_are_in_their_language(config, sqlite_db, clock, locale):
    h = harness(config, sqlite_db, clock)
    await h.say("c1", "周末去哪玩")
    await h.say(
        "manager", '/campaign new wk segment="tag:周末出" template=weekend_trip', locale=locale
    )
    await h.deliver()
    assert (await h.bot_messages("manager"))[0] == (
        "Campaign action failed: no customer has ever had the tag '周末出'. Did you mean 周末出游?"
    )


async def test_segment_typos_are_explained_in_the_managers_language(config, sqlite_db, clock):
    h = harness(config, sqlite_db, clock)
    await h.say("manager", "/segment tga:母婴")
    await h.say("manager", "/profile birthday 1990-13-01 @c9")
    await h.say("c9", "hello", locale="en")
    await h.say("manager", "/profile birthday 1990-13-01 @c9")
    await h.deliver()
    said = await h.bot_messages("manager")
    assert said[0].startswith("操作未完成：第 0 个字符处：没有“tga”这个条件，您是不是想写 tag？")
    assert "\n  tga:母婴\n  ^" in said[0]
    assert said[-1] == "操作未完成：生日“1990-13-01”不是真实存在的日期"


async def test_campaign_definition_mistakes_are_explained_in_the_managers_language(
    config, sqlite_db, clock
):
    h = harness(config, sqlite_db, clock)
    await h.say("manager", '/campaign new wk segmnt="tag:早餐" text=hi')
    await h.say("manager", "/campaign new wk text=hi")
    await h.deliver()
    typo, missing = await h.bot_messages("manager")
    assert typo.startswith("活动操作失败：没有“segmnt”这个设置，您是不是想写 segment=？")
    assert (
        missing
        == '活动操作失败：请给出人群 segment=，例如 segment="tag:早餐"（所有人：opt_out:no）'
    )
