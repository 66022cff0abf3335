"""POST /api/coupons/redeem: key required, clear status per outcome, one redemption."""

from __future__ import annotations

from dataclasses import replace

from starlette.testclient import TestClient

from bot.app.assembly import build
from bot.marketing.coupons import definition, format_code, issue_codes, sync_definitions
from tests.campaign_support import make_customer


def test_redeem_over_http(sqlite_db, config, clock):
    config = config.replace(
        api=replace(config.api, key="k" * 24),
        database=replace(config.database, url=sqlite_db.url),
        scenarios=replace(config.scenarios, scheduler=False),
    )
    app = build(config, db=sqlite_db, clock=clock)
    cid = make_customer(sqlite_db, "alice", clock.now())
    with sqlite_db.transaction() as session:
        sync_definitions(session, config.coupons, clock.now())
        code = issue_codes(
            session, definition(session, "breakfast5"), [(cid, "k")], now=clock.now()
        )["k"]
    client = TestClient(app.asgi)
    auth = {"Authorization": "Bearer " + "k" * 24}
    assert client.post("/api/coupons/redeem", json={"code": code}).status_code == 401
    assert client.post("/api/coupons/redeem", content=b"{", headers=auth).status_code == 400
    low = client.post("/api/coupons/redeem", json={"code": code, "amount": "10"}, headers=auth)
    assert low.status_code == 422 and low.json()["min_spend"] == "20.00"
    foreign = client.post(
        "/api/coupons/redeem", json={"code": code, "customer": "sandbox:alice2"}, headers=auth
    )
    assert foreign.status_code == 404
    ok = client.post(
        "/api/coupons/redeem",
        json={"code": format_code(code).lower(), "amount": "30", "customer": "sandbox:alice"},
        headers=auth,
    )
    assert ok.status_code == 200 and ok.json()["discount"] == "5.00"
    again = client.post("/api/coupons/redeem", json={"code": code}, headers=auth)
    assert again.status_code == 409 and again.json()["reason"] == "already_redeemed"
    unknown = client.post("/api/coupons/redeem", json={"code": "ZZZZ"}, headers=auth)
    assert unknown.status_code == 404 and unknown.json()["reason"] == "unknown"
