"""The table of tracked links: one unguessable token per link in one outbox message.

A campaign or scenario template writes ``{{ track("https://shop.example/x") }}``; each
rendered message gets its own token, bound to that message's outbox row by its
idempotency key (``outbox_key``) and the link's position in the message (``seq``), so a
re-run renders the same rows and inserts nothing twice. ``GET /r/<token>`` counts the
click and redirects to ``url`` (bot/web/links.py).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from storage.clock import utcnow
from storage.models import Base, BigId

__all__ = ["TrackedLink"]


class TrackedLink(Base):
    """A link in one outbox message; ``clicks`` counts every open (the funnel counts people)."""

    __tablename__ = "tracked_links"
    __table_args__ = (UniqueConstraint("outbox_key", "seq"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    token: Mapped[str] = mapped_column(String(32), unique=True)
    outbox_key: Mapped[str] = mapped_column(String(200))
    seq: Mapped[int] = mapped_column(Integer, default=0)
    url: Mapped[str] = mapped_column(String(2000))
    customer_id: Mapped[int] = mapped_column(BigId)
    campaign_id: Mapped[int | None] = mapped_column(BigId, index=True)
    variant: Mapped[str] = mapped_column(String(32), default="")
    clicks: Mapped[int] = mapped_column(Integer, default=0)
    first_clicked_at: Mapped[datetime | None]
    last_clicked_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
