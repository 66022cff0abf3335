"""Coupons: issued once per key, redeemed exactly once, clear answers for bad codes."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from bot.core.clock import FakeClock
from bot.marketing.coupons import ALPHABET, definition, issue_codes, normalize_code, redeem
from storage.coupons import CouponCode
from storage.db import Database
from storage.orders import Order
from tests.campaign_support import make_customer, services

NOW = datetime(2026, 3, 6, 2, 0, tzinfo=UTC)


def _issue(db, customer_id, key="k1", name="breakfast5"):
    with db.transaction() as session:
        coupon = definition(session, name)
        return issue_codes(session, coupon, [(customer_id, key)], now=NOW)


def test_issuing_is_idempotent_and_codes_are_unguessable(db, config):
    services(db, config, FakeClock(NOW))
    cid = make_customer(db, "a", NOW)
    first = _issue(db, cid)
    again = _issue(db, cid)
    assert first == again and len(first) == 1
    code = first["k1"]
    code = code.removeprefix("DEMO")  # a sandbox persona's code is visibly a demo code
    assert len(code) == 12 and set(code) <= set(ALPHABET)
    # breakfast5 allows one per customer: another key gets nothing
    assert _issue(db, cid, key="k2") == {}
    with db.sessions() as session:
        assert len(session.scalars(select(CouponCode)).all()) == 1


def test_redeem_answers(db, config):
    services(db, config, FakeClock(NOW))
    alice = make_customer(db, "alice", NOW)
    bob = make_customer(db, "bob", NOW)
    code = _issue(db, alice)["k1"]
    with db.transaction() as session:
        assert redeem(session, "NOPE-NOPE-NOPE", now=NOW, by="s", config=config).reason == "unknown"
        assert (
            redeem(session, code, now=NOW, by="s", config=config, customer_id=bob).reason
            == "foreign"
        )
        low = redeem(session, code, now=NOW, by="s", config=config, amount_cents=1000)
        assert low.reason == "below_min_spend" and low.min_spend_cents == 2000
        typed = code[:4].lower() + "-" + code[4:8] + " " + code[8:]
        assert normalize_code(typed) == code
        ok = redeem(session, typed, now=NOW, by="staff:1", config=config, amount_cents=3000)
        assert ok.ok and ok.discount_cents == 500 and ok.customer_id == alice
        again = redeem(session, code, now=NOW, by="s", config=config)
        assert again.reason == "already_redeemed" and again.redeemed_at == NOW
        order = session.scalars(select(Order).where(Order.order_id == f"coupon-{code}")).one()
        assert order.customer_id == alice and order.amount_cents == 3000
    late = _issue(db, bob, key="k9")["k9"]
    with db.transaction() as session:
        expired = redeem(session, late, now=NOW + timedelta(days=4), by="s", config=config)
        assert expired.reason == "expired"


def test_twenty_concurrent_redemptions_one_winner(pg_url, config):
    db = Database(pg_url)
    db.migrate()
    try:
        services(db, config, FakeClock(NOW))
        cid = make_customer(db, "c", NOW)
        code = _issue(db, cid)["k1"]
        barrier = threading.Barrier(20)
        results: list[str] = []
        lock = threading.Lock()

        def attempt(i: int) -> None:
            with db.sessions() as session, session.begin():
                barrier.wait()
                outcome = redeem(
                    session, code, now=NOW, by=f"till{i}", config=config, amount_cents=3000
                )
            with lock:
                results.append(outcome.reason)

        threads = [threading.Thread(target=attempt, args=(i,)) for i in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(results) == ["already_redeemed"] * 19 + ["redeemed"]
        with db.sessions() as session:
            assert len(session.scalars(select(Order)).all()) == 1
    finally:
        db.close()
