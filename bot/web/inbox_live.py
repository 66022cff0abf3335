"""Live updates of the staff inbox: one database poller per process, fanned out to pages.

Every open inbox page listens on ``/inbox/stream``. Instead of each stream polling the
database, the process runs one :class:`LiveUpdates` poller while at least one page
listens. Each round is one cheap query (ticket count and last change, newest interaction,
outbox row and note ids); only when that moved does it compute the signature of each
conversation a page has open (once per conversation, however many pages show it), and wake
exactly the pages whose part changed. Local inbox actions call :meth:`LiveUpdates.poke` so
their pages refresh at once; changes from other processes arrive by the next round.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from storage.db import Database
from storage.handoff import HandoffTicket, StaffNote
from storage.models import Conversation, Interaction, OutboxMessage

__all__ = ["LiveUpdates", "Subscription"]

log = logging.getLogger(__name__)


@dataclass(eq=False)
class Subscription:
    """One listening page: the conversation it shows (None: the queue) and its wake-up."""

    ticket_id: int | None
    changed: asyncio.Event = field(default_factory=asyncio.Event)


class LiveUpdates:
    """The process's one inbox poller (see the module docstring)."""

    def __init__(self, db: Database, *, interval: float = 1.0) -> None:
        self.db = db
        self.interval = interval
        self.rounds = 0  # database rounds so far (for tests and diagnostics)
        self._subs: set[Subscription] = set()
        self._task: asyncio.Task | None = None
        self._poke = asyncio.Event()
        self._cursor: Any = None
        self._queue: Any = None
        self._tickets: dict[int, str] = {}

    async def subscribe(self, ticket_id: int | None) -> Subscription:
        """Listen for changes of the queue and of conversation ``ticket_id`` (if given)."""
        sub = Subscription(ticket_id)
        self._subs.add(sub)
        if self._task is None or self._task.done():
            self._cursor, self._queue, self._tickets = None, None, {}
            self._poke = asyncio.Event()
            self._task = asyncio.create_task(self._run(), name="siyu-inbox-live")
        if ticket_id is not None and ticket_id not in self._tickets:
            baseline = (await self.db.run(self._read_tickets, [ticket_id]))[ticket_id]
            self._tickets.setdefault(ticket_id, baseline)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subs.discard(sub)
        self._poke.set()  # lets an idle poller notice and end

    def poke(self) -> None:
        """Something changed here (a staff action): check now instead of at the next round."""
        self._poke.set()

    async def _run(self) -> None:
        while self._subs:
            try:
                await self._round()
            except Exception:
                log.exception("inbox live updates: poll failed; retrying")
            self._poke.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._poke.wait(), self.interval)
        self._task = None

    async def _round(self) -> None:
        self.rounds += 1
        cursor = await self.db.run(self._read_cursor)
        if cursor == self._cursor:
            return
        first = self._cursor is None
        self._cursor = cursor
        queue = cursor[:2]
        wake: set[Subscription] = set()
        if queue != self._queue:
            if not first:
                wake |= self._subs
            self._queue = queue
        open_tickets = {s.ticket_id for s in self._subs if s.ticket_id is not None}
        signatures = await self.db.run(self._read_tickets, sorted(open_tickets))
        for ticket_id, sig in signatures.items():
            if self._tickets.get(ticket_id, sig) != sig:
                wake |= {s for s in self._subs if s.ticket_id == ticket_id}
        self._tickets = signatures
        for sub in wake:
            sub.changed.set()

    def _read_cursor(self) -> tuple:
        with self.db.sessions() as session:
            row = session.execute(
                select(
                    select(func.count(HandoffTicket.id)).scalar_subquery(),
                    select(func.max(HandoffTicket.updated_at)).scalar_subquery(),
                    select(func.max(Interaction.id)).scalar_subquery(),
                    select(func.max(OutboxMessage.id)).scalar_subquery(),
                    select(func.max(StaffNote.id)).scalar_subquery(),
                )
            ).one()
            return tuple(str(v) for v in row)

    def _read_tickets(self, ticket_ids: list[int]) -> dict[int, str]:
        with self.db.sessions() as session:
            return {t: _ticket_signature(session, t) for t in ticket_ids}


def _ticket_signature(session: Session, ticket_id: int) -> str:
    """What a conversation page shows that can change: its history and notes."""
    ticket = session.get(HandoffTicket, ticket_id)
    if ticket is None:
        return ""
    conv = session.get(Conversation, ticket.conversation_id)
    assert conv is not None
    parts = [
        session.scalar(
            select(func.max(Interaction.id)).where(Interaction.customer_id == ticket.customer_id)
        ),
        session.scalar(
            select(func.max(OutboxMessage.id)).where(
                OutboxMessage.chat_id == conv.chat_id, OutboxMessage.user_id == conv.user_id
            )
        ),
        session.scalar(select(func.max(StaffNote.id)).where(StaffNote.conversation_id == conv.id)),
    ]
    return json.dumps(parts, default=str)
