"""Deleting rows older than their retention period, in bounded batches.

Each call deletes at most ``batch`` rows of one kind in one statement (``DELETE ... WHERE
id IN (SELECT id ... ORDER BY id LIMIT batch)``), so the caller commits often and never
holds long locks on a busy table. Rows still in use are never touched: outbox rows only in
a final state (sent, failed, unreachable, cancelled).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import ColumnElement, delete, func, select
from sqlalchemy.orm import Session

from storage.db import rowcount
from storage.models import Interaction, OutboxMessage, SandboxMessage

__all__ = ["FINAL_OUTBOX_STATES", "Kind", "count_older", "delete_older_batch"]

#: Outbox states a row never leaves: safe to purge.
FINAL_OUTBOX_STATES = ("sent", "failed", "unreachable", "cancelled")


class Kind(StrEnum):
    """What a retention period applies to."""

    INTERACTIONS = "interactions"
    TRANSCRIPTS = "transcripts"
    OUTBOX = "outbox"


Purged = type[Interaction] | type[SandboxMessage] | type[OutboxMessage]


def _target(kind: Kind, cutoff: datetime) -> tuple[Purged, ColumnElement[bool]]:
    if kind is Kind.INTERACTIONS:
        return Interaction, Interaction.occurred_at < cutoff
    if kind is Kind.TRANSCRIPTS:
        return SandboxMessage, SandboxMessage.created_at < cutoff
    return OutboxMessage, (OutboxMessage.created_at < cutoff) & OutboxMessage.status.in_(
        FINAL_OUTBOX_STATES
    )


def count_older(session: Session, kind: Kind, cutoff: datetime) -> int:
    """How many rows of ``kind`` a purge at ``cutoff`` would delete."""
    model, older = _target(kind, cutoff)
    return int(session.scalar(select(func.count()).select_from(model).where(older)) or 0)


def delete_older_batch(session: Session, kind: Kind, cutoff: datetime, batch: int) -> int:
    """Delete up to ``batch`` of the oldest rows of ``kind`` before ``cutoff``; how many."""
    model, older = _target(kind, cutoff)
    ids = select(model.id).where(older).order_by(model.id).limit(batch).scalar_subquery()
    return rowcount(session.execute(delete(model).where(model.id.in_(ids))))
