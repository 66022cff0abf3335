"""Free text nothing answers: the bot says so, and twice in a row flags for staff."""

from __future__ import annotations

from sqlalchemy import select

from storage import repos
from storage.handoff import HandoffTicket
from storage.models import Conversation
from tests.support import SandboxHarness

NOT_UNDERSTOOD = "我没太明白您的意思。发送 /help"


def tickets(db) -> list[HandoffTicket]:
    with db.sessions() as s:
        return list(s.scalars(select(HandoffTicket)))


def handoff_status(db, user: str) -> str:
    with db.sessions() as s:
        return (
            s.scalars(select(Conversation).where(Conversation.user_id == user)).one().handoff_status
        )


async def test_two_misses_in_a_row_flag_the_conversation(config, db, clock):
    h = SandboxHarness(config, db, clock)
    first = await h.say("u1", "嗯嗯那个东西呢")
    await h.deliver()
    said = await h.bot_messages("u1")
    assert first.handlers[-1] == "not_understood"
    assert NOT_UNDERSTOOD in said[-1] and "/human" in said[-1]
    assert tickets(db) == []

    await h.say("u1", "就是上次那个")
    await h.deliver()
    said = await h.bot_messages("u1")
    assert "已为您转接人工客服" in said[-1] and "没太明白" in said[-1]
    [ticket] = tickets(db)
    assert (ticket.reason, ticket.status) == ("misunderstood", "waiting")
    assert handoff_status(db, "u1") == "waiting"

    before = len(said)  # staff own it now: the bot stays silent
    await h.say("u1", "还是不明白吗")
    await h.deliver()
    assert len(await h.bot_messages("u1")) == before


async def test_an_answered_message_between_two_misses_resets_the_count(config, db, clock):
    h = SandboxHarness(config, db, clock)
    await h.say("u1", "嗯嗯那个东西呢")
    await h.say("u1", "/help")
    await h.say("u1", "就是上次那个")
    await h.deliver()
    said = await h.bot_messages("u1")
    assert [NOT_UNDERSTOOD in s for s in said] == [True, False, True]
    assert tickets(db) == []
    await h.say("u1", "还是不明白吗")  # now two in a row
    await h.deliver()
    assert [t.reason for t in tickets(db)] == ["misunderstood"]


async def test_a_message_that_was_only_tagged_still_counts_as_not_understood(config, db, clock):
    h = SandboxHarness(config, db, clock)
    result = await h.say("u1", "早餐几点有")  # tagging rule 早餐; nothing answers
    assert "keyword_tagging" in result.handlers and result.handlers[-1] == "not_understood"
    with db.sessions() as s:
        customer = s.scalars(select(Conversation).where(Conversation.user_id == "u1")).one()
        assert "早餐" in {t.tag.name for t in repos.tags_of(s, customer.customer_id, clock.now())}
    await h.say("u1", "早饭呢")
    assert [t.reason for t in tickets(db)] == ["misunderstood"]


async def test_the_fallback_shadows_no_other_answer(config, db, clock):
    h = SandboxHarness(config, db, clock)
    flow = await h.say("u1", "周末去哪玩")
    assert "flow_start" in flow.handlers and "not_understood" not in flow.handlers
    answer = await h.say("u1", "随便吧")  # a bad answer inside the flow is the flow's re-ask
    assert "flow_answer" in answer.handlers and "not_understood" not in answer.handlers
    consent = await h.say("u2", "退订")
    assert consent.handlers[-1] == "consent" and "not_understood" not in consent.handlers
    command = await h.say("u2", "/nosuchcommand")
    assert command.handlers[-1] == "unknown_command"
    staff = await h.say("u3", "我要投诉")
    assert staff.handlers[-1] == "flag_for_staff"
    group = await h.say("u4", "大家好", chat="group-1")
    assert "not_understood" not in group.handlers


async def test_a_manager_gets_the_hint_but_is_never_queued_for_staff(config, db, clock):
    from dataclasses import replace

    config = config.replace(roles=replace(config.roles, managers=["sandbox:boss"]))
    h = SandboxHarness(config, db, clock)
    for text in ("嗯", "啊", "哦"):
        await h.say("boss", text)
    await h.deliver()
    said = await h.bot_messages("boss")
    assert len(said) == 3 and all(NOT_UNDERSTOOD in s for s in said)
    assert tickets(db) == []
