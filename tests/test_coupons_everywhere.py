"""Flows and staff issue real coupons; the inbox redeems them; expired offers are renewed."""

from __future__ import annotations

import re
from datetime import timedelta

from sqlalchemy import inspect, select

from bot.conversations.followups import send_due_followups
from bot.marketing.coupons import definition, format_code, issue_codes, redeem, sync_definitions
from storage.coupons import CouponCode, CouponDefinition
from storage.followups import FollowUp
from storage.handoff import AuditEntry, StaffUser
from storage.models import Conversation
from tests.campaign_support import make_customer
from tests.support import SandboxHarness
from tests.test_inbox_web import add_staff, flagged, login

DEST = "flow:weekend_trip_inquiry:destination:qiandao"
CODE = re.compile(r"(?:DEMO-)?WKND(?:-[0-9A-Z]{4}){3}")  # sandbox personas get demo codes


async def at_offer(h: SandboxHarness, user: str = "u1") -> str:
    await h.say(user, "周末去哪玩呀")
    await h.sandbox.receive({"user_id": user, "button_data": DEST})
    await h.say(user, "本周六")
    await h.say(user, "2")
    await h.deliver()
    return CODE.search((await h.bot_messages(user))[-1]).group()


def offer_of(db) -> dict:
    with db.sessions() as s:
        return s.scalars(select(Conversation)).one().state["flow"]["offer"]


async def test_a_flow_offer_is_a_real_coupon_redeemed_at_the_till(config, db, clock):
    h = SandboxHarness(config, db, clock)
    shown = await at_offer(h)
    assert offer_of(db)["code"] == shown
    with db.transaction() as s:
        row, coupon = s.execute(
            select(CouponCode, CouponDefinition).join(
                CouponDefinition, CouponDefinition.id == CouponCode.definition_id
            )
        ).one()
        assert format_code(row.code) == shown and row.code.removeprefix("DEMO").startswith("WKND")
        assert (coupon.name, coupon.amount_cents, coupon.valid_days) == ("trip_weekend50", 5000, 7)
        assert row.expires_at == clock.now() + timedelta(days=7)
        result = redeem(
            s, shown.lower(), now=clock.now(), by="till", config=config, amount_cents=30000
        )
        assert result.ok and result.discount_cents == 5000
    with db.sessions() as s:  # the coupon reminder stops: they bought
        assert s.scalars(select(FollowUp.reason).order_by(FollowUp.id.desc())).first() == "bought"


async def test_an_offer_that_expired_meanwhile_is_issued_anew_before_it_is_repeated(
    config, sqlite_db, clock
):
    h = SandboxHarness(config, sqlite_db, clock)
    old = await at_offer(h)
    clock.advance(timedelta(days=8))  # past the coupon's 7 days; the 72 h reminder is due
    assert send_due_followups(sqlite_db, config, clock)["sent"] == 1
    await h.deliver()
    last = (await h.bot_messages("u1"))[-1]
    new = CODE.search(last).group()
    assert new != old and "之前的券已过期，已为您重新发放" in last
    assert offer_of(sqlite_db)["renewed"] is True
    with sqlite_db.transaction() as s:
        assert redeem(s, old, now=clock.now(), by="till", config=config).reason == "expired"
        assert redeem(s, new, now=clock.now(), by="till", config=config).ok
        # per_customer = 1 counts redeemed and valid codes, not the expired one
        assert len(s.scalars(select(CouponCode)).all()) == 2


def flash(client, url: str) -> str:
    return re.search(r'id="flash">([^<]*)<', client.get(url).text).group(1)


def redeem_audit(db) -> list[tuple[str, str]]:
    with db.sessions() as s:
        rows = s.scalars(
            select(AuditEntry).where(AuditEntry.action == "redeem").order_by(AuditEntry.id)
        )
        return [(a.actor, a.detail["outcome"]) for a in rows]


async def test_staff_issue_real_coupons_and_redeem_codes_in_the_inbox(config, sqlite_db, clock):
    h = SandboxHarness(config, sqlite_db, clock)
    add_staff(sqlite_db, clock, "alice")
    add_staff(sqlite_db, clock, "bob")
    with sqlite_db.transaction() as s:  # these two read the inbox in English
        for user in s.scalars(select(StaffUser)):
            user.locale = "en"
    ticket_id = await flagged(h)
    alice, token = login(h, "alice")
    page = f"/inbox/c/{ticket_id}"
    alice.post(f"{page}/claim", data={"csrf": token})
    assert "补偿券20元" in alice.get(page).text  # the [coupons] definitions to choose from
    for _ in range(2):  # a double submit issues once
        alice.post(f"{page}/coupon", data={"csrf": token, "nonce": "n1", "coupon": "staff_comp20"})
    code = re.search(r"(?:DEMO-)?STAFF(?:-[0-9A-Z]{4}){3}", flash(alice, page)).group()
    refused = alice.post(f"{page}/coupon", data={"csrf": token, "nonce": "n2", "coupon": "nope"})
    assert refused.status_code == 303 and "no coupon named" in flash(alice, page)
    with h.db.sessions() as s:
        assert [format_code(c) for c in s.scalars(select(CouponCode.code))] == [code]
    other = make_customer(h.db, "someone-else", clock.now())
    with h.db.transaction() as s:
        sync_definitions(s, config.coupons, clock.now())
        foreign = issue_codes(s, definition(s, "breakfast5"), [(other, "x")], now=clock.now())["x"]

    form = {"csrf": token, "ticket": str(ticket_id), "code": code, "amount": "35.00"}
    assert alice.post("/inbox/redeem", data={**form, "csrf": "wrong"}).status_code == 403
    assert alice.post("/inbox/redeem", data=form).headers["location"] == page
    assert flash(alice, page) == f"redeemed {code} (补偿券20元, 20.00 off)"
    assert ", redeemed)" in alice.get(page).text
    alice.post("/inbox/redeem", data=form)
    assert flash(alice, page) == "this code was already redeemed"
    alice.post("/inbox/redeem", data={**form, "code": "NOPE-NOPE-NOPE"})
    assert flash(alice, page) == "no such code"
    alice.post("/inbox/redeem", data={**form, "code": foreign})
    assert flash(alice, page) == "this code belongs to another customer"
    alice.post("/inbox/redeem", data={**form, "amount": "lots"})
    assert "amount must be a number" in flash(alice, page)
    # from the queue page (a till, no conversation): any customer's code
    bob, b_token = login(h, "bob")
    r = bob.post("/inbox/redeem", data={"csrf": b_token, "code": foreign, "amount": "25"})
    assert r.headers["location"] == "/inbox" and flash(bob, "/inbox").startswith("redeemed")
    assert redeem_audit(h.db) == [
        ("alice", "redeemed"),
        ("alice", "already_redeemed"),
        ("alice", "unknown"),
        ("alice", "foreign"),
        ("bob", "redeemed"),
    ]


def test_the_placeholder_grants_table_is_gone(db):
    tables = set(inspect(db.engine).get_table_names())
    assert "offer_grants" not in tables
    assert {"coupon_codes", "tracked_links"} <= tables
