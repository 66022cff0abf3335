"""Tables of the manager console: each saved segment's member count by day (its trend), and
daily rollups of the dashboard's time series (a finished day is counted once, then read)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Index, String, and_, text
from sqlalchemy.orm import Mapped, mapped_column

from storage.campaigns import CampaignTarget
from storage.coupons import CouponCode
from storage.models import Base, BigId, CustomerTag, Identity, Membership, OutboxMessage

__all__ = ["CAPPED_PURPOSES", "DASHBOARD_INDEXES", "DailyCount", "SegmentCount"]


class SegmentCount(Base):
    """How many customers a saved segment held on one (brand-local) day; the latest count wins."""

    __tablename__ = "segment_counts"

    segment_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("segments.id", ondelete="CASCADE"), primary_key=True
    )
    day: Mapped[str] = mapped_column(String(10), primary_key=True)
    members: Mapped[int] = mapped_column(BigInteger)
    counted_at: Mapped[datetime]


class DailyCount(Base):
    """One number of one finished brand-local day: ``metric`` (inbound, joins, outbox, ...)
    and an optional ``key`` (``telegram:sent``); ``metric = "_done"`` marks a day counted."""

    __tablename__ = "console_daily"

    day: Mapped[str] = mapped_column(String(10), primary_key=True)
    metric: Mapped[str] = mapped_column(String(32), primary_key=True)
    key: Mapped[str] = mapped_column(String(64), primary_key=True, default="")
    value: Mapped[int] = mapped_column(BigInteger)


#: date-range indexes the dashboard's live day and rollups use, and the customer timeline's
CONSOLE_INDEXES = (
    Index("ix_outbox_created_at", OutboxMessage.created_at),
    Index("ix_outbox_sent_at", OutboxMessage.sent_at),
    Index("ix_memberships_joined_at", Membership.joined_at),
    Index("ix_memberships_left_at", Membership.left_at),
    Index("ix_coupon_codes_redeemed_at", CouponCode.redeemed_at),
    Index("ix_campaign_targets_customer", CampaignTarget.customer_id),
    # LIKE 'campaign:7:%' as a range scan on PostgreSQL (its default collation cannot)
    Index(
        "ix_outbox_key_prefix",
        OutboxMessage.idempotency_key,
        postgresql_ops={"idempotency_key": "text_pattern_ops"},
    ),
)

#: the dashboard's whole-table counts (customers per channel, per group, per tag), each
#: read from a small index alone instead of the table (a million rows, once vacuumed)
_active = text("active")
DASHBOARD_INDEXES = (
    Index("ix_identities_channel", Identity.channel),
    Index(
        "ix_memberships_active_group",
        Membership.group_id,
        postgresql_where=_active,
        sqlite_where=_active,
    ),
    Index("ix_customer_tags_tag_expiry", CustomerTag.tag_id, CustomerTag.expires_at),
)

#: the outbox purposes the marketing frequency cap counts (bot/marketing/policy.py's
#: ``MARKETING_PURPOSES``; a test keeps the two equal)
CAPPED_PURPOSES = ("followup", "campaign", "scenario", "marketing", "survey")
_capped_rows = and_(
    OutboxMessage.purpose.in_(CAPPED_PURPOSES), OutboxMessage.customer_id.is_not(None)
)
#: the frequency cap's window (a campaign preview's "who is capped now"): the marketing
#: rows by time with their customer and status, read from the index alone once vacuumed
CAP_WINDOW_INDEX = Index(
    "ix_outbox_marketing_window",
    OutboxMessage.created_at,
    OutboxMessage.customer_id,
    OutboxMessage.status,
    postgresql_where=_capped_rows,
    sqlite_where=_capped_rows,
)
