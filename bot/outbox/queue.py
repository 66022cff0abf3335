"""The durable outbox: every outbound message is a row here before it is sent.

A row's idempotency key makes it unique, so a retried handler, a re-run campaign or a
restarted job cannot queue the same message twice. Delivery workers claim due rows with a
lease (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so several processes can share the work),
transactional rows ahead of marketing and concurrent campaigns in fair shares, and record
the outcome.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from itertools import zip_longest
from typing import Any

from sqlalchemy import ColumnElement, Select, select, text, update
from sqlalchemy.orm import Session

from bot.adapters.base import Button, OutboundMessage
from bot.core.events import ConversationRef
from bot.outbox.states import (
    TRANSACTIONAL_PURPOSES,
    OutboxPurpose,
    OutboxStatus,
    SourceKind,
    is_transactional,
    purpose_of,
    transition,
    transitions,
)
from storage.campaigns import Campaign
from storage.db import insert_ignore, rowcount
from storage.models import OutboxMessage

__all__ = [
    "Backoff",
    "Source",
    "claim_due",
    "enqueue",
    "marketing_sources",
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


@dataclass(frozen=True)
class Source:
    """One stream of marketing rows that shares a channel fairly with the others.

    A campaign or a scenario (``kind`` and ``id``: its rows' ``source_kind`` and
    ``source_id``), or all rows of one purpose queued one by one (follow-ups, surveys,
    group posts: ``kind`` and ``id`` None). A campaign's share is in proportion to its
    ``weight``."""

    purpose: str
    kind: str | None = None
    id: int | None = None
    #: its part of the shares (a campaign's ``weight``; 1 for everything else)
    weight: int = 1

    @property
    def label(self) -> str:
        """A short name for logs and metrics: ``campaign:7``, ``followup``."""
        return f"{self.kind}:{self.id}" if self.kind else self.purpose


def marketing_sources(session: Session, channels: Sequence[str]) -> list[Source]:
    """The sources with marketing rows waiting (on ``channels``; on PostgreSQL on any).

    On PostgreSQL a skip scan of the claim index per purpose: a few index probes per source
    however long the backlog (a GROUP BY would read every waiting row). A source whose rows
    are all for other channels gets an empty share; its part goes to the oldest rows."""
    if session.get_bind().dialect.name == "postgresql":
        return _weighted(session, _sources_by_skip_scan(session))
    rows = session.execute(
        select(OutboxMessage.purpose, OutboxMessage.source_kind, OutboxMessage.source_id)
        .where(OutboxMessage.status == OutboxStatus.PENDING)
        .where(OutboxMessage.purpose.not_in(TRANSACTIONAL_PURPOSES))
        .where(OutboxMessage.channel.in_(channels))
        .group_by(OutboxMessage.purpose, OutboxMessage.source_kind, OutboxMessage.source_id)
    )
    return _weighted(
        session, [Source(purpose, kind, source_id) for purpose, kind, source_id in rows]
    )


def _weighted(session: Session, sources: list[Source]) -> list[Source]:
    """The sources with their campaigns' weights (one read of the campaigns sending)."""
    ids = [s.id for s in sources if s.kind == SourceKind.CAMPAIGN and s.id is not None]
    if not ids:
        return sources
    weights = dict(
        session.execute(select(Campaign.id, Campaign.weight).where(Campaign.id.in_(ids))).all()
    )
    return [
        replace(s, weight=max(1, weights.get(s.id) or 1))
        if s.kind == SourceKind.CAMPAIGN and s.id is not None
        else s
        for s in sources
    ]


# One purpose's distinct (source_kind, source_id) of pending rows, each found by one probe
# of ix_outbox_claim (status, purpose, source_kind, source_id, id) past the previous one.
_SKIP_SCAN = text(
    """
WITH RECURSIVE s(kind, sid) AS (
  (SELECT source_kind, source_id FROM outbox
   WHERE status = 'pending' AND purpose = :purpose AND source_kind IS NOT NULL
   ORDER BY source_kind, source_id LIMIT 1)
  UNION ALL
  SELECT n.source_kind, n.source_id FROM s CROSS JOIN LATERAL (
    SELECT source_kind, source_id FROM outbox
    WHERE status = 'pending' AND purpose = :purpose
      AND (source_kind, source_id) > (s.kind, s.sid)
    ORDER BY source_kind, source_id LIMIT 1) n
)
SELECT kind, sid FROM s
"""
)
_ANY_UNSOURCED = text(
    "SELECT EXISTS (SELECT 1 FROM outbox WHERE status = 'pending' AND purpose = :purpose"
    " AND source_kind IS NULL)"
)


def _sources_by_skip_scan(session: Session) -> list[Source]:
    found: list[Source] = []
    for purpose in OutboxPurpose:
        if is_transactional(purpose):
            continue
        if session.scalar(_ANY_UNSOURCED, {"purpose": purpose.value}):
            found.append(Source(purpose.value))
        rows = session.execute(_SKIP_SCAN, {"purpose": purpose.value})
        found += [Source(purpose.value, kind, sid) for kind, sid in rows]
    return found


def claim_due(
    session: Session,
    *,
    worker: str,
    now: datetime,
    lease: timedelta,
    limit: int,
    channels: Sequence[str],
    sources: Sequence[Source] | None = None,
    marketing: bool = True,
) -> list[OutboxMessage]:
    """Claim up to ``limit`` due rows for ``worker``, in the order they should go out.

    First rows whose lease ran out (a dead worker's claims), then transactional rows
    (replies, staff answers, ...: highest priority, then oldest, first), then — unless
    ``marketing`` is False — marketing rows shared between their :class:`Source` s
    round-robin (each source gets a share of what is left in proportion to its weight —
    equal unless campaigns were given weights — and the list interleaves them), so a second campaign is not starved by a first one of a million messages. Rows
    of sources not in ``sources`` (the caller's cached list; None reads it now) and shares
    a source could not fill go to the oldest remaining marketing rows.

    Each part is one UPDATE ... WHERE id IN (due rows) RETURNING: on PostgreSQL the
    subquery skips rows other workers hold (FOR UPDATE SKIP LOCKED); on SQLite the UPDATE
    takes the write lock before it reads, so two processes never claim the same row.
    """
    base = select(OutboxMessage.id).where(OutboxMessage.channel.in_(channels))
    due = base.where(OutboxMessage.status == OutboxStatus.PENDING).where(
        OutboxMessage.next_attempt_at <= now
    )
    claim = _Claim(session, worker, now + lease)
    expired = claim(
        base.where(OutboxMessage.status == OutboxStatus.SENDING)
        .where(OutboxMessage.lease_until < now)
        .order_by(OutboxMessage.id),
        limit,
    )
    urgent = claim(
        due.where(OutboxMessage.purpose.in_(TRANSACTIONAL_PURPOSES)).order_by(
            OutboxMessage.priority.desc(), OutboxMessage.id
        ),
        limit - len(expired),
    )
    urgent.sort(key=lambda r: (-r.priority, r.id))
    left = limit - len(expired) - len(urgent)
    if not marketing or left <= 0:
        return expired + urgent
    if sources is None:
        sources = marketing_sources(session, channels)
    shares: list[list[OutboxMessage]] = []
    if sources:
        total = sum(s.weight for s in sources)
        start = random.randrange(len(sources))  # no source always first when shares are 1
        for source in (*sources[start:], *sources[:start]):
            share = math.ceil(left * source.weight / total)
            rows = claim(
                due.where(*_of(source)).order_by(OutboxMessage.id),
                min(share, left - sum(map(len, shares))),
            )
            shares.append(sorted(rows, key=lambda r: r.id))
    rest = claim(
        due.where(OutboxMessage.purpose.not_in(TRANSACTIONAL_PURPOSES)).order_by(
            OutboxMessage.priority.desc(), OutboxMessage.id
        ),
        left - sum(map(len, shares)),
    )
    rest.sort(key=lambda r: (-r.priority, r.id))
    return expired + urgent + _round_robin(shares) + rest


class _Claim:
    """Claims the rows one id subquery selects, up to a limit, for one worker."""

    def __init__(self, session: Session, worker: str, lease_until: datetime) -> None:
        self.session, self.worker, self.lease_until = session, worker, lease_until

    def __call__(self, ids: Select[int], limit: int) -> list[OutboxMessage]:
        if limit <= 0:
            return []
        stmt = (
            update(OutboxMessage)
            .where(
                OutboxMessage.id.in_(
                    ids.limit(limit).with_for_update(skip_locked=True).scalar_subquery()
                )
            )
            .values(status=_CLAIMED, claimed_by=self.worker, lease_until=self.lease_until)
            .returning(OutboxMessage)
            .execution_options(synchronize_session=False)
        )
        return list(self.session.scalars(stmt))


def _of(source: Source) -> tuple[ColumnElement[bool], ...]:
    """The conditions selecting one source's rows (written so the claim index serves them)."""
    kind = (
        OutboxMessage.source_kind.is_(None)
        if source.kind is None
        else OutboxMessage.source_kind == source.kind
    )
    ident = (
        OutboxMessage.source_id.is_(None)
        if source.id is None
        else OutboxMessage.source_id == source.id
    )
    return (OutboxMessage.purpose == source.purpose, kind, ident)


def _round_robin(shares: list[list[OutboxMessage]]) -> list[OutboxMessage]:
    """The first row of each share, then the second of each, ..."""
    return [row for group in zip_longest(*shares) for row in group if row is not None]


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
