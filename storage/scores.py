"""Per-customer value scores (RFM, lifecycle stage, tier) and the changes others react to.

``customer_scores`` is rewritten by the RFM recompute (bot/customers/rfm.py); a customer without a
row has never ordered: stage ``new``, no tier, no RFM group. ``customer_events`` is an
append-only log of tier and stage changes; other parts (campaigns, scenarios) read it
with :func:`events_since` and remember the last id they handled.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from storage.models import Base, BigId

__all__ = ["CustomerEvent", "CustomerScore", "events_since", "score_of"]

TIER_CHANGED = "tier_changed"
STAGE_CHANGED = "stage_changed"


class CustomerScore(Base):
    """A customer's RFM scores, group, lifecycle stage and tier as of ``computed_at``."""

    __tablename__ = "customer_scores"
    __table_args__ = (
        Index("ix_customer_scores_rfm_group", "rfm_group"),
        # with the tier and RFM group: the dashboard's counts by each, read from the index
        Index("ix_customer_scores_lifecycle", "lifecycle", "tier", "rfm_group"),
        Index("ix_customer_scores_tier", "tier"),
        Index("ix_customer_scores_last_order_at", "last_order_at"),
        Index("ix_customer_scores_first_order_at", "first_order_at"),
        Index("ix_customer_scores_spend_12m", "spend_12m_cents"),
    )

    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"), primary_key=True)
    last_order_at: Mapped[datetime]
    #: The first order ever (the monthly cohort a customer belongs to).
    first_order_at: Mapped[datetime | None]
    orders_total: Mapped[int] = mapped_column(Integer)
    spend_total_cents: Mapped[int] = mapped_column(BigInteger)
    frequency: Mapped[int] = mapped_column(Integer)
    monetary_cents: Mapped[int] = mapped_column(BigInteger)
    spend_12m_cents: Mapped[int] = mapped_column(BigInteger)
    r_score: Mapped[int | None] = mapped_column(Integer)
    f_score: Mapped[int | None] = mapped_column(Integer)
    m_score: Mapped[int | None] = mapped_column(Integer)
    rfm_group: Mapped[str | None] = mapped_column(String(32))
    lifecycle: Mapped[str] = mapped_column(String(16))
    tier: Mapped[str | None] = mapped_column(String(32))
    computed_at: Mapped[datetime]


class CustomerEvent(Base):
    """A change in a customer's tier or lifecycle stage (``old_value`` → ``new_value``)."""

    __tablename__ = "customer_events"
    __table_args__ = (Index("ix_customer_events_customer", "customer_id", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"))
    kind: Mapped[str] = mapped_column(String(24))
    old_value: Mapped[str | None] = mapped_column(String(32))
    new_value: Mapped[str | None] = mapped_column(String(32))
    occurred_at: Mapped[datetime]


def events_since(
    session: Session, after_id: int = 0, *, kinds: tuple[str, ...] = (), limit: int = 1000
) -> list[CustomerEvent]:
    """Tier/stage changes with id > ``after_id``, oldest first (a consumer's cursor)."""
    stmt = select(CustomerEvent).where(CustomerEvent.id > after_id)
    if kinds:
        stmt = stmt.where(CustomerEvent.kind.in_(kinds))
    return list(session.scalars(stmt.order_by(CustomerEvent.id).limit(limit)))


def score_of(session: Session, customer_id: int) -> CustomerScore | None:
    """A customer's scores (tier, stage, RFM); None if they never ordered (stage "new")."""
    return session.get(CustomerScore, customer_id)
