"""Marketing waits while a person is talking to the customer.

A marketing row (campaign, scenario, follow-up) due for a chat whose conversation waits
for or is with staff is not sent: it goes back to the queue with the reason ``in_handoff``
and is tried again every :data:`RETRY`; once the conversation is back with the bot it goes
out as planned. A row held longer than :data:`MAX_HOLD` is stale and is cancelled (reason
``in_handoff``), so the customer never gets a backlog of offers after a long complaint.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import select, tuple_, update
from sqlalchemy.orm import Session

from storage.models import Conversation, OutboxMessage

__all__ = ["HELD_REASON", "MARKETING", "MAX_HOLD", "RETRY", "hold_marketing_in_handoff"]

#: Outbox purposes that are marketing (the same list as bot/marketing/policy.py).
MARKETING = frozenset({"followup", "campaign", "marketing"})
#: Conversation handoff states in which a person, not the bot, is talking to the customer.
IN_HANDOFF = ("waiting", "staff")
HELD_REASON = "in_handoff"
RETRY = timedelta(minutes=10)
MAX_HOLD = timedelta(hours=48)


def hold_marketing_in_handoff(
    session: Session, rows: Sequence[OutboxMessage], now: datetime
) -> set[int]:
    """Hold (or, when stale, cancel) the claimed marketing ``rows`` whose chat is in
    handoff; returns their ids (not to be sent now). One query, only when the batch has
    marketing rows."""
    marketing = [r for r in rows if r.purpose in MARKETING]
    if not marketing:
        return set()
    chats = {(r.channel, r.chat_id) for r in marketing}
    busy = set(
        session.execute(
            select(Conversation.channel, Conversation.chat_id).where(
                tuple_(Conversation.channel, Conversation.chat_id).in_(chats),
                Conversation.handoff_status.in_(IN_HANDOFF),
            )
        ).all()
    )
    held = [r for r in marketing if (r.channel, r.chat_id) in busy]
    if not held:
        return set()
    stale = [r.id for r in held if now - r.created_at > MAX_HOLD]
    later = [r.id for r in held if r.id not in stale]
    released = {"claimed_by": None, "lease_until": None, "last_error": HELD_REASON}
    if later:
        session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id.in_(later))
            .values(status="pending", next_attempt_at=now + RETRY, **released)
            .execution_options(synchronize_session=False)
        )
    if stale:
        session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id.in_(stale))
            .values(status="cancelled", **released)
            .execution_options(synchronize_session=False)
        )
    return {r.id for r in held}
