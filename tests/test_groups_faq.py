"""FAQ answers against the Telegram fake over HTTP (and the sandbox): mention rules and the
cool-down in a group, the cool-down in 1:1, locales, hits, and unanswered 1:1 questions
still going to staff."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from storage.groups import FaqEntry
from storage.models import Conversation
from tests.support import SandboxHarness
from tests.telegram_fake_api import (
    BOT_USERNAME,
    TelegramHarness,
    group_chat,
    message,
    private_chat,
    user,
)

pytestmark = pytest.mark.filterwarnings("ignore::telegram.warnings.PTBDeprecationWarning")

MANAGER = 7001
GROUP = -1004444
AMY, BEN = 6001, 6002
RETURNS = (
    "/faq add 怎么退货 keywords=退货,退换,return cooldown=600 "
    "| 收到商品 7 天内可在订单页申请退货。 || Returns: within 7 days, from the order page."
)


@pytest.fixture
async def tg(config, sqlite_db, clock):
    async with TelegramHarness(
        config, sqlite_db, clock, managers=[f"telegram:{MANAGER}"]
    ) as harness:
        yield harness


async def manager_says(tg, text: str) -> None:
    await tg.push(message(private_chat(MANAGER), user(MANAGER, "店长"), text))


async def in_group(tg, uid: int, text: str, lang: str = "zh-hans") -> None:
    await tg.push(message(group_chat(GROUP), user(uid, f"U{uid}", lang), text))


def hits(tg) -> list[int]:
    with tg.db.sessions() as s:
        return [e.hits for e in s.scalars(select(FaqEntry).order_by(FaqEntry.id))]


async def test_in_a_group_the_bot_answers_when_mentioned_and_keeps_a_cool_down(tg, clock):
    await manager_says(tg, RETURNS)
    await tg.deliver()
    assert tg.api.texts(MANAGER) == ["已添加常见问题 #1：怎么退货"]

    await in_group(tg, AMY, "请问怎么退货呀")  # not mentioned: the default rule says no
    await in_group(tg, AMY, f"@{BOT_USERNAME} 请问怎么退货呀")
    await in_group(tg, BEN, f"@{BOT_USERNAME} 退换流程是什么")  # inside the cool-down
    await tg.deliver()
    assert tg.api.texts(GROUP) == ["收到商品 7 天内可在订单页申请退货。"]

    clock.advance(timedelta(seconds=601))
    await in_group(tg, 6003, f"@{BOT_USERNAME} return policy?", lang="en")
    await tg.deliver()
    assert tg.api.texts(GROUP)[-1] == "Returns: within 7 days, from the order page."
    assert hits(tg) == [3]  # asked three times where the rule allows (answered twice)


async def test_groups_always_answers_without_a_mention(tg):
    await manager_says(tg, "/faq add 几点发货 keywords=发货,发货时间 groups=always | 每天 16:00 前下单当天发货。")  # fmt: skip
    await in_group(tg, AMY, "今天几点发货？")
    await tg.deliver()
    assert tg.api.texts(GROUP) == ["每天 16:00 前下单当天发货。"]


async def test_in_one_to_one_the_cool_down_points_to_the_answer_given(tg):
    await manager_says(tg, RETURNS)
    await tg.push(message(private_chat(AMY), user(AMY, "Amy"), "怎么退货"))
    await tg.push(message(private_chat(AMY), user(AMY, "Amy"), "退货怎么弄"))
    await tg.deliver()
    assert tg.api.texts(AMY) == [
        "收到商品 7 天内可在订单页申请退货。",
        "「怎么退货」刚刚已经回答过，请看上面的消息；还需要帮助可以回复「人工」。",
    ]
    with tg.db.sessions() as s:
        conv = s.scalars(select(Conversation).where(Conversation.user_id == str(AMY))).one()
        assert conv.handoff_status == "bot"


async def test_unanswered_questions_in_one_to_one_still_go_to_staff(tg):
    await manager_says(tg, RETURNS)
    await tg.push(message(private_chat(BEN), user(BEN, "Ben"), "你们的会员积分怎么算"))
    await tg.push(message(private_chat(BEN), user(BEN, "Ben"), "积分规则到底是什么"))
    await tg.deliver()
    with tg.db.sessions() as s:
        conv = s.scalars(select(Conversation).where(Conversation.user_id == str(BEN))).one()
        assert conv.handoff_status == "waiting"
    assert hits(tg) == [0]


async def test_an_entry_for_private_chats_stays_silent_in_groups(tg):
    await manager_says(tg, "/faq add 会员价 where=private groups=always | 会员价请私聊查看。")
    await in_group(tg, AMY, "会员价多少")
    await tg.push(message(private_chat(AMY), user(AMY, "Amy"), "会员价多少"))
    await tg.deliver()
    assert tg.api.texts(GROUP) == []
    assert tg.api.texts(AMY) == ["会员价请私聊查看。"]


async def test_faq_commands_are_for_managers_and_listed_with_hits(tg):
    await tg.push(message(private_chat(AMY), user(AMY, "Amy"), RETURNS))
    await manager_says(tg, RETURNS)
    await manager_says(tg, "/faq add 坏的 cooldown=-5 | x")
    await tg.push(message(private_chat(AMY), user(AMY, "Amy"), "怎么退货"))
    await manager_says(tg, "/faq list")
    await manager_says(tg, "/faq del 1")
    await manager_says(tg, "/faq del 1")
    await tg.deliver()
    assert tg.api.texts(AMY)[0] == "抱歉，/faq 仅限经理使用。"
    _added, bad, listing, deleted, again = tg.api.texts(MANAGER)
    assert bad == "cooldown= 需是 0 到 604800 之间的秒数。"
    assert "#1 怎么退货（关键词：退货, 退换, return；范围：everywhere；群内：mention；冷却 600 秒；命中 1 次）" in listing  # fmt: skip
    assert deleted == "已删除常见问题 #1：怎么退货"
    assert again == "没有编号为 #1 的常见问题。"


async def test_sandbox_group_answers_when_mentioned(config, sqlite_db, clock):
    h = SandboxHarness(config, sqlite_db, clock)
    await h.say("manager", "/faq add 营业时间 keywords=营业,几点开门 | 每天 10:00–22:00 营业。")
    await h.say("alice", "几点开门？", chat="group-1", name="Alice")
    await h.say("alice", "@siyu 几点开门？", chat="group-1", name="Alice")
    await h.deliver()
    assert await h.bot_messages("group-1") == ["每天 10:00–22:00 营业。"]
