"""Loyalty figures, cohorts and the AARRR chain against a small hand-computed data set,
on SQLite and PostgreSQL, through the functions and through ``siyu report``."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bot.customers.rfm import recompute_scores
from bot.measures import loyalty as loyalty_module
from bot.measures.loyalty import aarrr, cohorts, loyalty, segment_members, segment_reports
from bot.measures.periods import PeriodError, parse_period
from storage.measures import Referral
from storage.models import Customer, Interaction
from storage.orders import Order

ROOT = Path(__file__).resolve().parent.parent
ZONE = "Asia/Shanghai"
NOW = datetime(2026, 6, 1, tzinfo=UTC)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def build(session) -> dict[str, int]:
    """Seven customers (times UTC; the brand is in Asia/Shanghai, UTC+8).

    A: joined 01-10, messages 01-10, orders 01-15, 02-10, 04-05; city 杭州; invited F.
    B: joined 01-20, order 01-25 (no interaction).
    C: joined 02-03, message 02-03, orders 02-05, 02-20, 03-10; city 杭州.
    D: joined 03-01, message 03-02, orders 03-31 20:00 UTC (= 04-01 04:00 local), 04-10.
    E: joined 03-05, messages 03-06 and 03-20, no order.
    F: joined 03-10 by A's invite, only joined a group.   G: joined 03-15, only joined.
    """
    created = {
        "A": "2026-01-10 02:00", "B": "2026-01-20 02:00", "C": "2026-02-03 02:00",
        "D": "2026-03-01 00:00", "E": "2026-03-05 02:00", "F": "2026-03-10 02:00",
        "G": "2026-03-15 02:00",
    }  # fmt: skip
    ids = {}
    for name, when in created.items():
        c = Customer(display_name=name, created_at=at(when))
        c.city = "杭州" if name in ("A", "C") else "上海"
        session.add(c)
        session.flush()
        ids[name] = c.id
    orders = [
        ("A", "2026-01-15 04:00"), ("A", "2026-02-10 04:00"), ("A", "2026-04-05 04:00"),
        ("B", "2026-01-25 04:00"),
        ("C", "2026-02-05 04:00"), ("C", "2026-02-20 04:00"), ("C", "2026-03-10 04:00"),
        ("D", "2026-03-31 20:00"), ("D", "2026-04-10 04:00"),
    ]  # fmt: skip
    for i, (name, when) in enumerate(orders):
        session.add(
            Order(order_id=f"o{i}", customer_id=ids[name], amount_cents=10000, ordered_at=at(when))
        )
    touches = [
        ("A", "message", "2026-01-10 03:00"), ("C", "message", "2026-02-03 03:00"),
        ("D", "message", "2026-03-02 03:00"), ("E", "message", "2026-03-06 03:00"),
        ("E", "command", "2026-03-20 03:00"), ("F", "join", "2026-03-10 03:00"),
        ("G", "join", "2026-03-15 03:00"),
    ]  # fmt: skip
    for i, (name, kind, when) in enumerate(touches):
        session.add(
            Interaction(
                customer_id=ids[name], event_id=f"e{i}", channel="sandbox", chat_id=name,
                kind=kind, text="", payload={}, occurred_at=at(when),
            )
        )  # fmt: skip
    session.add(
        Referral(
            referrer_id=ids["A"], referred_id=ids["F"], code="abcdefgh", channel="telegram",
            via="deep_link", created_at=at("2026-03-10 02:00"),
        )
    )  # fmt: skip
    return ids


def period(start: str, end: str):
    return parse_period(start, end, zone=ZONE, now=NOW, default_days=30)


def test_loyalty_figures_match_hand_computed(db, config):
    with db.transaction() as s:
        build(s)
    with db.sessions() as s:
        r = loyalty(s, period("2026-03-01", "2026-05-01"), config=config, now=NOW)
    # buyers Mar-Apr (local): A (04-05), C (03-10), D (04-01 local, 04-10): D twice.
    assert (r.buyers, r.repeat_buyers, r.repeat_rate) == (3, 1, 0.3333)
    # previous 61 days (12-29 .. 03-01): A, B, C; again in Mar-Apr: A and C.
    assert (r.previous_buyers, r.retained_buyers, r.retention_rate) == (3, 2, 0.6667)
    # new in Mar-Apr: D, E, F, G; by invite: F.
    assert (r.new_customers, r.referred_customers, r.referral_rate) == (4, 1, 0.25)


def test_loyalty_in_a_segment(db, config):
    with db.transaction() as s:
        build(s)
    with db.sessions() as s:
        r = loyalty(
            s, period("2026-03-01", "2026-05-01"), config=config, now=NOW, segment="city:杭州"
        )
    assert (r.buyers, r.repeat_buyers, r.previous_buyers, r.retained_buyers) == (2, 0, 2, 2)


@pytest.mark.parametrize("in_list", [500, 0])
def test_the_pages_segment_reports_match_hand_computed(db, config, monkeypatch, in_list):
    """The Measures page's segment path (members looked up once; with in_list 0 as one
    array parameter on PostgreSQL) gives the hand-computed figures and the same reports as
    each direct function."""
    monkeypatch.setattr(loyalty_module, "_IN_LIST", in_list)
    with db.transaction() as s:
        build(s)
    with db.transaction() as s:
        recompute_scores(s, config, NOW)
    p = period("2026-01-01", "2026-05-01")
    with db.sessions() as s:
        members = segment_members(s, config, "city:杭州", NOW)
        got = segment_reports(s, p, segment="city:杭州", members=members, months=3)
        direct = {
            "loyalty": loyalty(s, p, config=config, now=NOW, segment="city:杭州"),
            "cohorts": cohorts(s, p, config=config, now=NOW, segment="city:杭州", months=3),
            "aarrr": aarrr(s, p, config=config, now=NOW, segment="city:杭州"),
        }
    # A and C (杭州): acquired 01-10 and 02-03, both active, returned, ordered; A invited F.
    assert [step["customers"] for step in got["aarrr"].steps] == [2, 2, 2, 2, 1]
    # buyers Jan-Apr: A (3 orders), C (3 orders); first orders Jan (A) and Feb (C).
    assert (got["loyalty"].buyers, got["loyalty"].repeat_buyers) == (2, 2)
    table = {row["cohort"]: row["active"] for row in got["cohorts"].cohorts}
    assert table == {"2026-01": [1, 1, 0, 1], "2026-02": [1, 1, 0, 0]}
    assert {k: r.as_dict() for k, r in got.items()} == {k: r.as_dict() for k, r in direct.items()}


def test_cohorts_use_the_brands_local_month(db, config):
    with db.transaction() as s:
        build(s)
    with db.transaction() as s:  # first orders are kept with the scores
        recompute_scores(s, config, NOW)
    with db.sessions() as s:
        r = cohorts(s, period("2026-01-01", "2026-05-01"), config=config, now=NOW, months=3)
    table = {row["cohort"]: (row["size"], row["active"]) for row in r.cohorts}
    # D's first order is 03-31 20:00 UTC = 04-01 local: an April cohort, not March.
    assert table == {
        "2026-01": (2, [2, 1, 0, 1]),
        "2026-02": (1, [1, 1, 0, 0]),
        "2026-04": (1, [1, 0, 0, 0]),
    }
    assert r.cohorts[0]["retention"] == [1.0, 0.5, 0.0, 0.5]


def test_aarrr_chain_and_the_biggest_loss(db, config):
    with db.transaction() as s:
        build(s)
    with db.sessions() as s:
        r = aarrr(s, period("2026-01-01", "2026-05-01"), config=config, now=NOW)
    counts = [step["customers"] for step in r.steps]
    # acquired 7; activated A C D E; retained A(02-10 order) C(02-20) D(04-10) E(03-20 msg);
    # revenue A C D; referral A (invited F).
    assert counts == [7, 4, 4, 3, 1]
    assert r.biggest_loss == "activated"
    assert r.steps[1]["lost"] == 3 and r.steps[4]["of_previous"] == 0.3333


def test_aarrr_counts_only_inside_the_period(db, config):
    with db.transaction() as s:
        build(s)
    with db.sessions() as s:
        r = aarrr(s, period("2026-03-01", "2026-04-01"), config=config, now=NOW)
    # acquired D E F G; activated D E; retained only E (D's 2nd order is after the end).
    assert [step["customers"] for step in r.steps] == [4, 2, 1, 0, 0]


@pytest.mark.parametrize(
    "start,end,problem",
    [("2026-13-01", None, "YYYY-MM-DD"), ("2026-03-01", "2026-02-01", "after"),
     ("2000-01-01", "2026-01-01", "at most")],
)  # fmt: skip
def test_bad_periods_are_refused(start, end, problem):
    with pytest.raises(PeriodError, match=problem):
        parse_period(start, end, zone=ZONE, now=NOW, default_days=30)


def test_siyu_report_prints_figures_and_json(tmp_path, config, sqlite_db):
    with sqlite_db.transaction() as s:
        build(s)
    with sqlite_db.transaction() as s:
        recompute_scores(s, config, NOW)
    cfg = tmp_path / "siyu.toml"
    cfg.write_text(f'[database]\nurl = "{sqlite_db.url}"\n[scenarios]\nscheduler = false\n')

    def run(*args, lang="zh-CN"):
        return subprocess.run(
            [sys.executable, "-m", "bot.app.cli", "report", *args, "--config", str(cfg)],
            cwd=ROOT, capture_output=True, text=True, timeout=60,
            env={"PATH": "/usr/bin:/bin", "LANG": lang},
        )  # fmt: skip

    out = run("aarrr", "--from", "2026-01-01", "--to", "2026-05-01", "--json")
    assert out.returncode == 0, out.stderr
    assert [s["customers"] for s in json.loads(out.stdout)["steps"]] == [7, 4, 4, 3, 1]
    text = run("loyalty", "--from", "2026-03-01", "--to", "2026-05-01")
    assert text.returncode == 0, text.stderr
    assert "重复购买率 33.3%" in text.stdout and "推荐率 25.0%" in text.stdout
    english = run("cohorts", "--from", "2026-01-01", "--to", "2026-05-01", "--months", "3",
                  lang="en_US.UTF-8")  # fmt: skip
    assert "Retention by first-order month" in english.stdout and "2026-04" in english.stdout
    bad = run("loyalty", "--from", "2026-05-01", "--to", "2026-03-01")
    assert bad.returncode == 2 and "must be after" in bad.stderr


@pytest.mark.parametrize(
    "toml,key",
    [
        ('[[scenarios.definitions]]\nname = "q"\ntemplate = "x"\nsurvey = "nope"\n',
         "scenarios.definitions[0].survey"),
        ('[[referrals.rules]]\nname = "r"\ncoupon = "nope"\n', "referrals.rules[0].coupon"),
        ('[[surveys.definitions]]\nname = "s"\nkind = "stars"\n', "surveys.definitions[0].kind"),
        ('[[referrals.rules]]\nname = "r"\ncoupon = "referral10"\nwhen = "later"\n',
         "referrals.rules[0].when"),
    ],
)  # fmt: skip
def test_config_names_a_missing_survey_or_coupon(tmp_path, toml, key):
    from bot.app.config import ConfigError, load_config

    path = tmp_path / "siyu.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    assert key in str(caught.value)
