"""Managers' group commands, on Telegram (replies, admins) and in the sandbox (managers)."""

from __future__ import annotations

import pytest

from tests.fakes.telegram import TelegramHarness, group_chat, message, user
from tests.support import SandboxHarness

pytestmark = pytest.mark.filterwarnings("ignore::telegram.warnings.PTBDeprecationWarning")

GROUP = -1005555
ADMIN = 8001
CAROL = 8002
DAVE = 8003


@pytest.fixture
async def tg(config, sqlite_db, clock):
    async with TelegramHarness(config, sqlite_db, clock) as harness:
        harness.api.admins[GROUP] = [ADMIN]
        yield harness


def said(sender: dict, text: str, reply_to: dict | None = None) -> dict:
    return message(group_chat(GROUP), sender, text, reply_to=reply_to)


async def test_tag_whois_untag_as_replies(tg):
    carol = user(CAROL, "Carol")
    first = said(carol, "宝宝辅食推荐一下")
    original = first["message"]
    await tg.push(first)
    admin = user(ADMIN, "Boss")
    await tg.push(said(admin, "/tag 高意向", reply_to=original))
    await tg.push(said(admin, "/whois", reply_to=original))
    await tg.push(said(admin, "/untag 母婴", reply_to=original))
    await tg.deliver()
    tagged, whois, untagged = tg.api.texts(GROUP)
    assert tagged == "已为 Carol 打上标签「高意向」。"
    # the profile goes to the admin's private chat; the group only reads a notice
    assert whois.startswith("🔒 /whois 的结果含个人或经营数据，已私信发给您")
    (private,) = tg.api.texts(ADMIN)
    assert "标签：母婴、高意向" in private and "最近活跃：" in private
    assert untagged == "已移除 Carol 的标签「母婴」。"
    assert [t["tag"] for t in tg.profile(CAROL)["tags"]] == ["高意向"]
    assert tg.profile(CAROL)["tags"][0]["source"] == f"manager:telegram:{ADMIN}"


async def test_tag_by_a_non_admin_is_refused_and_changes_nothing(tg):
    carol = user(CAROL, "Carol")
    original = said(carol, "你好")
    await tg.push(original)
    await tg.push(said(user(DAVE, "Dave"), "/tag 黑名单", reply_to=original["message"]))
    await tg.deliver()
    assert tg.api.texts(GROUP) == ["抱歉，/tag 仅限本群管理员和经理在群内使用。"]
    assert tg.profile(CAROL)["tags"] == []


async def test_whois_without_a_reply_explains_how(tg):
    await tg.push(said(user(ADMIN, "Boss"), "/whois"))
    await tg.deliver()
    assert "请回复某位成员的消息" in tg.api.texts(GROUP)[0]


async def test_stats_counts_members_messages_and_tags(tg):
    for uid, text in ((CAROL, "周末去哪玩"), (CAROL, "早餐有啥"), (DAVE, "周末出游团")):
        await tg.push(said(user(uid, f"U{uid}"), text))
    await tg.push(said(user(ADMIN, "Boss"), "/stats"))
    await tg.deliver()
    (report,) = tg.api.texts(GROUP)
    assert "成员：3 人" in report
    assert "消息 3 条" in report
    assert "1. U8002（2 条）" in report
    assert "周末出游（2 人）" in report


async def test_manager_commands_work_in_the_sandbox_for_configured_managers(
    config, sqlite_db, clock
):
    h = SandboxHarness(config, sqlite_db, clock)
    await h.say("alice", "我家宝宝一岁了", chat="group-1", name="Alice")
    await h.say("manager", "/tag VIP @alice", chat="group-1", name="店长")
    await h.say("manager", "/announce 本周六会员日", chat="group-1", name="店长")
    await h.say("alice", "/announce 我也要发", chat="group-1", name="Alice")
    await h.deliver()
    messages = await h.bot_messages("group-1")
    assert messages == [
        "已为 Alice 打上标签「VIP」。",
        "本周六会员日",
        "抱歉，/announce 仅限本群管理员和经理在群内使用。",
    ]


async def test_whois_shows_the_members_tier_from_their_orders(tg, sqlite_db, clock):
    from datetime import timedelta

    from bot.customers.orders import OrderInput, store_orders
    from bot.customers.rfm import recompute_scores

    carol = user(CAROL, "Carol")
    first = said(carol, "你好")
    await tg.push(first)
    order = OrderInput(
        order_id="o-9",
        identity=("telegram", str(CAROL)),
        phone=None,
        amount_cents=150_000,
        currency="CNY",
        ordered_at=clock.now() - timedelta(days=1),
        items=(),
    )
    with sqlite_db.transaction() as s:
        assert store_orders(s, [(1, order)], source="test", now=clock.now()).inserted == 1
        recompute_scores(s, tg.app.runtime.config, clock.now())
    await tg.push(said(user(ADMIN, "Boss"), "/whois", reply_to=first["message"]))
    await tg.deliver()
    assert "等级：银卡" in tg.api.texts(ADMIN)[-1]  # privately, not in the group
