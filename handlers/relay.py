"""Mirroring a handed-off customer's messages into the staff relay group.

Runs (group RELAY, also during handoff) for a 1:1 message, command or button press of a
conversation that was already waiting for or owned by staff when it arrived; the message
that flagged the conversation is shown in the topic's opening post instead.
"""

from __future__ import annotations

from bot.conversations.relay import mirror_customer_message
from bot.core import filters as f
from bot.core.context import Context
from bot.core.events import EventKind

__all__ = ["in_handoff", "mirror_to_relay"]

in_handoff = (
    f.is_private
    & f.kind(EventKind.MESSAGE, EventKind.COMMAND, EventKind.BUTTON, EventKind.EDITED)
    & f.Filter(lambda c: c.bot_silenced, "in_handoff")
)


def _shown(ctx: Context) -> str:
    event = ctx.event
    if event.kind is EventKind.BUTTON:
        return f"[{event.button_data}]"
    if event.kind is EventKind.EDITED:
        return f"✏️ {event.text}"
    return event.text or "[…]"


def mirror_to_relay(ctx: Context) -> None:
    assert ctx.conversation is not None and ctx.customer is not None
    mirror_customer_message(
        ctx.session,
        ctx.config,
        ctx.renderer,
        ctx.conversation,
        ctx.customer,
        event_key=ctx.event.dedupe_key,
        text=_shown(ctx),
        now=ctx.now,
    )
