"""The staff relay group: a forum topic per flagged conversation, staff answering from it.

The real adapter over real HTTP against the fake Bot API; staff actions go through
bot/conversations/handoff.py like the web inbox's.
"""

from __future__ import annotations

import pytest
from sqlalchemy import select

from bot.conversations import handoff
from bot.conversations.staff import create_staff
from storage.handoff import AuditEntry, HandoffTicket, StaffUser
from storage.models import Conversation
from tests.fakes.telegram import TelegramHarness, message, private_chat, topic_message, user

pytestmark = pytest.mark.filterwarnings("ignore::telegram.warnings.PTBDeprecationWarning")

RELAY = -100777
ALICE = 5001
MEI = 8001  # a staff member's Telegram account, linked to the staff account "mei"
STRANGER = 8002


@pytest.fixture
async def tg(config, db, clock):
    async with TelegramHarness(
        config, db, clock, relay_chat_id=RELAY, relay_staff=[f"{MEI}:mei"]
    ) as harness:
        with harness.db.transaction() as session:
            create_staff(session, "mei", "correct-horse", role="staff", now=clock.now())
        yield harness


def relay_posts(h: TelegramHarness) -> list[tuple[int, str]]:
    return [(c.params.get("message_thread_id"), c.params["text"]) for c in h.api.sent(RELAY)]


async def flagged(h: TelegramHarness) -> int:
    """Alice complains; returns her topic's thread id."""
    await h.push(message(private_chat(ALICE), user(ALICE, "Alice"), "我要投诉，衣服破了"))
    await h.deliver()
    (topic,) = h.api.called("createForumTopic")
    assert topic.params["chat_id"] == RELAY and "Alice" in topic.params["name"]
    thread, opening = relay_posts(h)[0]
    assert thread is not None
    assert "keyword" in opening and "我要投诉，衣服破了" in opening
    return thread


async def test_complaint_opens_a_topic_and_the_next_message_is_mirrored(tg):
    thread = await flagged(tg)
    assert "人工客服" in tg.api.texts(ALICE)[0]  # the customer is told a person will answer
    await tg.push(message(private_chat(ALICE), user(ALICE, "Alice"), "订单号 A123"))
    await tg.deliver()
    assert relay_posts(tg)[-1] == (thread, "👤 Alice：订单号 A123")
    assert len(tg.api.texts(ALICE)) == 1  # the bot stays silent while staff have it
    assert len(tg.api.called("createForumTopic")) == 1  # one topic per conversation


async def test_staff_message_in_the_topic_reaches_the_customer_once(tg):
    thread = await flagged(tg)
    update = topic_message(RELAY, thread, user(MEI, "Mei"), "您好，我是客服小美，马上处理")
    update_id = await tg.push(update)
    await tg.deliver()
    assert tg.api.texts(ALICE)[-1] == "您好，我是客服小美，马上处理"
    assert any("mei 已接手" in text for _, text in relay_posts(tg))  # claimed on first answer
    # Telegram delivers the same update again (e.g. after a restart): nothing is resent
    again = topic_message(RELAY, thread, user(MEI, "Mei"), "您好，我是客服小美，马上处理")
    again["update_id"] = update_id
    await tg.adapter.process(again)
    await tg.deliver()
    assert tg.api.texts(ALICE).count("您好，我是客服小美，马上处理") == 1
    with tg.db.sessions() as session:
        actions = [e.action for e in session.scalars(select(AuditEntry).order_by(AuditEntry.id))]
        ticket = session.scalars(select(HandoffTicket)).one()
    assert actions == ["flag", "claim", "reply"]
    assert (ticket.status, ticket.owner) == ("claimed", "mei")


async def test_an_unlinked_telegram_user_cannot_answer_customers(tg):
    thread = await flagged(tg)
    await tg.push(topic_message(RELAY, thread, user(STRANGER, "Eve"), "我来回复"))
    await tg.deliver()
    assert len(tg.api.texts(ALICE)) == 1
    assert "relay_staff" in relay_posts(tg)[-1][1]
    with tg.db.sessions() as session:
        assert session.scalars(select(HandoffTicket)).one().status == "waiting"


async def test_release_in_the_topic_resumes_the_bot(tg):
    thread = await flagged(tg)
    await tg.push(topic_message(RELAY, thread, user(MEI, "Mei"), "/claim"))
    await tg.push(topic_message(RELAY, thread, user(MEI, "Mei"), "/release"))
    await tg.deliver()
    assert "mei 已将会话交还机器人" in relay_posts(tg)[-1][1]
    with tg.db.sessions() as session:
        conversation = session.scalars(
            select(Conversation).where(Conversation.chat_id == str(ALICE))
        ).one()
        assert conversation.handoff_status == "bot"
        assert session.scalars(select(HandoffTicket)).one().status == "released"
    posts_before = len(relay_posts(tg))
    await tg.push(message(private_chat(ALICE), user(ALICE, "Alice"), "/start"))
    await tg.deliver()
    assert "欢迎来到我们的社群" in tg.api.texts(ALICE)[-1]  # the bot answers again
    assert len(relay_posts(tg)) == posts_before  # and nothing is mirrored any more


async def test_inbox_actions_are_posted_to_the_topic(tg):
    thread = await flagged(tg)
    with tg.db.transaction() as session:  # what the web inbox does
        mei = session.scalars(select(StaffUser)).one()
        ticket = session.scalars(select(HandoffTicket)).one()
        handoff.claim(session, ticket.id, mei, tg.clock.now())
        handoff.reply(session, ticket.id, mei, "已为您安排退换", "web-1", tg.clock.now())
        handoff.resolve(session, ticket.id, mei, tg.clock.now(), confirmed=True)
    await tg.deliver()
    posts = [text for t, text in relay_posts(tg) if t == thread]
    assert posts[-3:] == [
        "✋ mei 已接手此会话。",
        "💬 mei（收件箱）：已为您安排退换",
        "✅ mei 已结束此会话。",
    ]
    assert tg.api.texts(ALICE)[-2] == "已为您安排退换"
    assert tg.api.texts(ALICE)[-1].startswith("您的问题已处理完毕")  # closing + rating


async def test_a_deleted_topic_is_opened_again(tg):
    thread = await flagged(tg)
    tg.api.fail_next("sendMessage", 400, "Bad Request: message thread not found")
    await tg.push(message(private_chat(ALICE), user(ALICE, "Alice"), "还在吗"))
    await tg.deliver()
    tg.clock.advance(60)
    await tg.deliver()
    assert len(tg.api.called("createForumTopic")) == 2
    new_thread, text = relay_posts(tg)[-1]
    assert new_thread != thread and text == "👤 Alice：还在吗"
