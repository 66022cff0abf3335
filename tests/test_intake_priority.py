"""Callbacks are answered while routing is busy: the journal's writes go ahead of routing in
the database's threads, a callback is acknowledged at once when routing's queue alone
would outlast its reply budget, and group commit without savepoints still isolates a
failing unit."""

from __future__ import annotations

import asyncio
import threading

import pytest
from sqlalchemy import insert, select

from bot.adapters.wechat.common import Background, handle_within
from storage.db import Database
from storage.group_commit import GroupCommit
from storage.models import Tag
from tests.test_pipeline_batches import harness


def hold_threads(db: Database, count: int) -> threading.Event:
    """Occupy ``count`` database threads until the returned event is set."""
    release = threading.Event()
    for _ in range(count):
        db._executor.submit(0, release.wait)
    return release


async def test_work_run_first_is_taken_before_work_queued_earlier(tmp_path):
    db = Database(f"sqlite:///{tmp_path}/order.db")  # one database thread
    try:
        release = hold_threads(db, 1)
        order: list[str] = []
        later = [asyncio.ensure_future(db.run(order.append, f"routing {i}")) for i in range(3)]
        await asyncio.sleep(0)
        first = asyncio.ensure_future(db.run_first(order.append, "journal"))
        await asyncio.sleep(0)
        release.set()
        await asyncio.gather(*later, first)
        assert order == ["journal", "routing 0", "routing 1", "routing 2"]
    finally:
        db.close()


async def test_a_closed_database_refuses_new_work(tmp_path):
    db = Database(f"sqlite:///{tmp_path}/closed.db")
    assert await db.run(lambda: 42) == 42
    db.close()
    with pytest.raises(RuntimeError, match="shutdown"):
        await db.run(lambda: 1)


async def test_group_commit_without_savepoints_runs_a_failing_batch_again_unit_by_unit(db):
    db.migrate()
    group = GroupCommit(db, savepoints=False)
    release = hold_threads(db, 8 if db.is_postgres else 1)

    def add(session, name: str) -> str:
        if name == "bad":
            raise ValueError("refused unit")
        session.execute(insert(Tag).values(name=name))
        return name

    units = [asyncio.ensure_future(group.run(add, n)) for n in ("a", "b", "bad", "c")]
    await asyncio.sleep(0.05)
    release.set()
    outcomes = await asyncio.gather(*units, return_exceptions=True)
    assert outcomes[:2] == ["a", "b"] and outcomes[3] == "c"
    assert isinstance(outcomes[2], ValueError)
    assert group.largest_batch == 4  # they were tried together first
    with db.sessions() as s:
        assert sorted(s.scalars(select(Tag.name))) == ["a", "b", "c"]


async def test_an_answer_does_not_wait_for_a_queue_longer_than_its_budget():
    background = Background()
    proceed = asyncio.Event()
    done: list[str] = []

    async def work() -> str:
        await proceed.wait()  # set only after handle_within returned
        done.append("routed")
        return "routed"

    # A budget of an hour: only the queue's expected wait lets the call return first.
    answered = handle_within(background, work, 3600.0, "test", queue_wait=3601.0)
    assert await asyncio.wait_for(answered, 30) is None
    proceed.set()
    await background.drain(timeout=5)
    assert done == ["routed"]  # acknowledged at once, still routed


async def test_a_short_queue_is_waited_for():
    background = Background()
    assert await handle_within(background, _quick, 5.0, "test", queue_wait=1.0) == "routed"


async def _quick() -> str:
    return "routed"


async def test_the_expected_wait_follows_the_routing_queue(config, sqlite_db, clock):
    h = harness(config, sqlite_db, clock, batch_size=20, lanes=2)
    pipeline = h.runtime.pipeline

    def event(i: int):
        data = {
            "user_id": f"u{i % 7}",
            "chat_id": f"u{i % 7}",
            "text": f"消息{i}",
            "display_name": "",
            "locale": None,
        }
        return h.sandbox.to_event(h.sandbox.parse(data | {"message_id": f"m{i}"}))

    release = hold_threads(sqlite_db, 1)
    handled = [asyncio.ensure_future(h.runtime.handle(event(i))) for i in range(60)]
    await asyncio.sleep(0.1)
    assert pipeline.expected_wait() == float("inf")  # a deep queue, nothing settled lately
    release.set()
    await asyncio.gather(*handled)
    assert pipeline.expected_wait() == 0.0  # nothing waiting
    release = hold_threads(sqlite_db, 1)
    handled = [asyncio.ensure_future(h.runtime.handle(event(i))) for i in range(60, 110)]
    await asyncio.sleep(0.1)
    # 50 waiting, measured against the rate of the 60 settled lately
    assert 0.0 < pipeline.expected_wait() < float("inf")
    release.set()
    await asyncio.gather(*handled)
