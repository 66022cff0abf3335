"""Interest scores per customer and tag: the sum of the weights of rule hits, decaying.

Each keyword or event rule hit adds the rule's ``weight`` to the customer's score for its
tag; the score halves every ``tagging.interest_half_life_days`` (0: never decays). So
someone who asked about 辅食 five times last week outranks someone who asked once a year
ago, and segments can say ``tagscore:母婴 >= 3`` (docs/segments.md).

A row keeps the score as of its last hit (``score``, ``last_hit_at``) and the decay rate
in force then (``decay_rate``, halvings per day). For SQL it also keeps
``decay_key = log2(score) + decay_rate × days(last_hit_at)`` (days since EPOCH), so the
current score is at least ``v`` exactly when ``decay_key - decay_rate × days(now) >=
log2(v)``: plain arithmetic on two columns, the same on SQLite and PostgreSQL, with no
nightly rewrite. A new hit rewrites the row with the rate configured now.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Float, ForeignKey, Index, Integer, select
from sqlalchemy.orm import Mapped, Session, mapped_column
from sqlalchemy.sql import ColumnElement

from storage.batch_rows import get_row
from storage.db import insert_ignore
from storage.models import Base, Tag
from storage.tag_ids import find_tag_id

__all__ = [
    "EPOCH",
    "Interest",
    "TagInterest",
    "bump_interest",
    "current_log2",
    "days_since_epoch",
    "interests_of",
]

EPOCH = datetime(2020, 1, 1, tzinfo=UTC)
#: Slack in score comparisons, so a score of exactly 3 passes ``>= 3`` despite rounding.
EPSILON = 1e-9


def days_since_epoch(moment: datetime) -> float:
    return (moment - EPOCH).total_seconds() / 86400.0


def rate_for(half_life_days: float) -> float:
    """Halvings per day for a half-life in days (0: no decay)."""
    return 1.0 / half_life_days if half_life_days > 0 else 0.0


class TagInterest(Base):
    """A customer's interest score in one tag (see the module docstring)."""

    __tablename__ = "tag_interest"
    __table_args__ = (Index("ix_tag_interest_tag", "tag_id"),)

    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"), primary_key=True)
    tag_id: Mapped[int] = mapped_column(ForeignKey("tags.id"), primary_key=True)
    score: Mapped[float] = mapped_column(Float)
    decay_rate: Mapped[float] = mapped_column(Float)
    decay_key: Mapped[float] = mapped_column(Float)
    hits: Mapped[int] = mapped_column(Integer)
    first_hit_at: Mapped[datetime]
    last_hit_at: Mapped[datetime]

    def score_at(self, now: datetime) -> float:
        """The decayed score at ``now``."""
        days = max((now - self.last_hit_at).total_seconds() / 86400.0, 0.0)
        return self.score * math.pow(2.0, -self.decay_rate * days)


def current_log2(now: datetime) -> ColumnElement[float]:
    """SQL for log2 of a row's current score (compare it with ``math.log2(v)``)."""
    return TagInterest.decay_key - TagInterest.decay_rate * days_since_epoch(now)


def bump_interest(
    session: Session,
    customer_id: int,
    tag: str,
    weight: float,
    now: datetime,
    *,
    half_life_days: float,
) -> float:
    """Add a hit of ``weight`` (> 0) to the customer's score for ``tag``; returns the new
    score. The tag must exist (the caller has just tagged the customer)."""
    if weight <= 0:
        return 0.0
    tag_id = find_tag_id(session, tag)
    if tag_id is None:
        return 0.0
    rate = rate_for(half_life_days)
    row = get_row(session, TagInterest, (customer_id, tag_id))
    if row is None:
        values = {
            "customer_id": customer_id,
            "tag_id": tag_id,
            "score": weight,
            "decay_rate": rate,
            "decay_key": math.log2(weight) + rate * days_since_epoch(now),
            "hits": 1,
            "first_hit_at": now,
            "last_hit_at": now,
        }
        if insert_ignore(session, TagInterest, values, ["customer_id", "tag_id"]):
            return weight
        row = session.get(TagInterest, (customer_id, tag_id), populate_existing=True)
        assert row is not None
    score = row.score_at(now) + weight
    row.score, row.decay_rate, row.hits = score, rate, row.hits + 1
    row.decay_key = math.log2(score) + rate * days_since_epoch(now)
    row.last_hit_at = max(row.last_hit_at, now)
    return score


@dataclass(frozen=True)
class Interest:
    """One tag's current interest score for a customer, for profiles."""

    tag: str
    score: float
    hits: int
    first_hit_at: datetime
    last_hit_at: datetime


def interests_of(
    session: Session, customer_id: int, now: datetime, *, limit: int = 20
) -> list[Interest]:
    """A customer's interest scores now, highest first."""
    rows = session.execute(
        select(TagInterest, Tag.name)
        .join(Tag, Tag.id == TagInterest.tag_id)
        .where(TagInterest.customer_id == customer_id)
    ).all()
    found = [
        Interest(name, row.score_at(now), row.hits, row.first_hit_at, row.last_hit_at)
        for row, name in rows
    ]
    found.sort(key=lambda i: (-i.score, i.tag))
    return found[:limit]
