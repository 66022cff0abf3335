"""Rule weights add up to a decaying interest score per customer and tag, shown in the
profile and usable in segments (``tagscore:母婴 >= 3``) on SQLite and PostgreSQL alike."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from bot.app.config import EventRule, KeywordRule
from bot.customers.segment_language import SegmentError, parse
from bot.customers.segments import count_segment, preview_segment
from storage.models import Customer
from storage.repos import add_tag, customer_profile
from storage.tag_scores import bump_interest, interests_of
from tests.support import SandboxHarness

DAY = timedelta(days=1)


@pytest.fixture
def scored(db, clock):
    """X: 2 (20 days ago) + 3 (now) = 3.5; Y: 4 ten days ago = 2.0; Z: 3 now; W: none.
    Half-life 10 days."""
    now = clock.now()
    ids = {}
    with db.transaction() as s:
        for name in "XYZW":
            c = Customer(display_name=name, city="杭州" if name in "XY" else None, created_at=now)
            s.add(c)
            s.flush()
            ids[name] = c.id
        for name, ago, weight in (("X", 20, 2.0), ("X", 0, 3.0), ("Y", 10, 4.0), ("Z", 0, 3.0)):
            at = now - ago * DAY
            add_tag(s, ids[name], "母婴", source="test", now=at)
            bump_interest(s, ids[name], "母婴", weight, at, half_life_days=10)
    return ids


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("tagscore:母婴 >= 3", "XZ"),
        ("tag:母婴>=3", "XZ"),
        ("tagscore:母婴 > 3", "X"),
        ("tagscore:母婴 < 3", "YW"),
        ("tagscore:母婴 <= 2", "YW"),
        ("tagscore:母婴 >= 2", "XYZ"),
        ("tagscore:母婴 > 0", "XYZ"),
        ("tagscore:母婴 >= 0", "XYZW"),
        ("not tagscore:母婴 >= 3", "YW"),
        ("tagscore:母婴 >= 2 and city:杭州", "XY"),
        ("tagscore:早餐 > 0", ""),
    ],
)
def test_tag_score_conditions_match_hand_computed_scores(
    db, config, clock, scored, expression, expected
):
    with db.sessions() as s:
        names = [
            c.display_name
            for c in preview_segment(s, expression, config=config, now=clock.now(), limit=10)
        ]
        assert "".join(sorted(names)) == "".join(sorted(expected))
        assert count_segment(s, expression, config=config, now=clock.now()) == len(expected)


def test_scores_decay_with_time(db, config, clock, scored):
    later = clock.now() + 10 * DAY  # X 1.75, Y 1.0, Z 1.5
    with db.sessions() as s:
        assert count_segment(s, "tagscore:母婴 >= 1.5", config=config, now=later) == 2
        assert [
            (i.tag, round(i.score, 4), i.hits) for i in interests_of(s, scored["X"], later)
        ] == [("母婴", 1.75, 2)]


def test_bad_score_conditions_are_reported_with_their_position():
    for expression, message, position in (
        ("tagscore:母婴", "an interest score compares with <, <=, > or >=", 11),
        ("tagscore:母婴 = 3", "an interest score compares with <, <=, > or >=", 12),
        ("tagscore >= 3", "write tagscore:<tag> >= <number>", 9),
        ("tag:母婴 >= lots", "expected a number, got 'lots'", 10),
    ):
        with pytest.raises(SegmentError) as info:
            parse(expression)
        assert info.value.message.startswith(message)
        assert info.value.position == position


@pytest.fixture
def harness(config, sqlite_db, clock):
    tagging = replace(
        config.tagging,
        keywords=[KeywordRule(tag="母婴", keywords=["宝宝", "辅食"], weight=2.0)],
        events=[EventRule(tag="母婴", trigger="button", value="fushi*", weight=5.0)],
        interest_half_life_days=30.0,
    )
    return SandboxHarness(config.replace(tagging=tagging), sqlite_db, clock)


async def test_rule_hits_add_their_weights_to_the_profile(harness, clock):
    await harness.say("m1", "宝宝的辅食")  # one hit of the rule, not one per keyword
    clock.advance(30 * DAY)
    await harness.say("m1", "宝宝")  # 2 × ½ + 2 = 3
    await harness.sandbox.receive({"user_id": "m1", "chat_id": "m1", "button_data": "fushi:1"})
    await harness.say("m2", "辅食")
    with harness.db.sessions() as s:
        data = customer_profile(s, "sandbox", "m1", clock.now()).as_dict()
        assert [(i["tag"], i["score"], i["hits"]) for i in data["interests"]] == [("母婴", 8.0, 3)]
        config = harness.runtime.config
        assert count_segment(s, "tagscore:母婴 >= 8", config=config, now=clock.now()) == 1
        assert count_segment(s, "tagscore:母婴 >= 2", config=config, now=clock.now()) == 2


async def test_rule_weight_must_be_positive(harness):
    await harness.say("manager", "/rule add keyword 露营 帐篷 weight=0")
    await harness.say("manager", "/rule add keyword 露营 帐篷 weight=2.5")
    await harness.deliver()
    replies = await harness.bot_messages("manager")
    assert replies[0] == "操作未完成：weight must be greater than 0 and at most 1000, got 0"
    assert replies[1].startswith("已添加打标签规则 #1 keyword 露营: 帐篷 weight=2.5")
