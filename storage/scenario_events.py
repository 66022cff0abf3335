"""Funnel steps of scenario pushes the outbox cannot tell (the scenario funnel).

A :class:`ScenarioEvent` is a press of a scenario's tracked button (``s:<name>:<variant>:
<action>``), tied to the scenario message it answers by that message's outbox key
(``scenario:<name>:<local date>:<customer>:<variant>``) — the same key the funnel groups
sent, delivered, link clicks and coupon codes by.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from storage.clock import utcnow
from storage.models import Base, BigId

__all__ = ["ScenarioEvent"]


class ScenarioEvent(Base):
    """One customer's click (``kind``) on one scenario message (``outbox_key``)."""

    __tablename__ = "scenario_events"
    __table_args__ = (UniqueConstraint("outbox_key", "kind", "detail"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    scenario_id: Mapped[int] = mapped_column(BigId, index=True)  # scenarios.id
    customer_id: Mapped[int] = mapped_column(BigId)
    outbox_key: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(16))
    detail: Mapped[str] = mapped_column(String(64), default="")
    occurred_at: Mapped[datetime] = mapped_column(default=utcnow)
