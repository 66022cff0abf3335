"""The batched inbound pipeline: bursts are routed in batches (one transaction each) with
every guarantee of one-at-a-time routing kept. Every test runs on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace

import pytest
from sqlalchemy import func, select, text

from bot.app.config import PipelineConfig
from bot.core import filters as f
from bot.core.routing import Handler
from storage import repos
from storage.db import Database
from storage.models import Conversation, Interaction, OutboxMessage, ProcessedInbound
from tests.support import SandboxHarness


def harness(config, db, clock, *, batch_size: int = 50, lanes: int = 4) -> SandboxHarness:
    config = config.replace(pipeline=PipelineConfig(batch_size=batch_size, lanes=lanes))
    return SandboxHarness(config, db, clock)


def poison_interactions(db: Database) -> None:
    """Make the database itself refuse one message's interaction row (as a constraint or a
    lost connection would), so the router fails outside any handler for that event."""
    with db.transaction() as s:
        if db.is_postgres:
            s.execute(
                text(
                    "CREATE FUNCTION poison() RETURNS trigger AS $$ BEGIN "
                    "IF NEW.text = 'poison' THEN RAISE EXCEPTION 'poisoned row'; END IF; "
                    "RETURN NEW; END $$ LANGUAGE plpgsql"
                )
            )
            s.execute(
                text(
                    "CREATE TRIGGER poison BEFORE INSERT ON interactions "
                    "FOR EACH ROW EXECUTE FUNCTION poison()"
                )
            )
        else:
            s.execute(
                text(
                    "CREATE TRIGGER poison BEFORE INSERT ON interactions "
                    "WHEN NEW.text = 'poison' BEGIN SELECT RAISE(ABORT, 'poisoned row'); END"
                )
            )


async def test_a_lone_event_is_routed_at_once_and_a_burst_fills_batches(config, db, clock):
    h = harness(config, db, clock)
    await h.say("u1", "/start")
    assert (h.runtime.pipeline.batches, h.runtime.pipeline.largest_batch) == (1, 1)
    await asyncio.gather(*(h.say(f"u{i}", "/start") for i in range(200)))
    pipeline = h.runtime.pipeline
    assert pipeline.largest_batch > 1, "a burst must be routed in batches"
    assert pipeline.batches < 100
    with db.sessions() as s:
        assert s.scalar(select(func.count()).select_from(Interaction)) == 201
        assert s.scalar(select(func.count()).select_from(OutboxMessage)) == 201


async def test_a_burst_with_a_failing_handler_keeps_the_rest_and_records_the_failures(
    config, db, clock, caplog
):
    h = harness(config, db, clock)

    def fragile(ctx):
        ctx.reply("welcome", name="fragile")  # queued, then rolled back with the handler
        if "坏" in (ctx.event.text or ""):
            raise RuntimeError("cannot handle this one")

    h.runtime.router.add(Handler("fragile", fragile, f.text, group=7))
    texts = [("周末去哪玩 坏" if i % 5 == 0 else "周末去哪玩") for i in range(150)]
    with caplog.at_level(logging.ERROR):
        results = await asyncio.gather(
            *(h.say(f"u{i}", t, message_id=f"m{i}") for i, t in enumerate(texts))
        )
    assert h.runtime.pipeline.largest_batch > 1
    failed = {r.event_id for r in results if r.errors}
    assert len(failed) == 30
    assert all(
        r.errors == ["fragile: RuntimeError: cannot handle this one"] for r in results if r.errors
    )
    assert all("keyword_tagging" in r.handlers for r in results)  # other handlers kept
    with db.sessions() as s:
        rows = s.execute(select(Interaction.event_id, Interaction.error)).all()
        assert len(rows) == 150  # every event recorded, failed or not
        assert {e for e, err in rows if err} == failed
        assert all("cannot handle" in err for _, err in rows if err)
        # the replies of the handler that failed are gone, the others' are queued once each
        texts_out = [m.payload["text"] for m in s.scalars(select(OutboxMessage))]
        assert sum(t.startswith("fragile，") for t in texts_out) == 120
        for i in (0, 1, 5, 6):
            tags = [
                t.tag.name for t in repos.customer_profile(s, "sandbox", f"u{i}", clock.now()).tags
            ]
            assert tags == ["周末出游"]
    assert sum(1 for r in caplog.records if "cannot handle" in r.getMessage() or r.exc_info) >= 30


async def test_an_event_the_database_refuses_fails_alone_and_its_batch_is_kept(config, db, clock):
    poison_interactions(db)
    h = harness(config, db, clock)
    texts = ["poison" if i in (7, 40) else f"hello {i}" for i in range(120)]
    results = await asyncio.gather(
        *(h.say(f"u{i % 30}", t, message_id=f"m{i}") for i, t in enumerate(texts)),
        return_exceptions=True,
    )
    errors = [i for i, r in enumerate(results) if isinstance(r, BaseException)]
    assert errors == [7, 40]
    assert "poisoned row" in str(results[7])
    assert h.runtime.pipeline.retried_batches >= 1  # a shared batch was rolled back and redone
    with db.sessions() as s:
        stored = s.scalars(select(Interaction.text)).all()
        assert sorted(stored) == sorted(t for t in texts if t != "poison")
        keys = set(s.scalars(select(ProcessedInbound.key)))
        assert len(keys) == 118  # the refused events stay unclaimed: a retry routes them
    again = await h.say("u7", "hello again", message_id="m7")
    assert not again.duplicate


async def test_retries_in_one_burst_are_processed_once(config, db, clock):
    h = harness(config, db, clock)
    results = await asyncio.gather(
        *(h.say(f"u{i % 10}", "/start", message_id=f"m{i % 40}") for i in range(200))
    )
    assert sum(not r.duplicate for r in results) == 40
    with db.sessions() as s:
        assert s.scalar(select(func.count()).select_from(Interaction)) == 40
        assert s.scalar(select(func.count()).select_from(OutboxMessage)) == 40
        assert s.scalar(select(func.count(func.distinct(Interaction.customer_id)))) == 10


@pytest.mark.parametrize("lanes", [1, 4])
async def test_each_conversation_keeps_its_order_under_concurrency(config, db, clock, lanes):
    h = harness(config, db, clock, batch_size=16, lanes=lanes)

    def remember(ctx):
        seen = list(ctx.conversation.state.get("seen", []))
        ctx.conversation.state = {**ctx.conversation.state, "seen": [*seen, ctx.event.text]}

    h.runtime.router.add(Handler("remember", remember, f.text, group=8, during_handoff=True))
    users, per_user = 12, 25
    # The adapter's events, handed to the runtime in this order without waiting for any
    # answer, as a platform delivering a backlog does: senders interleaved.
    events = [
        h.sandbox.to_event(h.sandbox.parse({"user_id": f"u{u}", "text": f"{u}-{n}"}))
        for n in range(per_user)
        for u in range(users)
    ]
    await asyncio.gather(*(h.runtime.handle(e) for e in events))
    pipeline = h.runtime.pipeline
    assert pipeline.largest_batch > 1
    if lanes > 1:
        assert pipeline.peak_lanes_busy > 1  # conversations proceeded side by side
    with db.sessions() as s:
        for u in range(users):
            conv = s.scalars(select(Conversation).where(Conversation.user_id == f"u{u}")).one()
            assert conv.state["seen"] == [f"{u}-{n}" for n in range(per_user)]
            customer = repos.find_identity(s, "sandbox", f"u{u}").customer_id
            recorded = s.scalars(
                select(Interaction.text)
                .where(Interaction.customer_id == customer)
                .order_by(Interaction.id)
            ).all()
            assert recorded == [f"{u}-{n}" for n in range(per_user)]


def test_pipeline_settings_are_bounded(tmp_path):
    from bot.app.config import ConfigError, load_config

    cfg = tmp_path / "siyu.toml"
    for body, problem in [
        ("[pipeline]\nbatch_size = 0\n", "pipeline.batch_size: must be between 1 and 1000"),
        ("[pipeline]\nbatch_size = 5000\n", "pipeline.batch_size: must be between 1 and 1000"),
        ("[pipeline]\nlanes = 0\n", "pipeline.lanes: must be between 1 and 64"),
    ]:
        cfg.write_text(body, encoding="utf-8")
        with pytest.raises(ConfigError, match=problem):
            load_config(cfg, environ={})
    cfg.write_text("[pipeline]\nbatch_size = 20\nlanes = 2\n", encoding="utf-8")
    assert load_config(cfg, environ={}).pipeline == replace(
        PipelineConfig(), batch_size=20, lanes=2
    )
