"""Scheduled group posts (SOP) against the Telegram fake over HTTP, the WeCom fake and the
sandbox: posted once per group at its time, the group limit, pause, WeCom confirmation,
Official Accounts refused, coupon buttons and link clicks counted per group."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest
from sqlalchemy import func, select

from bot.app.services import Services
from bot.groups import sop
from bot.groups.errors import GroupsError
from storage.groups import GroupPost, SopRun
from storage.models import OutboxMessage
from tests.support import SandboxHarness
from tests.telegram_fake_api import TelegramHarness, group_chat, message, private_chat, user
from tests.test_telegram_limits import max_in_window

pytestmark = pytest.mark.filterwarnings("ignore::telegram.warnings.PTBDeprecationWarning")

MANAGER = 7001
G1, G2, OTHER = -1001111, -1002222, -1003333


def services(h) -> Services:
    rt = h.runtime
    return Services(h.db, rt.config, rt.renderer, rt.clock)


@pytest.fixture
async def tg(config, sqlite_db, clock):
    async with TelegramHarness(
        config, sqlite_db, clock, managers=[f"telegram:{MANAGER}"]
    ) as harness:
        yield harness


async def manager_says(tg, text: str) -> None:
    await tg.push(message(private_chat(MANAGER), user(MANAGER, "店长"), text))


async def known_groups(tg) -> None:
    for chat, title in ((G1, "会员一群"), (G2, "会员二群"), (OTHER, "员工群")):
        await tg.push(
            message(group_chat(chat, title), user(5000 + abs(chat) % 10, "Amy"), "大家好")
        )


async def test_a_plan_posts_to_its_groups_once_at_its_time(tg, clock):
    await known_groups(tg)
    await manager_says(tg, "/sop add morning daily 09:30 to=title:会员* | 早上好，{{ group }}！")
    await tg.deliver()
    assert tg.api.texts(MANAGER) == ["已创建群发计划「morning」：daily 09:30，当前匹配 2 个群。"]

    assert sop.run_due(services(tg)) == {}  # 09:00 in Shanghai: not yet
    clock.advance(timedelta(minutes=31))
    assert sop.run_due(services(tg)) == {"morning": 2}
    assert sop.run_due(services(tg)) == {}  # the same slot again: nothing
    await tg.deliver()
    assert tg.api.texts(G1) == ["早上好，会员一群！"]
    assert tg.api.texts(G2) == ["早上好，会员二群！"]
    assert tg.api.texts(OTHER) == []

    clock.advance(timedelta(days=1))  # the next morning, restarted or not: once more
    assert sop.run_due(services(tg)) == {"morning": 2}
    await tg.deliver()
    assert len(tg.api.texts(G1)) == 2

    await manager_says(tg, "/sop show morning")
    await tg.deliver()
    report = tg.api.texts(MANAGER)[-1]
    assert "会员一群：2 条（sent 2），按钮点击 0，链接点击 0" in report


async def test_a_paused_plan_posts_nothing_and_resumes_at_its_next_slot(tg, clock):
    await known_groups(tg)
    await manager_says(tg, "/sop add flash daily 09:30 to=all | 今晚秒杀")
    await manager_says(tg, "/sop pause flash")
    clock.advance(timedelta(minutes=31))
    assert sop.run_due(services(tg)) == {}
    await manager_says(tg, "/sop resume flash")
    assert sop.run_due(services(tg)) == {}  # the slot that fell in the pause is not caught up
    clock.advance(timedelta(days=1))
    assert sop.run_due(services(tg)) == {"flash": 3}
    await tg.deliver()
    assert tg.api.texts(MANAGER)[-2:] == [
        "已暂停群发计划「flash」。",
        "已恢复群发计划「flash」，从下一个时间点开始发送。",
    ]


async def test_a_slot_found_too_late_is_recorded_missed_not_posted(tg, clock):
    await known_groups(tg)
    await manager_says(tg, "/sop add morning daily 09:30 to=all | 早上好")
    clock.advance(timedelta(hours=3))  # the process was down from 09:00 to 12:00
    assert sop.run_due(services(tg)) == {}
    with tg.db.sessions() as s:
        (run,) = s.scalars(select(SopRun)).all()
        assert run.status == "missed"
        assert s.scalar(select(func.count()).select_from(OutboxMessage).where(OutboxMessage.purpose == "group_post")) == 0  # fmt: skip


async def test_group_limit_holds_for_many_posts_to_one_group(tg, clock):
    await tg.push(message(group_chat(G1, "会员一群"), user(5001, "Amy"), "hi"))
    for n in range(30):
        await manager_says(tg, f"/sop add p{n} daily 09:30 to=telegram:{G1} | 第 {n} 条")
    await tg.deliver()
    clock.advance(timedelta(minutes=31))
    assert len(sop.run_due(services(tg))) == 30
    assert await tg.deliver() == 30
    sent = tg.api.sent(G1)
    assert len(sent) == 30
    assert max_in_window([c.at for c in sent], 60.0) <= 20


async def test_plans_for_official_accounts_are_refused(tg):
    await manager_says(tg, "/sop add oa daily 09:30 channel=wechat to=all | hi")
    await manager_says(tg, "/sop add oa2 daily 09:30 to=wechat:gh_123 | hi")
    await tg.deliver()
    refusal = "公众号没有群：群发计划只能发到 Telegram 群、企业微信客户群或沙盒群。"
    assert tg.api.texts(MANAGER) == [refusal, refusal]
    with pytest.raises(GroupsError) as err:
        sop.parse_plan("oa daily 09:30 channel=wechat to=all | hi", tg.runtime.renderer)
    assert err.value.text("en").startswith("Official Accounts have no groups")


async def test_bad_definitions_say_what_is_wrong(tg):
    for line in (
        "/sop add x someday 09:30 to=all | hi",
        "/sop add x daily 25:00 to=all | hi",
        "/sop add x daily 09:30 | hi",
        "/sop add x daily 09:30 to=all",
        "/sop add x daily 09:30 to=all coupon=nope | hi",
        "/sop add x daily 09:30 to=all | {{ nope }}",
    ):
        await manager_says(tg, line)
    await tg.deliver()
    texts = tg.api.texts(MANAGER)
    assert texts[0].startswith("不认识的日期「someday」")
    assert texts[1].startswith("时间「25:00」无效")
    assert texts[2].startswith("请用 to= 指定群")
    assert texts[3].startswith("请给出正文")
    assert texts[4] == "没有名为「nope」的优惠券。"
    assert texts[5].startswith("正文无法渲染")
    with tg.db.sessions() as s:
        assert sop.list_plans(s) == []


async def test_sop_commands_are_for_managers_only(tg):
    await tg.push(message(private_chat(4242), user(4242, "Eve"), "/sop add x daily 09:30 to=all | hi"))  # fmt: skip
    await tg.deliver()
    assert tg.api.texts(4242) == ["抱歉，/sop 仅限经理使用。"]
    with tg.db.sessions() as s:
        assert sop.list_plans(s) == []


async def test_coupon_button_and_link_clicks_are_counted_per_group(config, sqlite_db, clock):
    from dataclasses import replace

    from bot.app.config import CouponDef
    from tests.support import LiveServer

    coupons = replace(
        config.coupons,
        definitions=[
            *config.coupons.definitions,
            CouponDef("flash10", "秒杀立减10元", amount=10.0),
        ],
    )
    cfg = config.replace(coupons=coupons)
    h = SandboxHarness(cfg, sqlite_db, clock)
    with sqlite_db.transaction() as s:
        from bot.marketing.coupons import sync_definitions

        sync_definitions(s, cfg.coupons, clock.now())
    await h.say("alice", "大家好", chat="group-1", name="Alice")
    await h.say(
        "manager",
        "/sop add flash daily 09:30 to=sandbox:group-1 coupon=flash10 link=https://shop.example/flash | 今晚秒杀 {{ link }}",
    )
    clock.advance(timedelta(minutes=31))
    assert sop.run_due(services(h)) == {"flash": 1}
    await h.deliver()
    (post,) = [m for m in await h.sandbox.transcript("group-1") if m["direction"] == "out"]
    assert post["text"].startswith("今晚秒杀 http://127.0.0.1:8080/g/")
    (button,) = post["buttons"]
    assert button["label"] == "领取优惠券"

    await h.sandbox.receive(
        {
            "user_id": "alice",
            "chat_id": "group-1",
            "button_data": button["data"],
            "display_name": "Alice",
        }
    )
    await h.deliver()
    (coupon_message,) = await h.bot_messages("alice")
    assert coupon_message.startswith("这是你在群里领取的优惠券（flash）：")

    token = post["text"].rsplit("/g/", 1)[1]
    with LiveServer(h.app) as server:
        async with httpx.AsyncClient() as client:
            r = await client.get(f"{server.url}/g/{token}")
            bad = await client.get(f"{server.url}/g/{'x' * 22}")
    assert r.status_code == 302 and r.headers["location"] == "https://shop.example/flash"
    assert bad.status_code == 404
    with sqlite_db.sessions() as s:
        (row,) = s.scalars(select(GroupPost)).all()
        assert (row.button_clicks, row.link_clicks) == (1, 1)


async def test_a_template_plan_posts_in_the_brands_locale_with_group_and_date(
    config, sqlite_db, clock
):
    h = SandboxHarness(config, sqlite_db, clock)
    await h.say("alice", "早", chat="group-1", name="Alice")
    await h.say("manager", "/sop add am weekdays 09:30 to=sandbox:group-1 template=sop_morning")
    clock.advance(timedelta(minutes=31))
    assert sop.run_due(services(h)) == {"am": 1}
    await h.deliver()
    assert await h.bot_messages("group-1") == [
        "早上好，「Siyu 体验群」的朋友们 ☀️ 今天是 2026-03-06，今日好物和早餐优惠已经上新。"
    ]


async def test_a_catch_up_posts_only_the_newest_due_slot(tg, clock):
    await known_groups(tg)
    await manager_says(tg, "/sop add often cron */10 * * * * to=telegram:-1001111 | 快讯")
    clock.advance(timedelta(minutes=25))  # 09:10 and 09:20 are due at once
    assert sop.run_due(services(tg)) == {"often": 1}
    await tg.deliver()
    assert tg.api.texts(G1) == ["快讯"]
    with tg.db.sessions() as s:
        runs = {r.slot_at.minute: r.status for r in s.scalars(select(SopRun))}
    assert runs == {10: "missed", 20: "posted"}
