"""Tables of scenarios, campaigns, their audiences and funnels, and consent changes.

A :class:`Scenario` is a timed push (morning offer, weekend trip, birthday, win-back) synced
from config; each of its runs for one time zone and local date is a :class:`ScenarioRun`
(``sent`` or ``missed``). A :class:`Campaign` is a manager's one-off push with a pilot and a
holdout; each customer it considered is a :class:`CampaignTarget` (its arm, variant and what
happened: queued, held out, dropped with the reason). :class:`CampaignEvent` records the
funnel steps the outbox cannot tell (clicks, opt-outs after a message).
:class:`ConsentChange` is the audit trail of marketing opt-out and opt-in.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from storage.clock import utcnow
from storage.models import Base, BigId

__all__ = [
    "ARMS",
    "Campaign",
    "CampaignEvent",
    "CampaignTarget",
    "ConsentChange",
    "Scenario",
    "ScenarioRun",
]

#: pilot: sent first; holdout: never sent (the comparison group); rollout: sent after launch.
ARMS = ("pilot", "holdout", "rollout")


class Scenario(Base):
    """A timed push in customers' own time zones (definition synced from ``[scenarios]``)."""

    __tablename__ = "scenarios"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    definition: Mapped[dict[str, Any]] = mapped_column(default=dict)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class ScenarioRun(Base):
    """One scenario's run for one time zone on one local date: running, sent or missed."""

    __tablename__ = "scenario_runs"
    __table_args__ = (UniqueConstraint("scenario_id", "timezone", "local_date"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    scenario_id: Mapped[int] = mapped_column(ForeignKey("scenarios.id"))
    timezone: Mapped[str] = mapped_column(String(64))
    local_date: Mapped[str] = mapped_column(String(10))
    status: Mapped[str] = mapped_column(String(16))
    queued: Mapped[int] = mapped_column(Integer, default=0)
    dropped: Mapped[int] = mapped_column(Integer, default=0)
    reason: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]


class Campaign(Base):
    """A manager's campaign: audience, content (variants), coupon, pilot and its verdict.

    status: its moves are the state machine in ``bot/marketing/campaigns/status.py``
    (draft → piloting → running, or → stopped with ``stop_reason``; paused holds it).
    """

    __tablename__ = "campaigns"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    segment: Mapped[str] = mapped_column(String(2000), default="")
    variants: Mapped[dict[str, Any]] = mapped_column(default=dict)
    buttons: Mapped[dict[str, Any]] = mapped_column(default=dict)
    coupon: Mapped[str | None] = mapped_column(String(64))
    priority: Mapped[int] = mapped_column(Integer, default=10)
    #: The campaign's weight in the delivery workers' fair share among the campaigns sending
    #: at the same time (1-10; a campaign of weight 2 gets twice the share of one of 1).
    weight: Mapped[int] = mapped_column(Integer, default=1, server_default=text("1"))
    pilot_share: Mapped[float] = mapped_column(Float, default=0.05)
    holdout_share: Mapped[float] = mapped_column(Float, default=0.05)
    pilot_hours: Mapped[float] = mapped_column(Float, default=24.0)
    status: Mapped[str] = mapped_column(String(16), default="draft")
    stop_reason: Mapped[str | None] = mapped_column(Text)
    verdict: Mapped[dict[str, Any]] = mapped_column(default=dict)
    send_at: Mapped[datetime | None]
    created_by: Mapped[str] = mapped_column(String(128), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    pilot_started_at: Mapped[datetime | None]
    launched_at: Mapped[datetime | None]
    #: Moves on every edit and status change: a manager's action carries the version they
    #: saw, and is refused if someone changed the campaign meanwhile (optimistic check).
    version: Mapped[int] = mapped_column(Integer, default=1, server_default=text("1"))


class CampaignTarget(Base):
    """One customer a campaign considered: arm, variant, and queued / held_out / dropped."""

    __tablename__ = "campaign_targets"
    __table_args__ = (Index("ix_campaign_targets_arm", "campaign_id", "arm", "status"),)

    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id"), primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"), primary_key=True)
    arm: Mapped[str] = mapped_column(String(8))
    variant: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class CampaignEvent(Base):
    """A funnel step the outbox does not record (click, opt-out after a message)."""

    __tablename__ = "campaign_events"
    __table_args__ = (UniqueConstraint("campaign_id", "customer_id", "kind", "detail"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id"), index=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"))
    kind: Mapped[str] = mapped_column(String(16))
    detail: Mapped[str] = mapped_column(String(64), default="")
    occurred_at: Mapped[datetime] = mapped_column(default=utcnow)


class ConsentChange(Base):
    """A customer's marketing opt-out or opt-in, with how it was given (audit trail)."""

    __tablename__ = "consent_changes"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"), index=True)
    opted_out: Mapped[bool] = mapped_column(Boolean)
    source: Mapped[str] = mapped_column(String(64))
    text: Mapped[str] = mapped_column(String(200), default="")
    occurred_at: Mapped[datetime] = mapped_column(default=utcnow)
