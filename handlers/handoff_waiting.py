"""While a conversation waits for or is with staff, the customer is never left in silence.

``handoff_ack`` (group HANDOFF_ACK, runs during handoff): a customer's new message gets a
short acknowledgement — their place in the queue and when to expect an answer, or who is
on it — at most once per ``[handoff] ack_minutes``. While staff own the conversation and
answered within that time, no acknowledgement is needed and none is sent.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from bot.conversations.handoff import expected_reply, open_ticket
from bot.core import filters as f
from bot.core.context import Context
from bot.core.events import EventKind
from storage.handoff import last_staff_reply_at, staff_named, waiting_ahead

__all__ = ["handoff_ack", "waiting_for_staff"]

waiting_for_staff = (
    f.is_private
    & f.kind(EventKind.MESSAGE)
    & f.has_role("customer")
    & f.Filter(lambda c: c.bot_silenced, "in_handoff")
)


def handoff_ack(ctx: Context) -> None:
    """Acknowledge the customer's message (at most once per ``ack_minutes``)."""
    assert ctx.conversation is not None and ctx.customer is not None
    every = timedelta(minutes=ctx.config.handoff.ack_minutes)
    last = ctx.state.get("handoff_ack_at")
    if last and ctx.now - datetime.fromisoformat(last) < every:
        return
    ticket = open_ticket(ctx.session, ctx.conversation.id)
    owner = None
    if ticket is not None and ticket.status == "claimed":
        answered = last_staff_reply_at(
            ctx.session, ctx.conversation.channel, ctx.conversation.chat_id
        )
        if answered is not None and ctx.now - answered < every:
            return  # staff are answering: they will see this message live
        staff = staff_named(ctx.session, ticket.owner)
        owner = (staff.display_name if staff else ticket.owner) or ""
    ahead = 0
    if ticket is not None and ticket.status == "waiting":
        ahead = waiting_ahead(ctx.session, ticket)
    when = expected_reply(ctx.config, ctx.customer, ctx.now)
    ctx.reply(
        "handoff_ack",
        owner=owner,
        ahead=ahead,
        in_hours=when.in_hours,
        minutes=when.minutes,
        opens=when.opens,
    )
    ctx.state["handoff_ack_at"] = ctx.now.isoformat()
    ctx.save_state()
