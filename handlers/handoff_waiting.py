"""While a conversation waits for or is with staff, the customer is never left in silence.

``handoff_ack`` (group HANDOFF_ACK, runs during handoff): a customer's new message gets a
short acknowledgement — their place in the queue and when to expect an answer, or who is
on it — at most once per ``[handoff] ack_minutes``, counted from the last thing they
heard (the handoff notice, a staff answer, an earlier acknowledgement).
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
    """Acknowledge the customer's message, at most once per ``ack_minutes`` counted from
    the last thing the customer heard: the handoff notice, a staff answer, an earlier
    acknowledgement."""
    assert ctx.conversation is not None and ctx.customer is not None
    every = timedelta(minutes=ctx.config.handoff.ack_minutes)
    ticket = open_ticket(ctx.session, ctx.conversation.id)
    if ticket is None:
        return  # taken over outside the queue: the person on it answers
    heard = [ticket.created_at]
    if ticket.claimed_at is not None:
        heard.append(ticket.claimed_at)
    if last := ctx.state.get("handoff_ack_at"):
        heard.append(datetime.fromisoformat(last))
    answered = last_staff_reply_at(ctx.session, ctx.conversation.channel, ctx.conversation.chat_id)
    if answered is not None:
        heard.append(answered)
    if ctx.now - max(heard) < every:
        return
    owner = None
    if ticket.status == "claimed":
        staff = staff_named(ctx.session, ticket.owner)
        owner = (staff.display_name if staff else ticket.owner) or ""
    ahead = waiting_ahead(ctx.session, ticket) if ticket.status == "waiting" else 0
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
