"""The table of follow-ups.

A :class:`FollowUp` is scheduled when a flow enters a step that has a follow-up; it is
cancelled when the customer comes back or buys, and sent (rendered from the breakpoint)
when due. The coupons flows and staff issue are real coupon codes (storage/coupons.py).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import ForeignKey, Index, String, Text, select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.orm import Mapped, Session, mapped_column

from storage.clock import utcnow
from storage.models import Base, BigId, Conversation

__all__ = [
    "FollowUp",
    "cancel_for_customer",
    "cancel_pending",
    "cancel_pending_of",
    "pending_for",
    "schedule_followup",
]


class FollowUp(Base):
    """A message due later for one conversation's breakpoint.

    status: pending → sent | cancelled | skipped (opt-out); ``reason`` says why.
    """

    __tablename__ = "followups"
    __table_args__ = (Index("ix_followups_due", "status", "due_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversations.id"), index=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"), index=True)
    flow: Mapped[str] = mapped_column(String(64))
    step: Mapped[str] = mapped_column(String(64))
    template: Mapped[str] = mapped_column(String(64))
    due_at: Mapped[datetime]
    status: Mapped[str] = mapped_column(String(16), default="pending")
    reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[datetime | None]


def schedule_followup(
    session: Session,
    *,
    conversation_id: int,
    customer_id: int,
    flow: str,
    step: str,
    template: str,
    due_at: datetime,
    now: datetime,
    conversation: Conversation | None = None,
) -> FollowUp:
    """Schedule the follow-up of a breakpoint; it replaces any pending one of the conversation.

    ``conversation``: the conversation row when the caller holds its lock (the inbound
    path), so the replace is skipped when its marker says nothing is pending.
    """
    if conversation is not None and conversation.id == conversation_id:
        cancel_pending_of(session, conversation, "rescheduled")
    else:
        cancel_pending(session, conversation_id, "rescheduled")
        conversation = session.get(Conversation, conversation_id)
    if conversation is not None:
        conversation.followups_pending = True
    row = FollowUp(
        conversation_id=conversation_id,
        customer_id=customer_id,
        flow=flow,
        step=step,
        template=template,
        due_at=due_at,
        status="pending",
        created_at=now,
    )
    session.add(row)
    return row


def cancel_pending(session: Session, conversation_id: int, reason: str) -> int:
    """Cancel a conversation's pending follow-ups (the customer came back, ...)."""
    result = cast(
        "CursorResult[Any]",
        session.execute(
            update(FollowUp)
            .where(FollowUp.conversation_id == conversation_id, FollowUp.status == "pending")
            .values(status="cancelled", reason=reason)
        ),
    )
    return result.rowcount or 0


def cancel_pending_of(session: Session, conversation: Conversation, reason: str) -> int:
    """:func:`cancel_pending` for a conversation whose row this transaction holds locked
    (the inbound path loads it FOR UPDATE): no statement at all when its
    ``followups_pending`` marker says none is pending, and the marker is cleared after."""
    if conversation.followups_pending is False:
        return 0
    cancelled = cancel_pending(session, conversation.id, reason)
    conversation.followups_pending = False
    return cancelled


def cancel_for_customer(session: Session, customer_id: int, reason: str) -> int:
    """Cancel all of a customer's pending follow-ups (they bought: order intake calls this)."""
    result = cast(
        "CursorResult[Any]",
        session.execute(
            update(FollowUp)
            .where(FollowUp.customer_id == customer_id, FollowUp.status == "pending")
            .values(status="cancelled", reason=reason)
        ),
    )
    return result.rowcount or 0


def pending_for(session: Session, conversation_id: int) -> list[FollowUp]:
    return list(
        session.scalars(
            select(FollowUp)
            .where(FollowUp.conversation_id == conversation_id, FollowUp.status == "pending")
            .order_by(FollowUp.due_at)
        )
    )
