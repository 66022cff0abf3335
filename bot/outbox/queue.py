"""The durable outbox: every outbound message is a row here before it is sent.

A row's idempotency key makes it unique, so a retried handler, a re-run campaign or a
restarted job cannot queue the same message twice. Delivery workers claim due rows with a
lease (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so several processes can share the work),
and record the outcome.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from bot.adapters.base import Button, OutboundMessage
from bot.core.events import ConversationRef
from bot.outbox.states import OutboxStatus, purpose_of, transition, transitions
from storage.db import insert_ignore, rowcount
from storage.models import OutboxMessage

__all__ = [
    "Backoff",
    "claim_due",
    "enqueue",
    "release_claims",
    "release_orphans",
    "renew_claims",
    "to_outbound",
]


def enqueue(
    session: Session,
    *,
    key: str,
    to: ConversationRef,
    text: str,
    now: datetime,
    buttons: Sequence[Button] = (),
    customer_id: int | None = None,
    purpose: str = "reply",
    priority: int = 0,
    not_before: datetime | None = None,
    extra: dict[str, Any] | None = None,
) -> bool:
    """Queue a message; False (and nothing queued) if the key was queued before."""
    payload: dict[str, Any] = {"text": text}
    if buttons:
        payload["buttons"] = [{"label": b.label, "data": b.data} for b in buttons]
    if extra:
        payload["extra"] = extra
    return (
        insert_ignore(
            session,
            OutboxMessage,
            {
                "idempotency_key": key,
                "channel": to.channel,
                "chat_id": to.chat_id,
                "user_id": to.user_id,
                "customer_id": customer_id,
                "purpose": purpose_of(purpose).value,
                "priority": priority,
                "payload": payload,
                "status": OutboxStatus.PENDING.value,
                "attempts": 0,
                "next_attempt_at": not_before or now,
                "created_at": now,
            },
            ["idempotency_key"],
        )
        == 1
    )


def to_outbound(row: OutboxMessage) -> OutboundMessage:
    payload = row.payload or {}
    return OutboundMessage(
        outbox_id=row.id,
        idempotency_key=row.idempotency_key,
        channel=row.channel,
        chat_id=row.chat_id,
        user_id=row.user_id,
        text=payload.get("text", ""),
        buttons=tuple(Button(b["label"], b["data"]) for b in payload.get("buttons", ())),
        extra=payload.get("extra", {}),
        purpose=row.purpose,
        queued_at=row.created_at,
    )


def claim_due(
    session: Session,
    *,
    worker: str,
    now: datetime,
    lease: timedelta,
    limit: int,
    channels: Sequence[str],
) -> list[OutboxMessage]:
    """Claim up to ``limit`` due rows for ``worker`` (pending, or sending with a dead lease).

    One UPDATE ... WHERE id IN (due rows) RETURNING: on PostgreSQL the subquery skips rows
    other workers hold (FOR UPDATE SKIP LOCKED); on SQLite the UPDATE takes the write lock
    before it reads, so two processes never claim the same row.
    """
    due = (
        select(OutboxMessage.id)
        .where(OutboxMessage.channel.in_(channels))
        .where(
            or_(
                (OutboxMessage.status == OutboxStatus.PENDING)
                & (OutboxMessage.next_attempt_at <= now),
                (OutboxMessage.status == OutboxStatus.SENDING) & (OutboxMessage.lease_until < now),
            )
        )
        .order_by(OutboxMessage.priority.desc(), OutboxMessage.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    claim = (
        update(OutboxMessage)
        .where(OutboxMessage.id.in_(due.scalar_subquery()))
        .values(status=_CLAIMED, claimed_by=worker, lease_until=now + lease)
        .returning(OutboxMessage)
        .execution_options(synchronize_session=False)
    )
    rows = list(session.scalars(claim))
    rows.sort(key=lambda r: (-r.priority, r.id))
    return rows


def release_claims(session: Session, worker: str) -> int:
    """Put a worker's unfinished claims back in the queue (clean shutdown)."""
    result = session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.status == OutboxStatus.SENDING, OutboxMessage.claimed_by == worker)
        .values(status=_RELEASED, claimed_by=None, lease_until=None)
    )
    return rowcount(result)


def renew_claims(session: Session, worker: str, lease_until: datetime) -> int:
    """Extend the leases of the rows ``worker`` still holds (it is alive and working)."""
    result = session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.status == OutboxStatus.SENDING, OutboxMessage.claimed_by == worker)
        .values(lease_until=lease_until)
    )
    return rowcount(result)


def release_orphans(session: Session) -> int:
    """Requeue every claim (single-process SQLite start-up: no other worker can hold one)."""
    result = session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.status == OutboxStatus.SENDING)
        .values(status=_RELEASED, claimed_by=None, lease_until=None)
    )
    return rowcount(result)


#: The moves the claim and release statements make (checked once, when this loads).
_CLAIMED = transitions((OutboxStatus.PENDING, OutboxStatus.SENDING), OutboxStatus.SENDING).value
_RELEASED = transition(OutboxStatus.SENDING, OutboxStatus.PENDING).value


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with full jitter, capped."""

    base: float = 2.0
    cap: float = 600.0

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        ceiling = min(self.cap, self.base * 2 ** max(attempt - 1, 0))
        return (rng or random).uniform(ceiling / 2, ceiling)
