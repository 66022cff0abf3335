"""The batch-job table: long work a worker process runs (campaign preparation, imports).

A row is queued by whoever asks for the work (the scheduler, a chat command, the console)
with an idempotency key, so the same request queues it once; a worker claims it with a
lease it renews while it runs, records progress, and ends it ``done`` with a result or
``failed`` with a secret-free error. Jobs that share a ``lock_key`` (one campaign) never
run at the same time: a partial unique index allows one ``running`` row per lock. Status
moves are checked by ``bot/jobs/states.py``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from storage.clock import utcnow
from storage.models import Base, BigId

__all__ = ["NOTIFY_CHANNEL", "BatchJob"]

#: The PostgreSQL notification channel a trigger notifies when jobs are queued.
NOTIFY_CHANNEL = "siyu_jobs"


class BatchJob(Base):
    """One unit of batch work: what (``kind`` + ``payload``), its state, lease and outcome."""

    __tablename__ = "batch_jobs"
    __table_args__ = (
        Index("ix_batch_jobs_due", "status", "not_before"),
        Index("ix_batch_jobs_kind", "kind", "id"),
        # one running job per lock (a campaign is prepared by one worker at a time)
        Index(
            "uq_batch_jobs_running_lock",
            "lock_key",
            unique=True,
            postgresql_where=text("status = 'running'"),
            sqlite_where=text("status = 'running'"),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    idempotency_key: Mapped[str] = mapped_column(String(200), unique=True)
    lock_key: Mapped[str | None] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    not_before: Mapped[datetime] = mapped_column(default=utcnow)
    claimed_by: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[datetime | None]
    #: ``{"done": n, "total": m}`` as the worker last recorded it
    progress: Mapped[dict[str, Any]] = mapped_column(default=dict)
    result: Mapped[dict[str, Any] | None]
    error: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[str] = mapped_column(String(128), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
