"""Telegram-specific state: long callback data, the staff relay group's topics, and the
parts of a long message already sent.

The first two are small lookup tables the Telegram adapter keeps so that what it sends can
be understood when it comes back: a button press carrying a short token, a staff message in
a forum topic of the relay group. Sent parts are kept in the outbox row itself
(``payload["extra"]["sent_parts"]``), so a retry resumes after the last part sent.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from sqlalchemy import BigInteger, String, Text, UniqueConstraint, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from storage.clock import utcnow
from storage.db import insert_ignore
from storage.models import Base, BigId, Identity, OutboxMessage

__all__ = [
    "TelegramCallbackData",
    "TelegramRelayTopic",
    "find_topic",
    "is_unreachable",
    "record_sent_parts",
    "remember_callback",
    "resolve_callback",
    "save_topic",
    "topic_for",
]


class ConversationKey(Protocol):
    """What keys a conversation here (``bot.core.events.ConversationRef`` is one)."""

    @property
    def channel(self) -> str: ...
    @property
    def chat_id(self) -> str: ...
    @property
    def user_id(self) -> str: ...


class TelegramCallbackData(Base):
    """Button data longer than Telegram's 64 bytes, stored under the short token sent."""

    __tablename__ = "telegram_callback_data"

    token: Mapped[str] = mapped_column(String(64), primary_key=True)
    data: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class TelegramRelayTopic(Base):
    """A forum topic of the staff relay group that mirrors one customer conversation."""

    __tablename__ = "telegram_relay_topics"
    __table_args__ = (
        UniqueConstraint("channel", "chat_id", "user_id"),
        UniqueConstraint("relay_chat_id", "thread_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    relay_chat_id: Mapped[str] = mapped_column(String(64))
    thread_id: Mapped[int] = mapped_column(BigInteger)
    channel: Mapped[str] = mapped_column(String(16))
    chat_id: Mapped[str] = mapped_column(String(128))
    user_id: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


def remember_callback(session: Session, token: str, data: str, now: datetime) -> None:
    insert_ignore(
        session,
        TelegramCallbackData,
        {"token": token, "data": data, "created_at": now},
        ["token"],
    )


def resolve_callback(session: Session, token: str) -> str | None:
    return session.scalar(
        select(TelegramCallbackData.data).where(TelegramCallbackData.token == token)
    )


def topic_for(session: Session, ref: ConversationKey) -> TelegramRelayTopic | None:
    """The relay topic of a customer conversation, if one was opened."""
    return session.scalars(
        select(TelegramRelayTopic).where(
            TelegramRelayTopic.channel == ref.channel,
            TelegramRelayTopic.chat_id == ref.chat_id,
            TelegramRelayTopic.user_id == ref.user_id,
        )
    ).one_or_none()


def find_topic(session: Session, relay_chat_id: str, thread_id: int) -> TelegramRelayTopic | None:
    """The conversation a relay topic belongs to."""
    return session.scalars(
        select(TelegramRelayTopic).where(
            TelegramRelayTopic.relay_chat_id == relay_chat_id,
            TelegramRelayTopic.thread_id == thread_id,
        )
    ).one_or_none()


def save_topic(
    session: Session, relay_chat_id: str, thread_id: int, ref: ConversationKey, now: datetime
) -> TelegramRelayTopic:
    """Record a new topic (or return the one another process recorded first)."""
    insert_ignore(
        session,
        TelegramRelayTopic,
        {
            "relay_chat_id": relay_chat_id,
            "thread_id": thread_id,
            "channel": ref.channel,
            "chat_id": ref.chat_id,
            "user_id": ref.user_id,
            "created_at": now,
        },
        ["channel", "chat_id", "user_id"],
    )
    topic = topic_for(session, ref)
    assert topic is not None
    return topic


def is_unreachable(session: Session, user_id: str) -> bool:
    """Whether a Telegram user blocked the bot (a 403 marked their identity)."""
    return bool(
        session.scalar(
            select(Identity.unreachable).where(
                Identity.channel == "telegram", Identity.external_id == user_id
            )
        )
    )


def record_sent_parts(session: Session, outbox_id: int, message_ids: list[str]) -> None:
    """Remember the Telegram message ids of the parts of an outbox message sent so far."""
    row = session.get(OutboxMessage, outbox_id)
    if row is None:
        return
    payload = dict(row.payload or {})
    payload["extra"] = {**(payload.get("extra") or {}), "sent_parts": list(message_ids)}
    row.payload = payload
