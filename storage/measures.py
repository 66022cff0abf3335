"""Tables of the effect measures: invites and referrals, their rewards, survey answers, and
the nightly rollup of the console's measures figures."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, Integer, String, Text, UniqueConstraint, delete
from sqlalchemy.orm import Mapped, Session, mapped_column

from storage.db import rowcount
from storage.models import Base, BigId, Customer
from storage.orders import Order

__all__ = [
    "AARRR_REPORT",
    "CHURN_REPORT",
    "InviteCode",
    "MeasuresRollup",
    "Referral",
    "ReferralReward",
    "SurveyResponse",
    "forget_rollups",
]

#: The figures read orders and customers by time (a period), not only by customer.
Index("ix_orders_time", Order.ordered_at, Order.customer_id)
Index("ix_customers_created", Customer.created_at)


class InviteCode(Base):
    """A customer's personal invite code (``ref_<code>`` in deep links, QR scenes, states)."""

    __tablename__ = "invite_codes"

    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"), primary_key=True)
    code: Mapped[str] = mapped_column(String(16), unique=True)
    created_at: Mapped[datetime]


class Referral(Base):
    """A newcomer attributed to the customer who invited them (once: first touch wins)."""

    __tablename__ = "referrals"
    __table_args__ = (
        Index("ix_referrals_referrer", "referrer_id", "created_at"),
        Index("ix_referrals_created_at", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    referrer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"))
    referred_id: Mapped[int] = mapped_column(ForeignKey("customers.id"), unique=True)
    code: Mapped[str] = mapped_column(String(16))
    channel: Mapped[str] = mapped_column(String(16))
    #: How the newcomer came: deep_link (Telegram /start), qr_scene (OA), contact_state (WeCom).
    via: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime]
    #: When the newcomer first ordered (the "first_order" reward trigger), once known.
    first_order_at: Mapped[datetime | None]


class ReferralReward(Base):
    """One reward of one rule for one referral, to the referrer or the newcomer.

    Unique per (referral, rule, beneficiary): settling twice never rewards twice. A reward
    over the referrer's cap is kept with status ``capped`` and no coupon.
    """

    __tablename__ = "referral_rewards"
    __table_args__ = (
        UniqueConstraint("referral_id", "rule", "beneficiary", name="uq_referral_rewards_once"),
        Index("ix_referral_rewards_customer", "customer_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    referral_id: Mapped[int] = mapped_column(ForeignKey("referrals.id"))
    rule: Mapped[str] = mapped_column(String(64))
    beneficiary: Mapped[str] = mapped_column(String(16))
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"))
    status: Mapped[str] = mapped_column(String(16))
    coupon_code: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime]


class SurveyResponse(Base):
    """One customer's answer to one survey sending: the score, then an optional comment."""

    __tablename__ = "survey_responses"
    __table_args__ = (
        Index("ix_survey_responses_survey", "survey", "answered_at"),
        Index("ix_survey_responses_customer", "customer_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    survey: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(8))
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"))
    channel: Mapped[str] = mapped_column(String(16))
    #: What sent it: ``campaign:<id>``, ``scenario:<name>``, ``handoff:<ticket id>``,
    #: ``order:<order id>`` or ``command``.
    source: Mapped[str] = mapped_column(String(128), default="")
    #: The staff member whose conversation it rates (after a resolved handoff).
    staff: Mapped[str | None] = mapped_column(String(128))
    score: Mapped[int] = mapped_column(Integer)
    comment: Mapped[str | None] = mapped_column(Text)
    answered_at: Mapped[datetime]
    flagged: Mapped[bool] = mapped_column(default=False)


class MeasuresRollup(Base):
    """The additive counts of one measures report (``loyalty``, ``aarrr``, ``cohorts:12``)
    over one period, from the data before ``cutoff_at`` (the start of the brand's day it was
    counted for): the finished days, counted once (nightly); a reader adds today's delta."""

    __tablename__ = "measures_rollup"

    report: Mapped[str] = mapped_column(String(32), primary_key=True)
    zone: Mapped[str] = mapped_column(String(64), primary_key=True)
    start: Mapped[str] = mapped_column(String(10), primary_key=True)
    end: Mapped[str] = mapped_column(String(10), primary_key=True)
    cutoff_at: Mapped[datetime] = mapped_column(primary_key=True)
    counts: Mapped[dict[str, Any]]
    computed_at: Mapped[datetime]


#: the stored report of the AARRR chain, the one that reads interactions (the retention
#: purge deletes old ones)
AARRR_REPORT = "aarrr"

#: the stored report of the churn figures (lifecycle stages now and stage changes), read
#: from the scores: it goes stale when scores are recomputed, not as days pass
CHURN_REPORT = "churn"


def forget_rollups(
    session: Session, since: datetime | None = None, *, report: str | None = None
) -> int:
    """Drop the rolled-up counts that data at or after ``since`` (everything without it)
    makes stale — a late order import — or those of ``report`` (the churn figures when
    scores change, the AARRR chain when the retention purge deletes interactions). Returns
    the rows dropped."""
    stmt = delete(MeasuresRollup)
    if since is not None:
        stmt = stmt.where(MeasuresRollup.cutoff_at > since)
    if report is not None:
        stmt = stmt.where(MeasuresRollup.report == report)
    return rowcount(session.execute(stmt))
