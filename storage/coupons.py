"""Tables of coupon definitions and the codes issued from them.

A :class:`CouponDefinition` says what a coupon is worth (an amount or a percentage), the
minimum spend, how long a code stays valid, how many may be issued in total and per
customer. A :class:`CouponCode` is one unguessable code issued to one customer; its
``issue_key`` (e.g. ``campaign:12:customer:345``) makes issuing idempotent, so a re-run
campaign gives the same code again. status: issued → redeemed (once, atomically).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from storage.clock import utcnow
from storage.models import Base, BigId

__all__ = ["CouponCode", "CouponDefinition"]


class CouponDefinition(Base):
    """What a coupon is worth and how many may exist (synced from ``[coupons]``)."""

    __tablename__ = "coupon_definitions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    title: Mapped[str] = mapped_column(String(200), default="")
    amount_cents: Mapped[int] = mapped_column(BigInteger, default=0)
    percent_off: Mapped[int] = mapped_column(Integer, default=0)
    min_spend_cents: Mapped[int] = mapped_column(BigInteger, default=0)
    valid_days: Mapped[int] = mapped_column(Integer, default=7)
    total_stock: Mapped[int] = mapped_column(Integer, default=0)
    per_customer: Mapped[int] = mapped_column(Integer, default=1)
    issued: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class CouponCode(Base):
    """One code issued to one customer; redeemed at most once."""

    __tablename__ = "coupon_codes"
    __table_args__ = (
        Index("ix_coupon_codes_owner", "definition_id", "customer_id"),
        # the profile's "coupons of this customer": the owner index starts with definition_id
        Index("ix_coupon_codes_customer", "customer_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    issue_key: Mapped[str] = mapped_column(String(200), unique=True)
    definition_id: Mapped[int] = mapped_column(ForeignKey("coupon_definitions.id"))
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"))
    campaign_id: Mapped[int | None] = mapped_column(BigId, index=True)
    status: Mapped[str] = mapped_column(String(16), default="issued")
    issued_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    redeemed_at: Mapped[datetime | None]
    redeemed_by: Mapped[str | None] = mapped_column(String(128))
    order_amount_cents: Mapped[int | None] = mapped_column(BigInteger)
