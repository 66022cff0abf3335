"""RFM scores, groups, lifecycle stages and tiers against hand-computed expectations."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from bot.customers.rfm import recompute_scores, refresh_customers
from storage.orders import Order
from storage.scores import CustomerScore, events_since
from tests.customers_world import build_world

# Base = customers with an order in the last 365 days: A, B, C, D (n = 4).
# score = 1 + 5 * (rank - 1) // 4 with RANK() ascending (ties share the lower rank).
#   R by last order: D(-200d)=1, C(-100d)=2, B(-10d)=3, A(-5d)=4  → D1 C2 B3 A4
#   F orders: B1 D1 (tie, rank 1), C2 (rank 3), A3 (rank 4)       → B1 D1 C3 A4
#   M spend: D50 B200 A6500 C23000                                   → D1 B2 A3 C4
# high = score ≥ 3: A HHH 重要价值, B HLL 一般发展, C LHH 重要保持, D LLL 一般挽留.
EXPECTED = {
    "A": ((4, 4, 3), "重要价值", "retained", "金卡"),
    "B": ((3, 1, 2), "一般发展", "activated", None),
    "C": ((2, 3, 4), "重要保持", "dormant", "黑卡"),
    "D": ((1, 1, 1), "一般挽留", "churned", None),
    "E": ((None, None, None), None, "churned", None),
}


def _scores(session, ids):
    rows = {r.customer_id: r for r in session.scalars(select(CustomerScore))}
    by_name = {name: rows.get(cid) for name, cid in ids.items()}
    return {
        name: ((r.r_score, r.f_score, r.m_score), r.rfm_group, r.lifecycle, r.tier)
        for name, r in by_name.items()
        if r is not None
    }


def test_rfm_groups_lifecycle_and_tiers_match_hand_computed(db, config, clock):
    now = clock.now()
    with db.transaction() as s:
        ids = build_world(s, now)
    with db.transaction() as s:
        result = recompute_scores(s, config, now)
    assert result.scored == 5
    with db.sessions() as s:
        assert _scores(s, ids) == EXPECTED  # F never ordered: no row, stage "new"
        events = events_since(s)
    changes = {(e.customer_id, e.kind, e.old_value, e.new_value) for e in events}
    assert changes == {
        (ids["A"], "tier_changed", None, "金卡"),
        (ids["C"], "tier_changed", None, "黑卡"),
        (ids["A"], "stage_changed", "new", "retained"),
        (ids["B"], "stage_changed", "new", "activated"),
        (ids["C"], "stage_changed", "new", "dormant"),
        (ids["D"], "stage_changed", "new", "churned"),
        (ids["E"], "stage_changed", "new", "churned"),
    }
    assert (result.tier_changes, result.stage_changes) == (2, 5)


def test_recompute_records_only_changes_as_events(db, config, clock):
    now = clock.now()
    with db.transaction() as s:
        ids = build_world(s, now)
        recompute_scores(s, config, now)
        last = max(e.id for e in events_since(s))
    with db.transaction() as s:
        again = recompute_scores(s, config, now)
    assert (again.tier_changes, again.stage_changes) == (0, 0)
    later = now + timedelta(days=81)  # B: 91 days since the last order, C: 181
    with db.transaction() as s:
        s.add(
            Order(
                order_id="late",
                customer_id=ids["D"],
                amount_cents=100_000,
                currency="CNY",
                ordered_at=later - timedelta(days=1),
                items={},
                source="test",
                created_at=later,
            )
        )
        recompute_scores(s, config, later)
    with db.sessions() as s:
        changes = {(e.customer_id, e.kind, e.old_value, e.new_value) for e in events_since(s, last)}
    assert changes == {
        (ids["B"], "stage_changed", "activated", "dormant"),
        (ids["C"], "stage_changed", "dormant", "churned"),
        (ids["D"], "stage_changed", "churned", "retained"),
        (ids["D"], "tier_changed", None, "银卡"),
    }


def test_orders_in_other_currencies_do_not_count_as_spend(db, config, clock):
    now = clock.now()
    with db.transaction() as s:
        ids = build_world(s, now)
        s.add(
            Order(
                order_id="usd",
                customer_id=ids["B"],
                amount_cents=10_000_000,
                currency="USD",
                ordered_at=now - timedelta(days=1),
                items={},
                source="test",
                created_at=now,
            )
        )
        recompute_scores(s, config, now)
    with db.sessions() as s:
        row = s.get(CustomerScore, ids["B"])
        assert (row.orders_total, row.spend_12m_cents, row.tier) == (2, 20_000, None)


def test_new_orders_move_tier_and_stage_at_once_keeping_nightly_ranks(db, config, clock):
    now = clock.now()
    with db.transaction() as s:
        ids = build_world(s, now)
        recompute_scores(s, config, now)
        last = max(e.id for e in events_since(s))
    with db.transaction() as s:
        s.add(
            Order(
                order_id="big",
                customer_id=ids["B"],
                amount_cents=2_000_000,
                currency="CNY",
                ordered_at=now,
                items={},
                source="test",
                created_at=now,
            )
        )
        result = refresh_customers(s, config, now, [ids["B"], ids["F"]])
    assert (result.scored, result.tier_changes, result.stage_changes) == (1, 1, 1)
    with db.sessions() as s:
        changes = {(e.kind, e.old_value, e.new_value) for e in events_since(s, last)}
        b = s.get(CustomerScore, ids["B"])
        assert (b.orders_total, b.tier, b.lifecycle) == (2, "黑卡", "retained")
        assert (b.r_score, b.f_score, b.m_score, b.rfm_group) == (3, 1, 2, "一般发展")
        assert _scores(s, ids)["A"] == EXPECTED["A"]
    assert changes == {("tier_changed", None, "黑卡"), ("stage_changed", "activated", "retained")}
