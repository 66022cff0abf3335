"""Batch-wide loading in the inbound pipeline: a batch claims its platform ids and loads (or
creates) its identities, customers and conversations in a few statements, and tagging reads
the batch's tags and interest scores without a query per event; one customer per person,
order and handler isolation kept. Every test runs on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import re
from collections import Counter

from sqlalchemy import event, func, select

from bot.app.config import KeywordRule, PipelineConfig, TaggingConfig
from bot.core import filters as f
from bot.core.routing import Handler
from storage import repos
from storage.models import Conversation, Customer, Identity, Interaction, ProcessedInbound
from storage.tag_scores import TagInterest
from tests.support import SandboxHarness


def harness(config, db, clock, *, batch_size: int = 50, lanes: int = 1) -> SandboxHarness:
    config = config.replace(
        pipeline=PipelineConfig(batch_size=batch_size, lanes=lanes),
        tagging=TaggingConfig(keywords=[KeywordRule(tag="周末出游", keywords=["周末去哪"])]),
    )
    return SandboxHarness(config, db, clock)


def count_statements(db) -> Counter[str]:
    """Counts the statements the database runs by their first words and table."""
    seen: Counter[str] = Counter()

    def record(_conn, _cursor, statement, *_args) -> None:
        match = re.match(
            r"\s*(SELECT .*?\sFROM\s+(\w+)|INSERT INTO (\w+)|UPDATE (\w+))", statement, re.S
        )
        if match:
            kind = statement.split()[0]
            seen[f"{kind} {match.group(2) or match.group(3) or match.group(4)}"] += 1

    event.listen(db.engine, "before_cursor_execute", record)
    return seen


async def test_events_of_new_customers_in_one_batch_create_each_customer_once(config, db, clock):
    h = harness(config, db, clock)
    users, per_user = 6, 15
    results = await asyncio.gather(
        *(h.say(f"new{u}", f"周末去哪 {n}") for n in range(per_user) for u in range(users))
    )
    assert h.runtime.pipeline.largest_batch > users  # batches held several events per person
    assert all(not r.duplicate and not r.errors for r in results)
    with db.sessions() as s:
        assert s.scalar(select(func.count()).select_from(Customer)) == users
        assert s.scalar(select(func.count()).select_from(Identity)) == users
        assert s.scalar(select(func.count()).select_from(Conversation)) == users
        assert s.scalar(select(func.count()).select_from(Interaction)) == users * per_user
        per_customer = s.execute(
            select(Interaction.customer_id, func.count()).group_by(Interaction.customer_id)
        ).all()
        assert sorted(n for _, n in per_customer) == [per_user] * users
        # every event of the batch bumped its customer's interest once (rows shared in a batch)
        assert sorted(s.scalars(select(TagInterest.hits))) == [per_user] * users


async def test_a_batch_loads_its_rows_in_a_few_queries_not_one_per_event(config, db, clock):
    h = harness(config, db, clock, batch_size=100)
    users = 40
    await asyncio.gather(*(h.say(f"u{u}", "周末去哪") for u in range(users)))  # first contacts
    seen = count_statements(h.db)
    before = h.runtime.pipeline.batches
    await asyncio.gather(
        *(h.say(f"u{u}", f"周末去哪 again {n}") for n in range(3) for u in range(users))
    )
    batches = h.runtime.pipeline.batches - before
    assert batches < users  # a burst: most events shared a batch
    # one claim statement, one identity query and one conversation query per batch, and
    # the tags and interest scores of a batch's customers once per batch, not per event
    assert seen["INSERT processed_inbound"] == batches
    assert seen["SELECT identities"] == batches
    assert seen["SELECT conversations"] == batches
    assert seen["SELECT customer_tags"] <= batches
    assert seen["SELECT tag_interest"] <= batches
    assert seen["SELECT tags"] == 0  # the tag id is known after the first contacts
    assert seen["INSERT interactions"] == users * 3


async def test_a_failing_handler_in_a_batch_loses_only_its_own_tags(config, db, clock):
    h = harness(config, db, clock)

    def tag_then_maybe_fail(ctx):
        ctx.tag("试过", source="test")
        if "坏" in ctx.event.text:
            raise RuntimeError("refused")

    h.runtime.router.add(Handler("tag_then_maybe_fail", tag_then_maybe_fail, f.text, group=9))
    # u0's first message fails after tagging; its later ones succeed in the same batch, and
    # u1 only ever fails: its tag must not survive the rollback of its handler.
    texts = [
        ("u0", "周末去哪 坏"),
        ("u1", "周末去哪 坏"),
        ("u0", "周末去哪"),
        ("u1", "周末去哪 坏"),
    ]
    texts += [("u0", "周末去哪")] * 5
    results = await asyncio.gather(*(h.say(u, t) for u, t in texts))
    assert h.runtime.pipeline.largest_batch > 1
    assert [bool(r.errors) for r in results] == [True, True, False, True] + [False] * 5
    assert all("keyword_tagging" in r.handlers for r in results)  # the other handler kept
    with db.sessions() as s:
        tags = {
            u: sorted(t.tag.name for t in repos.customer_profile(s, "sandbox", u, clock.now()).tags)
            for u in ("u0", "u1")
        }
        assert tags == {"u0": ["周末出游", "试过"], "u1": ["周末出游"]}
        assert s.scalar(select(func.count()).select_from(ProcessedInbound)) == len(texts)
        hits = dict(
            s.execute(
                select(Identity.external_id, TagInterest.hits).join(
                    TagInterest, TagInterest.customer_id == Identity.customer_id
                )
            ).all()
        )
        assert hits == {"u0": 7, "u1": 2}


async def test_a_retry_in_the_same_batch_is_a_duplicate_of_its_first_delivery(config, db, clock):
    h = harness(config, db, clock)
    events = [  # handed to the runtime in this order, as a platform's backlog
        h.sandbox.to_event(
            h.sandbox.parse({"user_id": "u1", "text": f"周末去哪 {i}", "message_id": f"m{i % 3}"})
        )
        for i in range(9)
    ]
    events.append(events[1])  # the very same event handed over twice, in the same batch
    results = await asyncio.gather(*(h.runtime.handle(e) for e in events))
    assert h.runtime.pipeline.largest_batch > 3
    assert [r.duplicate for r in results] == [False] * 3 + [True] * 7
    with db.sessions() as s:
        assert s.scalars(select(Interaction.text).order_by(Interaction.id)).all() == [
            "周末去哪 0",
            "周末去哪 1",
            "周末去哪 2",
        ]
