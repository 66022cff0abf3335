"""SQLAlchemy 2 models of Siyu's core state.

Schema changes go through Alembic migrations in ``storage/migrations``; these models are the
source the migrations are written from.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

from storage.clock import utcnow

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# BIGINT on PostgreSQL, INTEGER (the rowid alias) on SQLite.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores naive UTC)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    """Declarative base with a naming convention so migrations are stable."""

    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSON}


class Customer(Base):
    """A person the brand knows, whatever channels they use."""

    __tablename__ = "customers"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    display_name: Mapped[str] = mapped_column(String(200), default="")
    locale: Mapped[str] = mapped_column(String(16), default="zh-CN")
    timezone: Mapped[str] = mapped_column(String(64), default="Asia/Shanghai")
    phone: Mapped[str | None] = mapped_column(String(32))
    birthday: Mapped[date | None] = mapped_column(Date)
    city: Mapped[str | None] = mapped_column(String(64))
    marketing_opt_out: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_active_at: Mapped[datetime | None] = mapped_column(index=True)

    identities: Mapped[list[Identity]] = relationship(back_populates="customer")


class Identity(Base):
    """One customer's account on one channel (Telegram user, WeChat openid, ...)."""

    __tablename__ = "identities"
    __table_args__ = (UniqueConstraint("channel", "external_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"), index=True)
    channel: Mapped[str] = mapped_column(String(16))
    external_id: Mapped[str] = mapped_column(String(128))
    display_name: Mapped[str] = mapped_column(String(200), default="")
    unreachable: Mapped[bool] = mapped_column(Boolean, default=False)
    unreachable_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    customer: Mapped[Customer] = relationship(back_populates="identities")


class Group(Base):
    """A community group (Telegram supergroup, WeCom customer group, sandbox group)."""

    __tablename__ = "groups"
    __table_args__ = (UniqueConstraint("channel", "external_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    channel: Mapped[str] = mapped_column(String(16))
    external_id: Mapped[str] = mapped_column(String(128))
    title: Mapped[str] = mapped_column(String(200), default="")
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    welcome_text: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Membership(Base):
    """A customer's membership of a group, with when they joined and left."""

    __tablename__ = "memberships"

    group_id: Mapped[int] = mapped_column(ForeignKey("groups.id"), primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"), primary_key=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    joined_at: Mapped[datetime] = mapped_column(default=utcnow)
    left_at: Mapped[datetime | None]


class Interaction(Base):
    """One inbound event of a customer, kept for the timeline and for audit."""

    __tablename__ = "interactions"
    __table_args__ = (
        # with the kind: "a customer's first message" is read from the index alone
        Index("ix_interactions_customer_time", "customer_id", "occurred_at", "kind"),
        Index("ix_interactions_occurred_at", "occurred_at"),  # retention purge
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"))
    event_id: Mapped[str] = mapped_column(String(32), index=True)
    channel: Mapped[str] = mapped_column(String(16))
    chat_id: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(24))
    text: Mapped[str] = mapped_column(Text, default="")
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    error: Mapped[str | None] = mapped_column(Text)
    occurred_at: Mapped[datetime] = mapped_column(default=utcnow)


class Tag(Base):
    """A label that can be put on customers."""

    __tablename__ = "tags"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class CustomerTag(Base):
    """A tag on a customer, with where it came from and until when it holds."""

    __tablename__ = "customer_tags"
    #: a tag's customers (and whether each has expired) from the index alone
    __table_args__ = (Index("ix_customer_tags_tag", "tag_id", "customer_id", "expires_at"),)

    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"), primary_key=True)
    tag_id: Mapped[int] = mapped_column(ForeignKey("tags.id"), primary_key=True)
    source: Mapped[str] = mapped_column(String(128))
    first_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None]

    tag: Mapped[Tag] = relationship()


class Conversation(Base):
    """The breakpoint of one conversation (keyed by ConversationRef) and its handoff status."""

    __tablename__ = "conversations"
    __table_args__ = (UniqueConstraint("channel", "chat_id", "user_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    channel: Mapped[str] = mapped_column(String(16))
    chat_id: Mapped[str] = mapped_column(String(128))
    user_id: Mapped[str] = mapped_column(String(128))
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"), index=True)
    flow: Mapped[str | None] = mapped_column(String(64))
    step: Mapped[str | None] = mapped_column(String(64))
    state: Mapped[dict[str, Any]] = mapped_column(default=dict)
    handoff_status: Mapped[str] = mapped_column(String(16), default="bot")
    handoff_owner: Mapped[str | None] = mapped_column(String(128))
    last_customer_message: Mapped[str | None] = mapped_column(Text)
    last_bot_message: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    #: Whether the conversation may have pending follow-ups (storage/followups.py):
    #: False only when it has none, so the inbound path skips cancelling; None = unknown.
    followups_pending: Mapped[bool | None] = mapped_column(Boolean)


class OutboxMessage(Base):
    """A message to send, durable before it is sent; the idempotency key makes it unique.

    status and purpose: ``bot/outbox/states.py`` (the state machine every writer checks).
    """

    __tablename__ = "outbox"
    __table_args__ = (
        Index("ix_outbox_due", "status", "next_attempt_at"),
        Index("ix_outbox_source", "source_kind", "source_id"),
        # the claim order: transactional purposes first, then each source in turn
        Index("ix_outbox_claim", "status", "purpose", "source_kind", "source_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(String(200), unique=True)
    channel: Mapped[str] = mapped_column(String(16))
    chat_id: Mapped[str] = mapped_column(String(128))
    user_id: Mapped[str] = mapped_column(String(128))
    customer_id: Mapped[int | None] = mapped_column(ForeignKey("customers.id"), index=True)
    purpose: Mapped[str] = mapped_column(String(24), default="reply")
    priority: Mapped[int] = mapped_column(Integer, default=0)
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    claimed_by: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    platform_message_id: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[datetime | None]
    #: What queued the row in bulk: ``campaign`` or ``scenario`` and its id (None: a reply,
    #: a staff answer, a follow-up, ...).
    source_kind: Mapped[str | None] = mapped_column(String(16))
    source_id: Mapped[int | None] = mapped_column(BigInteger)


class ProcessedInbound(Base):
    """Platform ids of inbound events already processed, so retries are not processed twice."""

    __tablename__ = "processed_inbound"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(32))
    processed_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class SandboxMessage(Base):
    """The sandbox channel's own transcript: what customers typed and what the bot sent."""

    __tablename__ = "sandbox_messages"
    __table_args__ = (
        Index("ix_sandbox_messages_chat", "chat_id", "id"),
        Index("ix_sandbox_messages_created_at", "created_at"),  # retention purge
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    chat_id: Mapped[str] = mapped_column(String(128))
    user_id: Mapped[str] = mapped_column(String(128))
    direction: Mapped[str] = mapped_column(String(4))
    text: Mapped[str] = mapped_column(Text, default="")
    buttons: Mapped[dict[str, Any]] = mapped_column(default=dict)
    outbox_key: Mapped[str | None] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
