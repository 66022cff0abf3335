"""Tables that make WeChat / WeCom callbacks safe to acknowledge and hard to replay.

``wechat_inbound`` is the durable journal of callbacks: a callback is answered ``success``
only once its row is committed, and a row stays ``pending`` until the event was routed, so
work that failed after the answer (a locked database, a crash) is done again from the row.
``wechat_callback_nonces`` remembers the signatures of plaintext-mode callbacks within the
replay window, so a captured signature cannot carry another body.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from storage.models import Base

__all__ = ["CallbackNonce", "InboundCallback"]


class InboundCallback(Base):
    """One WeChat/WeCom callback as received (its verified, parsed fields), until routed.

    status: ``pending`` (recorded, not yet routed), ``done``, ``failed`` (gave up after
    repeated errors; ``last_error`` says why). ``key`` is the event's dedupe key, so a
    platform retry of the same callback finds the same row. ``processed_at`` is when it was
    routed, or for a pending row when routing last failed.
    """

    __tablename__ = "wechat_inbound"
    __table_args__ = (
        Index("ix_wechat_inbound_status_received", "status", "received_at"),
        Index("ix_wechat_inbound_user", "channel", "user_id"),
    )

    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    channel: Mapped[str] = mapped_column(String(16))
    user_id: Mapped[str] = mapped_column(String(128), default="")
    fields: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    received_at: Mapped[datetime]
    processed_at: Mapped[datetime | None]


class CallbackNonce(Base):
    """A plaintext-mode callback signature seen within the replay window, with its body hash."""

    __tablename__ = "wechat_callback_nonces"
    __table_args__ = (Index("ix_wechat_callback_nonces_seen_at", "seen_at"),)

    channel: Mapped[str] = mapped_column(String(16), primary_key=True)
    signature: Mapped[str] = mapped_column(String(64), primary_key=True)
    nonce: Mapped[str] = mapped_column(String(64))
    timestamp: Mapped[int] = mapped_column(BigInteger)
    body_sha256: Mapped[str] = mapped_column(String(64))
    seen_at: Mapped[datetime]
