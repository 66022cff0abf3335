"""Tables of the WeChat Official Account and WeCom channels.

Shared access tokens (one fetch for all Siyu processes), the customer-service window of each
follower, what happened to each WeChat delivery, unionids that join identities across the
two channels, where followers and contacts came from (source attribution), WeCom external
contacts with their welcome codes, customer mass-send tasks waiting for staff confirmation,
and the record of customer merges.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from storage.clock import utcnow
from storage.models import Base, BigId

__all__ = [
    "AccessToken",
    "CustomerMerge",
    "ServiceWindow",
    "SourceAttribution",
    "UnionId",
    "WechatDelivery",
    "WecomContact",
    "WecomMassTask",
    "WecomTagSync",
]


class AccessToken(Base):
    """An API access token shared by every Siyu process, with its expiry."""

    __tablename__ = "wechat_access_tokens"

    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    token: Mapped[str | None] = mapped_column(String(1024))
    expires_at: Mapped[datetime | None]
    fetched_at: Mapped[datetime | None]
    fetch_count: Mapped[int] = mapped_column(Integer, default=0)


class ServiceWindow(Base):
    """A follower's customer-service window: until when, and how many messages it allows.

    A message from the follower opens 48 hours for 5 messages; a click, subscribe or scan
    opens 1 minute for 3 (unless a longer window with quota left is still open).
    """

    __tablename__ = "wechat_service_windows"

    channel: Mapped[str] = mapped_column(String(16), primary_key=True)
    openid: Mapped[str] = mapped_column(String(128), primary_key=True)
    opened_by: Mapped[str] = mapped_column(String(24))
    opened_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    quota: Mapped[int] = mapped_column(Integer)
    used: Mapped[int] = mapped_column(Integer, default=0)


class WechatDelivery(Base):
    """How one outbox message went out on WeChat/WeCom (route and platform error), for audit.

    route: custom (customer-service message), passive (reply to the callback), template,
    window_closed, quota, welcome, mass_task, app, error.
    """

    __tablename__ = "wechat_deliveries"
    __table_args__ = (Index("ix_wechat_deliveries_outbox", "outbox_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    outbox_id: Mapped[int | None] = mapped_column(BigId)
    channel: Mapped[str] = mapped_column(String(16))
    user_id: Mapped[str] = mapped_column(String(128))
    route: Mapped[str] = mapped_column(String(24))
    errcode: Mapped[int | None] = mapped_column(Integer)
    detail: Mapped[str | None] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(default=utcnow)


class UnionId(Base):
    """The WeChat unionid behind an OA openid or a WeCom external_userid."""

    __tablename__ = "wechat_unionids"

    channel: Mapped[str] = mapped_column(String(16), primary_key=True)
    external_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    unionid: Mapped[str] = mapped_column(String(128), index=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)


class SourceAttribution(Base):
    """Which channel QR code / campaign (qrscene, WeCom State) brought a customer, and when."""

    __tablename__ = "source_attributions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    event_key: Mapped[str] = mapped_column(String(200), unique=True)
    customer_id: Mapped[int] = mapped_column(BigId, index=True)
    channel: Mapped[str] = mapped_column(String(16))
    external_id: Mapped[str] = mapped_column(String(128))
    source: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(24))
    at: Mapped[datetime] = mapped_column(default=utcnow)


class WecomContact(Base):
    """A WeCom external contact of one staff member, with the welcome code of the add event."""

    __tablename__ = "wecom_contacts"

    external_userid: Mapped[str] = mapped_column(String(128), primary_key=True)
    staff_userid: Mapped[str] = mapped_column(String(128), primary_key=True)
    state: Mapped[str | None] = mapped_column(String(128))
    welcome_code: Mapped[str | None] = mapped_column(String(256))
    welcome_expires_at: Mapped[datetime | None]
    added_at: Mapped[datetime] = mapped_column(default=utcnow)
    removed_at: Mapped[datetime | None]
    removed_by: Mapped[str | None] = mapped_column(String(16))


class WecomMassTask(Base):
    """A customer mass-send (add_msg_template) task; WeCom needs the staff member to confirm.

    status: pending_confirmation → sent | partly_sent | not_friend | limited | failed.
    """

    __tablename__ = "wecom_mass_tasks"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    outbox_key: Mapped[str] = mapped_column(String(200), unique=True)
    msgid: Mapped[str | None] = mapped_column(String(128), unique=True)
    sender: Mapped[str] = mapped_column(String(128))
    chat_type: Mapped[str] = mapped_column(String(8), default="single")
    targets: Mapped[dict[str, Any]] = mapped_column(default=dict)
    text: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(24), default="pending_confirmation", index=True)
    result: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    checked_at: Mapped[datetime | None]


class WecomTagSync(Base):
    """A corp tag already put on an external contact (so it is marked once)."""

    __tablename__ = "wecom_tag_syncs"

    external_userid: Mapped[str] = mapped_column(String(128), primary_key=True)
    staff_userid: Mapped[str] = mapped_column(String(128), primary_key=True)
    corp_tag_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)


class CustomerMerge(Base):
    """One customer folded into another (same unionid, or by a manager)."""

    __tablename__ = "customer_merges"
    __table_args__ = (UniqueConstraint("from_customer_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    from_customer_id: Mapped[int] = mapped_column(BigId)
    into_customer_id: Mapped[int] = mapped_column(BigId, index=True)
    reason: Mapped[str] = mapped_column(String(128))
    at: Mapped[datetime] = mapped_column(default=utcnow)
