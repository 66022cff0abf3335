"""Budgets on what managers type: templates (time, loop iterations, size) and saved segments
(nesting, expansion). A breach is refused when the text is saved, and stays bounded later."""

from __future__ import annotations

from dataclasses import replace

import pytest
from sqlalchemy import event, func, select, update

from bot.app.services import Services
from bot.core.i18n import t
from bot.core.template_budget import USER_BUDGET, BudgetExceeded, RenderBudget
from bot.core.templating import Renderer, TemplateRenderError
from bot.customers.segments import (
    MAX_CONDITIONS,
    MAX_SEGMENT_DEPTH,
    SegmentBudgetError,
    count_segment,
)
from bot.marketing.campaigns.manage import create_campaign, launch
from bot.marketing.campaigns.spec import parse_spec
from storage.campaigns import Campaign
from storage.models import Group, OutboxMessage
from storage.segments import SavedSegment
from tests.campaign_support import make_customer
from tests.support import SandboxHarness

#: 150 million iterations: held the whole process ~19 s before budgets.
NESTED = "{% for i in range(100000) %}{% for j in range(1500) %}x{% endfor %}{% endfor %}"
GROUP = "group-1"
FALLBACK = "{name}，欢迎入群！"  # templates/messages/manage_welcome_fallback.zh-CN.j2


@pytest.fixture
def h(config, sqlite_db, clock) -> SandboxHarness:
    return SandboxHarness(config, sqlite_db, clock)


def budget_texts(locale: str) -> list[str]:
    """The refusals of the typed-text budget (which limit a render meets first depends on
    the machine's load: the limits themselves are tested one by one below)."""
    b = USER_BUDGET
    return [
        t(f"budget.template.{kind}", locale, limit=f"{limit:g}")
        for kind, limit in (("time", b.seconds), ("iterations", b.iterations), ("size", b.size))
    ]


async def _last_reply(h: SandboxHarness, chat: str) -> str:
    await h.deliver()
    return (await h.bot_messages(chat))[-1]


# -- templates ------------------------------------------------------------------------------


async def test_the_nested_loop_welcome_is_refused_when_saved(h):
    result = await h.say("manager", f"/welcome {NESTED}", chat=GROUP, locale="en")
    assert result.handlers == ["manage_welcome"] and result.errors == []
    reply = await _last_reply(h, GROUP)
    assert any(reply.endswith(text) for text in budget_texts("en"))
    with h.db.sessions() as s:
        assert s.scalar(select(Group.welcome_text).where(Group.external_id == GROUP)) is None


async def test_a_welcome_that_grows_past_the_size_budget_is_refused_in_chinese(h):
    doubling = "{% set a = '哈哈哈哈哈哈哈哈' %}" + "{% set a = a ~ a %}" * 30 + "{{ a }}"
    await h.say("manager", f"/welcome {doubling}", chat=GROUP, locale="zh-CN")
    reply = await _last_reply(h, GROUP)
    assert any(text in reply for text in budget_texts("zh-CN"))


async def test_a_stored_welcome_over_budget_is_bounded_when_members_join(h):
    """A welcome saved before budgets existed: the join is greeted with the plain
    fallback, and the event loop stays free (the render stops at the budget)."""
    await h.say("manager", "/welcome 欢迎 {{ name }}", chat=GROUP)
    with h.db.transaction() as s:
        s.execute(update(Group).where(Group.external_id == GROUP).values(welcome_text=NESTED))
    result = await h.sandbox.receive(
        {"user_id": "newbie", "chat_id": GROUP, "display_name": "Nina", "join": True}
    )
    assert result.handlers[-1] == "group_welcome" and result.errors == []
    assert await _last_reply(h, GROUP) == FALLBACK.format(name="Nina")


async def test_campaign_text_over_budget_is_refused_when_saved(h):
    text = f'/campaign new flood segment="channel:sandbox" text="{NESTED}" pilot=0% holdout=0%'
    result = await h.say("manager", text, locale="en")
    assert result.errors == []
    reply = await _last_reply(h, "manager")
    assert any(text in reply for text in budget_texts("en"))
    with h.db.sessions() as s:
        assert s.scalar(select(func.count()).select_from(Campaign)) == 0


def test_campaign_text_stored_over_budget_drops_only_at_send(db, config, clock):
    config = config.replace(database=replace(config.database, url=db.url))
    for i in range(3):
        make_customer(db, f"c{i}", clock.now(), tags=("早餐",))
    services = Services(db, config, Renderer(), clock)
    with db.transaction() as s:
        spec = parse_spec("flood segment=tag:早餐 pilot=0 holdout=0 text='早安'", config)
        campaign = create_campaign(
            s, spec, config=config, renderer=services.renderer, now=clock.now()
        )
        campaign.variants = {
            "items": [{"name": "main", "template": "", "text": NESTED, "weight": 1}]
        }
        campaign_id = campaign.id
    result = launch(services, campaign_id)
    assert dict(result.dropped) == {"render_error": 3} and result.queued == 0
    with db.sessions() as s:
        assert s.scalar(select(func.count()).select_from(OutboxMessage)) == 0


#: Each way a typed template could spend the process, and the budget that stops it.
ATTACKS = [
    (NESTED, "size"),  # one character per iteration: the output outgrows the budget first
    ("{% for i in range(100000) %}{% for j in range(1500) %}{% endfor %}{% endfor %}", "iterations"),
    ("{% for a in 'x' * 7000 %}{% for b in 'y' * 7000 %}{% endfor %}{% endfor %}", "iterations"),
    ("{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(40) }}",
     "iterations"),
    ("{{ 'x' * 100000000 }}", "size"),
    ("{% set a = 'xxxxxxxx' %}" + "{% set a = a ~ a %}" * 30, "size"),
    ("{% set a = 'xxxxxxxx' %}" + "{% set a = a + a %}" * 30, "size"),
    ("{% set ns = namespace(x='xx') %}{% for i in range(40) %}{% set ns.x = ns.x ~ ns.x %}"
     "{% endfor %}", "size"),
    ("{{ 'x' | center(1000000000) }}", "size"),
    ("{{ '%0999999999d' | format(1) }}", "size"),
    ("{{ '%0999999999d' % 1 }}", "size"),
    ("{{ 'x'.ljust(999999999) }}", "size"),
    ("{{ '{:>999999999}'.format(1) }}", "size"),
    ("{{ 10 ** 100000000 }}", "size"),
    ("{{ range(7000) | join('y' * 7000) }}", "size"),
    ("{{ ('x' * 7000) | replace('x', 'y' * 7000) }}", "size"),
    ("{% for i in range(9000) %}x{% endfor %}", "size"),
]  # fmt: skip


@pytest.mark.parametrize(("source", "kind"), ATTACKS)
def test_every_way_to_spend_the_budget_is_refused(source, kind):
    # the typed-text budget with a patient clock, so a loaded machine cannot change which
    # limit is hit first
    patient = replace(USER_BUDGET, seconds=60)
    with pytest.raises(TemplateRenderError) as info:
        Renderer().render_string(source, budget=patient, name="n")
    assert isinstance(info.value.__cause__, BudgetExceeded)
    assert info.value.__cause__.kind == kind


def test_the_clock_stops_what_the_counts_would_allow():
    roomy = RenderBudget(seconds=0.05, iterations=10**12, size=10**12)
    silent = "{% for i in range(100000) %}{% for j in range(1500) %}{% endfor %}{% endfor %}"
    with pytest.raises(TemplateRenderError) as info:
        Renderer().render_string(silent, budget=roomy)
    assert info.value.__cause__.kind == "time"


def test_ordinary_templates_render_as_before():
    source = (
        "{% for tag in tags %}{{ tag }}{{ '、' if not loop.last }}{% endfor %} · "
        "{{ name ~ '!' }} {{ '%.2f' % price }} {{ 3 * 2 }} {{ 'ab' * 3 }} {{ name | center(9) }}"
    )
    out = Renderer().render_string(source, name="Amy", tags=["早餐", "母婴"], price=3.5)
    assert out == "早餐、母婴 · Amy! 3.50 6 ababab    Amy"


# -- segments -------------------------------------------------------------------------------


def _refs(name: str, times: int) -> str:
    return " or ".join([f"segment:{name}"] * times)


async def test_saved_segments_that_nest_or_multiply_are_refused_when_saved(h):
    async def say(user: str, text: str, locale: str = "en"):
        return await h.say(user, text, locale=locale)

    await say("manager", "/segment save s0 tag:a or tag:b")
    for level in (1, 2, 3):  # 2 → 8 → 32 → 128 tests when expanded
        result = await say("manager", f"/segment save s{level} {_refs(f's{level - 1}', 4)}")
        assert result.errors == []
    await say("manager", f"/segment save s4 {_refs('s3', 4)}")  # 512
    assert await _last_reply(h, "manager") == "Not done: " + t(
        "budget.segment.size", "en", limit=MAX_CONDITIONS
    )
    await say("manager", "/segment save d0 tag:a")
    for level in range(1, MAX_SEGMENT_DEPTH + 1):
        await say("manager", f"/segment save d{level} segment:d{level - 1}")
    assert await _last_reply(h, "manager") == "Not done: " + t(
        "budget.segment.depth", "en", limit=MAX_SEGMENT_DEPTH
    )
    with h.db.sessions() as s:
        names = set(s.scalars(select(SavedSegment.name)))
    assert names == {"s0", "s1", "s2", "s3", "d0", "d1", "d2", "d3"}

    # the 446-character expression: 32 references to a saved segment of 128 tests
    attack = f"({_refs('s3', 32)})"
    assert len(attack) == 446
    await say("manager", f"/segment {attack}")
    assert await _last_reply(h, "manager") == "Not done: " + t(
        "budget.segment.size", "en", limit=MAX_CONDITIONS
    )


def test_a_segment_expansion_over_budget_does_no_database_work(db, config, clock):
    """Rows saved before the budget (8 levels, each referring 4 times to the one below:
    131,072 tests): counting refuses after reading each saved expression once, and never
    queries customers."""
    now = clock.now()
    with db.transaction() as s:
        s.add(SavedSegment(name="n0", expression="tag:a or tag:b", created_at=now, updated_at=now))
        for level in range(1, 9):
            expression = _refs(f"n{level - 1}", 4)
            s.add(SavedSegment(name=f"n{level}", expression=expression, created_at=now,
                               updated_at=now))  # fmt: skip
    statements: list[str] = []

    def seen(conn, cursor, statement, *args):
        statements.append(statement)

    event.listen(db.engine, "before_cursor_execute", seen)
    try:
        with db.sessions() as s, pytest.raises(SegmentBudgetError) as info:
            count_segment(s, f"({_refs('n8', 32)})", config=config, now=now)
    finally:
        event.remove(db.engine, "before_cursor_execute", seen)
    assert info.value.budget_key == "budget.segment.depth"
    assert not any("customers" in sql for sql in statements)
    assert len(statements) <= MAX_SEGMENT_DEPTH + 1
    with db.sessions() as s, pytest.raises(SegmentBudgetError) as info:
        count_segment(s, f"({_refs('n3', 32)})", config=config, now=now)  # 4 deep, 4096 tests
    assert info.value.budget_key == "budget.segment.size"
