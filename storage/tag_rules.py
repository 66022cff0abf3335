"""Tagging rules managers add by command (``/rule add``), next to the rules in config.

A rule is a keyword rule (keywords and exclusions), an event rule (trigger and value) or an
activity rule (messages in a window). Deleting a rule deactivates it, so tags keep a
meaningful source and running processes notice the change (``updated_at`` moves).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, Float, Integer, String, case, func, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from storage.models import Base, BigId

__all__ = ["TagRule", "active_rule", "active_rules", "rules_version"]

RULE_KINDS = ("keyword", "event", "activity")


class TagRule(Base):
    """One tagging rule from the database; ``spec`` holds the kind's own fields."""

    __tablename__ = "tag_rules"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    tag: Mapped[str] = mapped_column(String(64))
    spec: Mapped[dict[str, Any]] = mapped_column(default=dict)
    weight: Mapped[float] = mapped_column(Float, default=1.0)
    ttl_days: Mapped[int] = mapped_column(Integer, default=0)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_by: Mapped[str] = mapped_column(String(128), default="")
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


def active_rules(session: Session, kind: str | None = None) -> list[TagRule]:
    stmt = select(TagRule).where(TagRule.active.is_(True))
    if kind:
        stmt = stmt.where(TagRule.kind == kind)
    return list(session.scalars(stmt.order_by(TagRule.id)))


def active_rule(session: Session, rule_id: int) -> TagRule | None:
    """Database rule ``rule_id`` if it is still active."""
    return session.scalars(
        select(TagRule).where(TagRule.id == rule_id, TagRule.active.is_(True))
    ).one_or_none()


def rules_version(session: Session) -> tuple[Any, ...]:
    """Changes whenever a rule is added, changed or deleted (for matcher caches)."""
    active = func.sum(case((TagRule.active.is_(True), 1), else_=0))
    return tuple(
        session.execute(select(func.count(TagRule.id), active, func.max(TagRule.updated_at))).one()
    )
