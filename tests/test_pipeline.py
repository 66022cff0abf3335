"""The whole path through the sandbox channel: event → router → handlers → outbox → delivery.

Every test here runs on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import timedelta

from sqlalchemy import func, select

from bot.app.config import KeywordRule, TaggingConfig
from bot.core import filters as f
from bot.core.routing import Handler
from storage import repos
from storage.models import Interaction, OutboxMessage
from tests.support import SandboxHarness


async def test_start_welcomes_in_the_customers_locale(config, db, clock):
    h = SandboxHarness(config, db, clock)
    await h.say("u1", "/start", name="小王", locale="zh-CN")
    await h.say("u2", "/start", name="Alice", locale="en")
    assert await h.deliver() == 2
    assert (await h.bot_messages("u1"))[0].startswith("小王，欢迎来到我们的社群")
    assert (await h.bot_messages("u2"))[0].startswith("Hi Alice, welcome to our community")


async def test_keyword_tags_the_customer_with_its_source(config, db, clock):
    h = SandboxHarness(config, db, clock)
    result = await h.say("u1", "请问周末去哪玩比较好？")
    assert "keyword_tagging" in result.handlers
    with db.sessions() as s:
        profile = repos.customer_profile(s, "sandbox", "u1", clock.now())
        tags = {t.tag.name: t.source for t in profile.tags}
    assert tags == {"周末出游": "rule:keyword:0"}


async def test_exclusions_and_ttl_of_keyword_rules(config, db, clock):
    rules = [KeywordRule(tag="早餐", keywords=["早餐"], exclude=["不吃早餐"], ttl_days=7)]
    config = config.replace(tagging=TaggingConfig(keywords=rules))
    h = SandboxHarness(config, db, clock)
    await h.say("u1", "我从来不吃早餐")
    await h.say("u2", "有什么早餐推荐")
    with db.sessions() as s:
        assert repos.customer_profile(s, "sandbox", "u1", clock.now()).tags == []
        (tag,) = repos.customer_profile(s, "sandbox", "u2", clock.now()).tags
        assert tag.expires_at == clock.now() + timedelta(days=7)
    clock.advance(8 * 24 * 3600)
    with db.sessions() as s:
        assert repos.customer_profile(s, "sandbox", "u2", clock.now()).tags == []


async def test_a_retried_platform_event_is_processed_once(config, db, clock):
    h = SandboxHarness(config, db, clock)
    first = await h.say("u1", "/start", message_id="m-1")
    again = await h.say("u1", "/start", message_id="m-1")
    assert not first.duplicate and again.duplicate
    await h.deliver()
    assert len(await h.bot_messages("u1")) == 1
    with db.sessions() as s:
        assert s.scalar(select(func.count()).select_from(Interaction)) == 1


async def test_unknown_command_gets_a_clear_answer(config, db, clock):
    h = SandboxHarness(config, db, clock)
    await h.say("u1", "/frobnicate now", locale="en")
    await h.deliver()
    assert await h.bot_messages("u1") == [
        "Sorry, I don't know the command /frobnicate. Send /help to see the commands you can use."
    ]


async def test_failing_handler_is_logged_and_isolated(config, db, clock, caplog):
    h = SandboxHarness(config, db, clock)

    def explode(ctx):
        ctx.reply("welcome", name="x")  # queued, then rolled back with the handler
        raise RuntimeError("boom")

    h.runtime.router.add(Handler("explode", explode, f.text, group=7))
    with caplog.at_level(logging.ERROR):
        result = await h.say("u1", "周末去哪玩")
    assert "keyword_tagging" in result.handlers  # the other handler still ran
    assert result.errors == ["explode: RuntimeError: boom"]
    assert any(result.event_id in r.getMessage() for r in caplog.records)
    with db.sessions() as s:
        interaction = s.scalars(select(Interaction)).one()
        assert interaction.event_id == result.event_id and "boom" in interaction.error
        texts = [m.payload["text"] for m in s.scalars(select(OutboxMessage))]
        assert not any(t.startswith("x，") for t in texts)  # the failed handler's reply is gone
        assert [
            t.tag.name for t in repos.customer_profile(s, "sandbox", "u1", clock.now()).tags
        ] == ["周末出游"]
    # The process keeps serving.
    await h.say("u1", "/start")
    await h.deliver()
    assert any("欢迎" in m for m in await h.bot_messages("u1"))


async def test_staff_owned_conversation_silences_bot_but_keeps_tagging(config, db, clock):
    h = SandboxHarness(config, db, clock)
    await h.say("u1", "/start")
    await h.deliver()
    with db.transaction() as s:
        conv = repos.load_conversation(s, "sandbox", "u1", "u1", 1, clock.now())
        conv.handoff_status = "staff"
    result = await h.say("u1", "/start")
    assert "start" not in result.handlers and result.queued == 0
    await h.say("u1", "宝宝辅食怎么选")
    await h.deliver()
    assert len(await h.bot_messages("u1")) == 1
    with db.sessions() as s:
        assert [
            t.tag.name for t in repos.customer_profile(s, "sandbox", "u1", clock.now()).tags
        ] == ["母婴"]


async def test_group_messages_record_membership_and_reply_to_the_member(config, db, clock):
    h = SandboxHarness(config, db, clock)
    await h.say("u1", "/start", chat="group-1", name="小王")
    await h.deliver()
    messages = await h.sandbox.transcript("group-1")
    assert [(m["direction"], m["user_id"]) for m in messages] == [("in", "u1"), ("out", "u1")]
    from storage.models import Group, Membership

    with db.sessions() as s:
        group = s.scalars(select(Group)).one()
        assert (group.external_id, group.title) == ("group-1", "Siyu 体验群")
        assert s.scalars(select(Membership)).one().active


async def test_restart_keeps_customers_tags_and_conversation_state(config, db, clock):
    h = SandboxHarness(config, db, clock)
    await h.say("u1", "周末去哪玩", name="小王")
    with db.transaction() as s:
        conv = repos.load_conversation(s, "sandbox", "u1", "u1", 1, clock.now())
        conv.flow, conv.step, conv.state = (
            "weekend_trip_inquiry",
            "dates",
            {"destination": "千岛湖"},
        )
    from storage.db import Database

    reopened = Database(db.url)
    try:
        h2 = SandboxHarness(config, reopened, clock)
        await h2.say("u1", "/start")
        with reopened.sessions() as s:
            p = repos.customer_profile(s, "sandbox", "u1", clock.now())
            assert p.customer.display_name == "小王"
            assert [t.tag.name for t in p.tags] == ["周末出游"]
            (conv,) = p.conversations
            assert (conv.flow, conv.step, conv.state) == (
                "weekend_trip_inquiry",
                "dates",
                {"destination": "千岛湖"},
            )
            assert len(p.interactions) == 2
    finally:
        reopened.close()


async def test_bad_sandbox_input_is_refused_precisely(config, db, clock):
    import pytest

    from bot.adapters.sandbox import SandboxInputError

    h = SandboxHarness(config, db, clock)
    for data, message in [
        ([], "expected a JSON object"),
        ({"text": "hi"}, "'user_id' is required"),
        ({"user_id": "u1", "text": "hi", "chat_id": "group-99"}, "unknown chat"),
        ({"user_id": "u1"}, "nothing to send"),
        ({"user_id": "u1", "text": "hi", "locale": "fr"}, "'locale'"),
    ]:
        with pytest.raises(SandboxInputError, match=message):
            await h.sandbox.receive(data)
    with db.sessions() as s:
        assert s.scalar(select(func.count()).select_from(Interaction)) == 0


def test_router_rejects_duplicate_handler_names(config, sqlite_db, clock):
    import pytest

    h = SandboxHarness(config, sqlite_db, clock)
    with pytest.raises(ValueError, match="already registered"):
        h.runtime.router.add(Handler("start", lambda c: None, f.command("start")))


def test_config_replace_keeps_other_sections(config):
    other = config.replace(web=replace(config.web, port=9999))
    assert other.web.port == 9999 and other.database == config.database
