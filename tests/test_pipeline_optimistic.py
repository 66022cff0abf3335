"""Optimistic routing: handlers run without savepoints first; a batch in which one raises is
rolled back and routed again with a savepoint per handler. Whatever the path, the outcome
is the one of isolated routing: the failing handler loses its own work only, events of a
conversation keep their order, a later clear wins over an earlier write. SQLite and
PostgreSQL."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select

from bot.core import filters as f
from bot.core.routing import Handler
from bot.customers.forget import forget_customer
from storage import repos, tag_ids
from storage.models import Conversation, Interaction, OutboxMessage
from tests.test_pipeline_batches import harness
from tests.test_pipeline_prefetch import count_statements


def conversation_of(db, user: str) -> Conversation:
    with db.sessions() as s:
        return s.scalars(select(Conversation).where(Conversation.user_id == user)).one()


async def test_a_failing_handler_loses_its_own_writes_and_its_neighbours_keep_theirs(
    config, db, clock
):
    h = harness(config, db, clock)

    def note(ctx):  # every event: a tag, a reply and a state change
        ctx.tag("来过", source="test")
        ctx.reply("welcome", name="note")
        ctx.state["notes"] = [*ctx.state.get("notes", []), ctx.event.text]
        ctx.save_state()

    def fragile(ctx):  # its writes come first, then it fails on some events
        ctx.tag("脆弱", source="test")
        ctx.reply("welcome", name="fragile")
        ctx.state["fragile"] = ctx.event.text
        if "坏" in ctx.event.text:
            raise RuntimeError("refused")

    h.runtime.router.add(Handler("note", note, f.text, group=7))
    h.runtime.router.add(Handler("fragile", fragile, f.text, group=8))
    texts = {f"u{i}": ("坏" if i % 4 == 0 else "好") for i in range(40)}
    results = await asyncio.gather(*(h.say(u, t) for u, t in texts.items()))
    pipeline = h.runtime.pipeline
    assert pipeline.largest_batch > 1
    assert pipeline.optimistic_retries >= 1  # the optimistic pass of a batch was redone
    assert pipeline.retried_batches == 0  # isolated, in the same batch: no event alone
    failed = {r.event_id for r in results if r.errors}
    assert len(failed) == 10
    assert all("note" in r.handlers and "fragile" not in r.handlers for r in results if r.errors)
    with db.sessions() as s:
        texts_out = [m.payload["text"] for m in s.scalars(select(OutboxMessage))]
        keys = s.scalars(select(OutboxMessage.idempotency_key)).all()
        assert len(keys) == len(set(keys))  # nothing queued twice by the redo
        assert sum(t.startswith("note，") for t in texts_out) == 40
        assert sum(t.startswith("fragile，") for t in texts_out) == 30
        errors = dict(s.execute(select(Interaction.event_id, Interaction.error)).all())
        assert {e for e, err in errors.items() if err} == failed
        for user, text in texts.items():
            tags = [
                t.tag.name for t in repos.customer_profile(s, "sandbox", user, clock.now()).tags
            ]
            assert sorted(tags) == (["来过"] if text == "坏" else sorted(["来过", "脆弱"]))
    for user, text in texts.items():
        state = conversation_of(db, user).state
        assert state["notes"] == [text]
        assert ("fragile" in state) is (text == "好")


async def test_a_conversation_keeps_its_order_through_a_redone_batch(config, db, clock):
    h = harness(config, db, clock, batch_size=50, lanes=2)

    def append(ctx):
        ctx.state["seen"] = [*ctx.state.get("seen", []), ctx.event.text]
        ctx.save_state()
        if ctx.event.text.endswith("坏"):
            raise RuntimeError("refused")

    h.runtime.router.add(Handler("append", append, f.text, group=7, during_handoff=True))
    sent = {f"u{u}": [f"{u}-{n}" + ("坏" if n == 3 else "") for n in range(8)] for u in range(6)}
    await asyncio.gather(
        *(h.say(u, t) for n in range(8) for u, ts in sent.items() for t in [ts[n]])
    )
    assert h.runtime.pipeline.largest_batch > 1
    assert h.runtime.pipeline.optimistic_retries >= 1
    for user, texts in sent.items():
        # each event once, in the order said; the failing one's change rolled back alone
        assert conversation_of(db, user).state["seen"] == [t for t in texts if "坏" not in t]


async def test_forgetting_a_customer_wins_over_the_same_batch_s_earlier_writes(config, db, clock):
    h = harness(config, db, clock)

    def forget(ctx):
        if ctx.event.text == "忘记我":
            forget_customer(ctx.session, "sandbox", ctx.event.actor.user_id, by="test", now=ctx.now)

    h.runtime.router.add(Handler("forget", forget, f.text, group=7, during_handoff=True))
    first = await h.say("u1", "你好")  # the customer exists before the burst
    with db.sessions() as s:
        customer_id = s.scalar(
            select(Interaction.customer_id).where(Interaction.event_id == first.event_id)
        )
    said = ["我的电话是 13800000000", "住在杭州", "忘记我"]
    others = [h.say(f"o{i}", "周末去哪") for i in range(30)]  # company for the batch
    await asyncio.gather(*others[:15], *(h.say("u1", t) for t in said), *others[15:])
    assert h.runtime.pipeline.largest_batch > 1
    with db.sessions() as s:
        conv = s.scalars(select(Conversation).where(Conversation.customer_id == customer_id)).one()
        assert conv.user_id.startswith("forgotten-")
        assert conv.last_customer_message is None  # the clear came last and stays
        texts = s.scalars(
            select(Interaction.text).where(Interaction.customer_id == customer_id)
        ).all()
        assert set(texts) == {""}  # every earlier text cleared, this batch's too
        assert s.scalar(select(func.count()).select_from(Interaction)) == 1 + 3 + 30


def test_a_tag_id_is_shared_with_other_transactions_only_once_committed(db):
    db.migrate()
    with db.transaction() as writer:
        with writer.begin_nested():  # a handler's savepoint, released
            created = tag_ids.tag_id(writer, "新标签")
        assert tag_ids.find_tag_id(writer, "新标签") == created
        with db.sessions() as other:  # another lane, meanwhile: the row is not there
            assert tag_ids.find_tag_id(other, "新标签") is None
    seen = count_statements(db)
    with db.sessions() as other:
        assert tag_ids.find_tag_id(other, "新标签") == created
    assert seen["SELECT tags"] == 0  # known to the process once committed


def test_a_tag_id_seen_by_a_rolled_back_transaction_is_not_shared(db):
    db.migrate()
    with pytest.raises(RuntimeError), db.transaction() as writer:
        created = tag_ids.tag_id(writer, "短命")
        assert tag_ids.find_tag_id(writer, "短命") == created
        raise RuntimeError("rolled back")
    with db.sessions() as other:
        assert tag_ids.find_tag_id(other, "短命") is None
