"""Inbox live updates: one poller per process, one cheap query a round, whatever the pages."""

from __future__ import annotations

import asyncio

from sqlalchemy import event, select

from bot.conversations import handoff
from bot.web.inbox_live import LiveUpdates
from storage.handoff import HandoffTicket, StaffUser
from tests.support import SandboxHarness
from tests.test_inbox_web import add_staff


class StatementCounter:
    """Counts SQL statements sent on an engine (SQLAlchemy's public event API)."""

    def __init__(self, engine) -> None:
        self.count = 0
        event.listen(engine, "before_cursor_execute", self._seen)
        self._engine = engine

    def _seen(self, *args) -> None:
        self.count += 1

    def close(self) -> None:
        event.remove(self._engine, "before_cursor_execute", self._seen)


async def flag(h: SandboxHarness, user: str) -> int:
    await h.say(user, "我要投诉")
    with h.db.sessions() as s:
        return s.scalars(select(HandoffTicket.id).order_by(HandoffTicket.id.desc())).first()


async def settle(live: LiveUpdates, rounds: int = 3) -> None:
    start = live.rounds
    while live.rounds < start + rounds:
        await asyncio.sleep(0.01)


async def test_many_pages_share_one_poller_and_only_changed_pages_wake(config, sqlite_db, clock):
    h = SandboxHarness(config, sqlite_db, clock)
    add_staff(sqlite_db, clock, "alice")
    first, second = await flag(h, "u1"), await flag(h, "u2")
    live = LiveUpdates(sqlite_db, interval=0.02)
    queue_pages = [await live.subscribe(None) for _ in range(10)]
    first_pages = [await live.subscribe(first) for _ in range(10)]
    second_page = await live.subscribe(second)
    await settle(live)

    counter = StatementCounter(sqlite_db.engine)
    try:
        rounds_before = live.rounds
        await settle(live, 20)
        idle_rounds = live.rounds - rounds_before
        # 21 open pages, nothing changing: one statement per round, not one per page.
        assert counter.count <= idle_rounds + 1
    finally:
        counter.close()
    assert not any(p.changed.is_set() for p in [*queue_pages, *first_pages, second_page])

    with sqlite_db.transaction() as s:  # a note on the first conversation only
        alice = s.scalars(select(StaffUser)).one()
        handoff.add_note(s, first, alice, "called back", clock.now())
    live.poke()
    await settle(live)
    assert all(p.changed.is_set() for p in first_pages)
    assert not second_page.changed.is_set()
    assert not any(p.changed.is_set() for p in queue_pages)

    await flag(h, "u3")  # a new conversation in the queue: every page re-fetches its list
    await settle(live)
    assert all(p.changed.is_set() for p in [*queue_pages, second_page])

    for page in [*queue_pages, *first_pages, second_page]:
        live.unsubscribe(page)
    for _ in range(100):
        if live._task is None:
            break
        await asyncio.sleep(0.01)
    assert live._task is None  # no listening page, no polling
