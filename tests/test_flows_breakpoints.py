"""Flows through the sandbox channel: breakpoints survive restarts and silence."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from bot.conversations.followups import send_due_followups
from storage.followups import FollowUp
from storage.models import Conversation
from tests.support import SandboxHarness

DEST_QIANDAO = "flow:weekend_trip_inquiry:destination:qiandao"


async def press(h: SandboxHarness, user: str, data: str):
    return await h.sandbox.receive({"user_id": user, "button_data": data})


def conversation(db, user: str) -> Conversation:
    with db.sessions() as s:
        return s.scalars(select(Conversation).where(Conversation.user_id == user)).one()


async def start_and_stop_at_dates(h: SandboxHarness, user: str = "u1") -> None:
    await h.say(user, "周末去哪玩呀", name="小王")
    await press(h, user, DEST_QIANDAO)
    await h.deliver()


async def test_flow_asks_each_step_and_offers_a_coupon(config, db, clock):
    h = SandboxHarness(config, db, clock)
    await h.say("u1", "周末去哪玩呀")
    await h.deliver()
    first = (await h.sandbox.transcript("u1"))[-1]
    assert "想去哪儿过周末" in first["text"]
    assert {"label": "千岛湖", "data": DEST_QIANDAO} in first["buttons"]
    await press(h, "u1", DEST_QIANDAO)
    await h.say("u1", "本周六")
    await h.say("u1", "我们两个人")
    await h.deliver()
    said = await h.bot_messages("u1")
    assert "千岛湖，好选择" in said[1]
    assert "几位一起出行" in said[2]
    assert "千岛湖，本周六，2人" in said[3] and "WKND-" in said[3]
    conv = conversation(db, "u1")
    assert (conv.flow, conv.step) == ("weekend_trip_inquiry", "offer")
    assert conv.state["flow"]["answers"] == {
        "destination": "qiandao",
        "dates": "本周六",
        "party_size": 2,
    }
    assert "WKND-" in conv.state["flow"]["offer"]["code"]  # DEMO-WKND-...: a sandbox persona
    assert conv.last_bot_message == said[3]


async def test_branch_on_party_size_gives_the_group_offer(config, db, clock):
    h = SandboxHarness(config, db, clock)
    await start_and_stop_at_dates(h)
    await h.say("u1", "3/14")
    await h.say("u1", "8")
    await h.deliver()
    assert "团队游9折券" in (await h.bot_messages("u1"))[-1]
    assert conversation(db, "u1").step == "group_offer"


async def test_bad_answers_reask_without_losing_state(config, db, clock):
    h = SandboxHarness(config, db, clock)
    await start_and_stop_at_dates(h)
    await h.say("u1", "随便吧")
    await h.deliver()
    assert "没看懂日期" in (await h.bot_messages("u1"))[-1]
    conv = conversation(db, "u1")
    assert conv.step == "dates"
    assert conv.state["flow"]["answers"] == {"destination": "qiandao"}
    await h.say("u1", "下周六")
    await h.say("u1", "100")  # out of range 1-30
    await h.deliver()
    said = await h.bot_messages("u1")
    assert "1–30" in said[-1]
    conv = conversation(db, "u1")
    assert conv.step == "party_size"
    assert conv.state["flow"]["answers"] == {"destination": "qiandao", "dates": "下周六"}


async def test_interrupted_flow_resumes_after_restart_by_followup(config, db, clock):
    h = SandboxHarness(config, db, clock)
    await start_and_stop_at_dates(h)
    del h  # the process stops; nothing of the flow is in memory

    clock.advance(timedelta(days=2))
    restarted = SandboxHarness(config, db, clock)
    outcome = send_due_followups(db, config, clock)
    assert outcome["sent"] == 1
    await restarted.deliver()
    followup = (await restarted.sandbox.transcript("u1"))[-1]
    assert "上次您选了千岛湖，还差出行日期～" in followup["text"]
    assert "打算哪天出发" in followup["text"]
    assert send_due_followups(db, config, clock)["sent"] == 0  # once only

    await restarted.say("u1", "本周六")
    await restarted.deliver()
    assert "几位一起出行" in (await restarted.bot_messages("u1"))[-1]
    assert conversation(db, "u1").step == "party_size"


async def test_interrupted_flow_resumes_from_the_customers_own_message(config, db, clock):
    h = SandboxHarness(config, db, clock)
    await start_and_stop_at_dates(h)
    clock.advance(timedelta(days=2))
    restarted = SandboxHarness(config, db, clock)
    await restarted.say("u1", "在吗？")
    await restarted.deliver()
    said = await restarted.bot_messages("u1")
    assert "上次您选了千岛湖，还差出行日期～" in said[-1]
    with db.sessions() as s:
        statuses = {f.reason for f in s.scalars(select(FollowUp))}
    assert "customer_returned" in statuses
    assert send_due_followups(db, config, clock)["sent"] == 0  # returning cancelled it

    await restarted.say("u1", "3月14日")
    await restarted.say("u1", "2")
    await restarted.deliver()
    assert "WKND-" in (await restarted.bot_messages("u1"))[-1]


async def test_the_trigger_again_resumes_instead_of_restarting(config, db, clock):
    h = SandboxHarness(config, db, clock)
    await start_and_stop_at_dates(h)
    await h.say("u1", "周末去哪玩")
    await h.deliver()
    assert "上次您选了千岛湖，还差出行日期～" in (await h.bot_messages("u1"))[-1]
    assert conversation(db, "u1").state["flow"]["answers"] == {"destination": "qiandao"}


async def test_english_customer_gets_english_flow(config, db, clock):
    h = SandboxHarness(config, db, clock)
    await h.say("u2", "any weekend trip ideas?", locale="en")
    await press(h, "u2", "flow:weekend_trip_inquiry:destination:wuzhen")
    await h.deliver()
    said = await h.bot_messages("u2")
    assert "Where would you like" in said[0]
    assert "Wuzhen, good choice" in said[1]
