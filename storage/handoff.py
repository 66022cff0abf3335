"""Tables of the staff takeover: staff users, the handoff queue, internal notes, audit log.

A flagged conversation gets one open :class:`HandoffTicket` (status waiting → claimed →
released | resolved). Claiming is one atomic ``UPDATE ... WHERE status = 'waiting'``, so
exactly one staff member wins a race. Every staff action is an :class:`AuditEntry`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, Text, func, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from storage.clock import utcnow
from storage.models import Base, BigId

__all__ = [
    "AuditEntry",
    "HandoffTicket",
    "LoginFailure",
    "StaffNote",
    "StaffUser",
    "last_staff_reply_at",
    "staff_named",
    "waiting_ahead",
]

#: Ticket statuses that are still open (in a queue).
OPEN_STATUSES = ("waiting", "claimed")


class StaffUser(Base):
    """A person who logs in to the staff inbox; role is 'staff' or 'manager'."""

    __tablename__ = "staff_users"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str] = mapped_column(String(200), default="")
    role: Mapped[str] = mapped_column(String(16), default="staff")
    password_hash: Mapped[str] = mapped_column(String(255))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_login_at: Mapped[datetime | None]
    #: Bumped on logout: sessions signed with an older version are refused (revocation).
    session_version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    #: The language of the inbox and of texts sent to this staff member (zh-CN or en).
    locale: Mapped[str] = mapped_column(String(8), default="zh-CN", server_default="zh-CN")


class HandoffTicket(Base):
    """One flagged conversation in the staff queue, with its reason, priority and owner."""

    __tablename__ = "handoff_tickets"
    __table_args__ = (Index("ix_handoff_tickets_status", "status", "priority"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversations.id"), index=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"), index=True)
    reason: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str] = mapped_column(Text, default="")
    priority: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(16), default="waiting")
    owner: Mapped[str | None] = mapped_column(String(64))
    escalated_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    claimed_at: Mapped[datetime | None]
    closed_at: Mapped[datetime | None]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    #: The customer's satisfaction rating (1–5) after the conversation was resolved.
    rating: Mapped[int | None]
    rated_at: Mapped[datetime | None]


class StaffNote(Base):
    """An internal note on a conversation; never sent to the customer."""

    __tablename__ = "staff_notes"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversations.id"), index=True)
    author: Mapped[str] = mapped_column(String(64))
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class AuditEntry(Base):
    """Who did what to which conversation, and when (staff actions and system escalations)."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    actor: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(32))
    ticket_id: Mapped[int | None] = mapped_column(BigId, index=True)
    conversation_id: Mapped[int | None] = mapped_column(BigId)
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class LoginFailure(Base):
    """One failed inbox login (by name and client IP), counted to throttle guessing.

    Shared by every process through the database; a successful login deletes the name's
    rows, and rows older than the throttle window are pruned as new ones are written.
    """

    __tablename__ = "login_failures"
    __table_args__ = (
        Index("ix_login_failures_username", "username", "created_at"),
        Index("ix_login_failures_client_ip", "client_ip", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    username: Mapped[str] = mapped_column(String(64))
    client_ip: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


def last_staff_reply_at(session: Session, channel: str, chat_id: str) -> datetime | None:
    """When staff last answered in this chat (their outbox rows), if ever."""
    from storage.models import OutboxMessage

    return session.scalar(
        select(func.max(OutboxMessage.created_at)).where(
            OutboxMessage.channel == channel,
            OutboxMessage.chat_id == chat_id,
            OutboxMessage.purpose == "staff",
        )
    )


def staff_named(session: Session, username: str | None) -> StaffUser | None:
    """The staff account with this username."""
    if not username:
        return None
    return session.scalars(select(StaffUser).where(StaffUser.username == username)).first()


def waiting_ahead(session: Session, ticket: HandoffTicket) -> int:
    """How many waiting tickets come before ``ticket`` in the queue (priority, then age)."""
    return int(
        session.scalar(
            select(func.count(HandoffTicket.id)).where(
                HandoffTicket.status == "waiting",
                (HandoffTicket.priority > ticket.priority)
                | (
                    (HandoffTicket.priority == ticket.priority)
                    & (HandoffTicket.created_at < ticket.created_at)
                ),
            )
        )
        or 0
    )
