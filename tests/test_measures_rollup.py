"""The Measures page's rollup (bot/measures/rollup.py) gives the same figures as the direct
reports of bot/measures/loyalty.py (what ``siyu report`` prints), on SQLite and PostgreSQL:
with activity today, after more activity once the finished days are stored, after a late
order import, after the retention purge, after forgetting a customer, and after the
nightly count of the next day."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select

from bot.app.purge import purge
from bot.customers.forget import forget_customer
from bot.customers.orders import OrderInput, store_orders
from bot.customers.rfm import recompute_scores
from bot.measures import loyalty, rollup
from bot.measures.periods import parse_period
from storage.measures import MeasuresRollup, Referral
from storage.models import Customer, Identity, Interaction
from storage.orders import Order

ZONE = "Asia/Shanghai"
#: 14:00 in the brand's zone: today (local) began at 2026-05-31 16:00 UTC
NOW = datetime(2026, 6, 1, 6, 0, tzinfo=UTC)
TODAY = datetime(2026, 5, 31, 16, 0, tzinfo=UTC)
PERIODS = (7, 30, 90, 365)
KINDS = ("message", "command", "button", "join", "subscribe")


def _when(rnd: random.Random, days: int) -> datetime:
    """A time in the last ``days`` days, one in four of them today (or at its very edge)."""
    pick = rnd.random()
    if pick < 0.2:
        return TODAY + timedelta(minutes=rnd.randint(0, 14 * 60 - 1))
    if pick < 0.25:
        return TODAY + timedelta(seconds=rnd.choice((-1, 0)))
    return NOW - timedelta(minutes=rnd.randint(0, days * 1440))


def _today(rnd: random.Random, days: int) -> datetime:
    """A time of today (the brand's day) up to now."""
    return TODAY + timedelta(minutes=rnd.randint(0, 14 * 60 - 1))


def populate(session, rnd: random.Random, customers: int, *, tag: str, when=_when) -> list[int]:
    """Customers over 420 days (``when``) with orders, interactions and invites at random
    times, the orders and interactions among these and the customers stored before."""
    ids = list(session.scalars(select(Customer.id)))
    for i in range(customers):
        c = Customer(display_name=f"{tag}{i}", created_at=when(rnd, 420))
        c.phone = f"1380000{len(tag)}{i:04d}"
        session.add(c)
        session.flush()
        ids.append(c.id)
    for i in range(customers * 3):
        cid = rnd.choice(ids)
        session.add(
            Order(
                order_id=f"{tag}o{i}", customer_id=cid, amount_cents=1000,
                ordered_at=when(rnd, 420),
            )
        )  # fmt: skip
    for i in range(customers * 3):
        session.add(
            Interaction(
                customer_id=rnd.choice(ids), event_id=f"{tag}e{i}", channel="sandbox",
                chat_id="x", kind=rnd.choice(KINDS), text="", payload={},
                occurred_at=when(rnd, 420),
            )
        )  # fmt: skip
    referred = rnd.sample(ids[-customers:], customers // 4)
    for i, newcomer in enumerate(referred):
        referrer = rnd.choice([c for c in ids if c != newcomer])
        session.add(
            Referral(
                referrer_id=referrer, referred_id=newcomer, code=f"{tag}{i}", channel="telegram",
                via="deep_link", created_at=when(rnd, 420),
            )
        )  # fmt: skip
    return ids


def assert_paths_agree(db, config, now: datetime = NOW) -> None:
    with db.transaction() as s:
        for days in PERIODS:
            period = parse_period(None, None, zone=ZONE, now=now, default_days=days)
            direct = (
                loyalty.loyalty(s, period, config=config, now=now).as_dict(),
                loyalty.cohorts(s, period, config=config, now=now, months=12).as_dict(),
                loyalty.aarrr(s, period, config=config, now=now).as_dict(),
            )
            rolled = (
                rollup.loyalty(s, period, now=now).as_dict(),
                rollup.cohorts(s, period, now=now, months=12).as_dict(),
                rollup.aarrr(s, period, now=now).as_dict(),
            )
            for a, b in zip(rolled, direct, strict=True):
                assert {k: v for k, v in a.items() if v != b[k]} == {}, (days, b)


def stored(db) -> list[tuple[str, str, datetime, datetime]]:
    with db.sessions() as s:
        return list(
            s.execute(
                select(
                    MeasuresRollup.report,
                    MeasuresRollup.start,
                    MeasuresRollup.cutoff_at,
                    MeasuresRollup.computed_at,
                ).order_by(MeasuresRollup.report, MeasuresRollup.start)
            ).all()
        )


def test_rollup_and_direct_reports_agree_with_activity_today(db, config):
    assert config.general.timezone == ZONE
    rnd = random.Random(7)
    with db.transaction() as s:
        populate(s, rnd, 60, tag="a")
    with db.transaction() as s:
        recompute_scores(s, config, NOW)
    assert_paths_agree(db, config)
    rows = stored(db)
    # each period's finished days, once per report, counted up to the start of today
    assert len(rows) == 4 * len(PERIODS)  # loyalty, churn, cohorts, aarrr
    assert {cutoff for _, _, cutoff, _ in rows} == {TODAY}
    with db.sessions() as s:
        period = parse_period(None, None, zone=ZONE, now=NOW, default_days=365)
        direct = loyalty.loyalty(s, period, config=config, now=NOW)
        assert direct.buyers > 0 and direct.new_customers > 0  # the data set is not empty

    # more happens today: new customers, orders, invites; the stored days are reused
    with db.transaction() as s:
        populate(s, random.Random(8), 20, tag="bb", when=_today)
    with db.transaction() as s:
        recompute_scores(s, config, NOW)
    assert_paths_agree(db, config)
    assert stored(db) == rows


def test_a_late_order_import_drops_the_stale_days(db, config):
    with db.transaction() as s:
        ids = populate(s, random.Random(9), 40, tag="c")
    with db.transaction() as s:
        recompute_scores(s, config, NOW)
    assert_paths_agree(db, config)
    with db.transaction() as s:
        phone = s.get(Customer, ids[0]).phone
        late = OrderInput(
            order_id="late-1", identity=None, phone=phone, amount_cents=500, currency="CNY",
            ordered_at=NOW - timedelta(days=20), items=(),
        )  # fmt: skip
        report = store_orders(s, [(1, late)], source="test", now=NOW)
        assert report.inserted == 1
        assert s.scalar(select(func.count()).select_from(MeasuresRollup)) == 0
    assert_paths_agree(db, config)


def test_the_nightly_count_stores_the_next_day_and_drops_the_old(db, config):
    with db.transaction() as s:
        populate(s, random.Random(10), 40, tag="d")
    with db.transaction() as s:
        recompute_scores(s, config, NOW)
    assert_paths_agree(db, config)
    tomorrow = NOW + timedelta(days=1)
    with db.transaction() as s:
        assert rollup.roll_up(s, zone=ZONE, now=tomorrow, days=PERIODS, months=12) == 16
        assert rollup.roll_up(s, zone=ZONE, now=tomorrow, days=PERIODS, months=12) == 0
    assert {cutoff for _, _, cutoff, _ in stored(db)} == {TODAY + timedelta(days=1)}
    assert_paths_agree(db, config, tomorrow)


def test_many_customers_today_are_one_array_parameter(db, config, monkeypatch):
    """Past a few hundred of today's customers the delta's id list is one array (= ANY) on
    PostgreSQL; the figures are the same."""
    monkeypatch.setattr(loyalty, "_IN_LIST", 0)
    with db.transaction() as s:
        populate(s, random.Random(11), 40, tag="e")
    with db.transaction() as s:
        recompute_scores(s, config, NOW)
    assert_paths_agree(db, config)


def test_the_churn_figures_are_kept_until_scores_change(db, config):
    with db.transaction() as s:
        populate(s, random.Random(12), 40, tag="f")
    with db.transaction() as s:
        recompute_scores(s, config, NOW - timedelta(days=200))
    assert_paths_agree(db, config)
    assert "churn" in {report for report, _, _, _ in stored(db)}
    with db.transaction() as s:  # the nightly recompute moves stages: the stored ones go
        recompute_scores(s, config, NOW)
    assert "churn" not in {report for report, _, _, _ in stored(db)}
    assert_paths_agree(db, config)


def test_the_retention_purge_drops_the_aarrr_counts_it_makes_stale(db, config):
    """Purging old interactions changes the AARRR chain (it reads a customer's interactions
    of any time): its stored counts go with the purge, the other reports' stay, and the
    page equals the direct count again."""
    with db.transaction() as s:
        populate(s, random.Random(13), 60, tag="g")
    with db.transaction() as s:
        recompute_scores(s, config, NOW)
    assert_paths_agree(db, config)
    before = stored(db)
    retention = replace(config.retention, interactions_days=100)
    (done,) = purge(db, config.replace(retention=retention), NOW)
    assert done.deleted > 0
    gone = set(before) - set(stored(db))
    assert {report for report, _, _, _ in gone} == {"aarrr"} and len(gone) == len(PERIODS)
    assert_paths_agree(db, config)


def test_forgetting_a_customer_keeps_the_figures_exact(db, config):
    """A forgotten customer keeps the rows the figures count (anonymously): the stored
    counts stay and still equal the direct count."""
    with db.transaction() as s:
        ids = populate(s, random.Random(14), 40, tag="h")
        s.add(Identity(customer_id=ids[0], channel="sandbox", external_id="h0", display_name="H"))
    with db.transaction() as s:
        recompute_scores(s, config, NOW)
    assert_paths_agree(db, config)
    before = stored(db)
    with db.transaction() as s:
        forget_customer(s, "sandbox", "h0", by="test", now=NOW)
    assert stored(db) == before
    assert_paths_agree(db, config)
