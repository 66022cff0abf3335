"""Saved segments: named expressions, reusable as ``segment:name`` (docs/segments.md).

The expression language and its compilation to SQL live in ``bot/customers/segments.py``;
this is the table they are saved in.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, String, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from storage.models import Base, BigId, Customer

__all__ = ["SavedSegment", "delete_segment", "list_segments", "saved_expression"]


#: ``city:杭州`` is a common segment condition; index it (created by migration 0300).
Index("ix_customers_city", Customer.city)


class SavedSegment(Base):
    """A segment saved by name, reusable in other expressions as ``segment:name``."""

    __tablename__ = "segments"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    expression: Mapped[str] = mapped_column(String(2000))
    created_by: Mapped[str] = mapped_column(String(128), default="")
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


def saved_expression(session: Session, name: str) -> str | None:
    """The expression saved under ``name``, if any."""
    return session.scalar(select(SavedSegment.expression).where(SavedSegment.name == name))


def list_segments(session: Session) -> list[SavedSegment]:
    return list(session.scalars(select(SavedSegment).order_by(SavedSegment.name)))


def delete_segment(session: Session, name: str) -> bool:
    row = session.scalars(select(SavedSegment).where(SavedSegment.name == name)).one_or_none()
    if row is None:
        return False
    session.delete(row)
    return True
