"""The conversation's follow-up marker: the inbound path skips cancelling when none is pending,
and never skips a pending one (new, scheduled, sent, and rows from before the marker)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, update

from bot.conversations.followups import send_due_followups
from storage.followups import FollowUp
from storage.models import Conversation
from tests.support import SandboxHarness

DEST_QIANDAO = "flow:weekend_trip_inquiry:destination:qiandao"


def marker(db, user: str) -> bool | None:
    with db.sessions() as s:
        conv = s.scalars(select(Conversation).where(Conversation.user_id == user)).one()
        return conv.followups_pending


def statuses(db) -> list[tuple[str, str | None]]:
    with db.sessions() as s:
        return [(f.status, f.reason) for f in s.scalars(select(FollowUp).order_by(FollowUp.id))]


async def test_marker_follows_scheduling_cancelling_and_sending(config, db, clock):
    h = SandboxHarness(config, db, clock)
    result = await h.say("u1", "/help")
    assert marker(db, "u1") is False  # a new conversation has none pending
    assert "customer_returned" not in result.handlers

    await h.say("u1", "周末去哪玩呀")  # the flow prompts and schedules a follow-up
    assert marker(db, "u1") is True
    assert statuses(db) == [("pending", None)]

    result = await h.say("u1", "/help")
    assert "customer_returned" in result.handlers
    assert statuses(db) == [("cancelled", "customer_returned")]
    assert marker(db, "u1") is False

    await h.sandbox.receive({"user_id": "u1", "button_data": DEST_QIANDAO})
    assert marker(db, "u1") is True
    clock.advance(timedelta(days=2))
    assert send_due_followups(db, config, clock)["sent"] == 1
    assert marker(db, "u1") is False  # the scheduler cleared it with the send


async def test_conversation_from_before_the_marker_still_cancels(config, db, clock):
    h = SandboxHarness(config, db, clock)
    await h.say("u1", "周末去哪玩呀")
    with db.transaction() as s:  # as a row written before the marker existed
        s.execute(update(Conversation).values(followups_pending=None))
    await h.say("u1", "在吗？")
    assert statuses(db)[0] == ("cancelled", "customer_returned")
