"""Segment expressions compile to SQL and give the same answers on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from bot.customers.rfm import recompute_scores
from bot.customers.segment_language import SegmentError, parse
from bot.customers.segments import (
    count_segment,
    iter_segment_ids,
    preview_segment,
    save_segment,
)
from tests.customers_world import build_world

CASES = [
    ("tag:母婴", "AC"),  # B's tag expired
    ("tag:母婴 and city:杭州", "A"),
    ("not tier:黑卡", "ABDEF"),
    ("tier:none", "BDEF"),
    ("tier:金卡 or tier:黑卡", "AC"),
    ("stage:new", "F"),
    ("stage:沉睡", "C"),
    ("stage:churned", "DE"),
    ("last_active < 30d", "ACF"),
    ("last_active > 30d", "BDE"),  # D was never active: counts as long ago
    ("rfm:重要价值 or rfm:重要保持", "AC"),
    ("rfm:none", "EF"),
    ("orders >= 2", "AC"),
    ("orders = 0", "F"),
    ("orders < 1", "F"),
    ("spend >= 6500", "AC"),
    ("spend_12m >= 1000 and not tier:黑卡", "A"),
    ("(tag:母婴 or tag:早餐) and not city:上海", "AD"),
    ("r >= 3", "AB"),
    ("not r >= 3", "CDEF"),
    ("last_order > 90d", "CDEF"),
    ("last_order <= 30d", "AB"),
    ("opt_out:yes", "E"),
    ("channel:telegram", "A"),
    ("channel:sandbox and not channel:telegram", "BCDEF"),
    ("group:group-1", "A"),  # B left the group
    ('group:"体验群"', "A"),
    ("city != 杭州", "CDE"),
    ("created < 30d", ""),
    ("NOT not tag:早餐", "D"),
    ("tag:母婴 and rfm:重要价值 and not tier:黑卡 and last_active < 30d and city:杭州", "A"),
    ("segment:vip", "AC"),
    ("segment:vip and city:杭州", "A"),
    ("not segment:vip", "BDEF"),
]

ERRORS = [
    ("", "empty expression", 0),
    ("tag:", "expected a value", 4),
    ("tag:母婴 and", "expected a condition", 10),
    ("foo:bar", "unknown field 'foo'", 0),
    ("last_active < 30x", "expected a duration", 14),
    ("last_active:30d", "needs a comparison", 11),
    ("tag < 3", "takes ':'", 4),
    ("tier:钻石", "unknown tier '钻石'", 5),
    ("rfm:土豪", "unknown RFM group", 4),
    ("stage:sleepy", "unknown lifecycle stage", 6),
    ("(tag:a", "expected ')'", 6),
    ("tag:a)", "unbalanced ')'", 5),
    ("tag:a tag:b", "expected 'and', 'or' or ')'", 6),
    ("spend >= abc", "expected a number", 9),
    ('tag:"open', "unterminated", 4),
    ("tag:a & tag:b", "got '&'", 6),
    ("segment:nope", "no saved segment named 'nope'", 8),
    ("(" * 40 + "tag:a" + ")" * 40, "nested deeper", 32),
]


@pytest.fixture
def world(db, config, clock):
    now = clock.now()
    with db.transaction() as s:
        ids = build_world(s, now)
        recompute_scores(s, config, now)
        save_segment(s, "vip", "rfm:重要价值 or tier:黑卡", config=config, now=now)
    return {cid: name for name, cid in ids.items()}


def test_segment_expressions_match_expected_customers(db, config, clock, world):
    wrong = []
    with db.sessions() as s:
        for expression, expected in CASES:
            ids = list(iter_segment_ids(s, expression, config=config, now=clock.now(), batch=2))
            got = "".join(sorted(world[i] for i in ids))
            count = count_segment(s, expression, config=config, now=clock.now())
            if got != expected or count != len(expected):
                wrong.append((expression, expected, got, count))
    assert wrong == []


def test_bad_expressions_are_reported_with_their_position(db, config, clock, world):
    wrong = []
    with db.sessions() as s:
        for expression, message, position in ERRORS:
            try:
                count_segment(s, expression, config=config, now=clock.now())
            except SegmentError as exc:
                if message not in exc.message or exc.position != position:
                    wrong.append((expression, exc.message, exc.position))
            else:
                wrong.append((expression, "no error", None))
    assert wrong == []


def test_error_points_a_caret_at_the_problem():
    with pytest.raises(SegmentError) as info:
        parse("tag:母婴 and and city:杭州")
    assert info.value.pretty().splitlines()[1:] == [
        "  tag:母婴 and and city:杭州",
        "             ^",
    ]


def test_preview_lists_the_first_customers(db, config, clock, world):
    with db.sessions() as s:
        shown = preview_segment(s, "not tier:黑卡", config=config, now=clock.now(), limit=3)
    assert [c.display_name for c in shown] == ["A", "B", "D"]


def test_saved_segment_cannot_refer_to_itself(db, config, clock, world):
    with db.transaction() as s:
        save_segment(s, "loop", "tag:母婴", config=config, now=clock.now())
    with db.transaction() as s, pytest.raises(SegmentError, match="refers to itself"):
        save_segment(s, "loop", "segment:loop or tag:早餐", config=config, now=clock.now())
    with db.sessions() as s:
        assert count_segment(s, "segment:loop", config=config, now=clock.now()) == 2
