"""Tables of the manager console: each saved segment's member count by day (its trend)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from storage.models import Base, BigId

__all__ = ["SegmentCount"]


class SegmentCount(Base):
    """How many customers a saved segment held on one (brand-local) day; the latest count wins."""

    __tablename__ = "segment_counts"

    segment_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("segments.id", ondelete="CASCADE"), primary_key=True
    )
    day: Mapped[str] = mapped_column(String(10), primary_key=True)
    members: Mapped[int] = mapped_column(BigInteger)
    counted_at: Mapped[datetime]
