"""Orders: CSV import (good rows once, bad rows reported by line) and POST /api/orders."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from bot.app.cli import main
from storage.db import Database
from storage.models import Customer, Identity
from storage.orders import Order
from storage.scores import CustomerScore, events_since
from tests.support import SandboxHarness

CSV = """order_id,customer,phone,amount,currency,time,items
A1,sandbox:alice,,199.00,CNY,2026-03-01T10:00:00+08:00,奶粉 x1;辅食 x2
A2,,138-0000-0001,88.5,,2026-03-02 09:30,
B1,sandbox:nobody,,10,CNY,2026-03-01,
B2,sandbox:alice,,-5,CNY,2026-03-01,
B3,sandbox:alice,,12.345,CNY,2026-03-01,
B4,sandbox:alice,,10,CNY,yesterday,
A1,sandbox:alice,,199.00,CNY,2026-03-01T10:00:00+08:00,
B5,wechat,,10,CNY,2026-03-01,
,sandbox:alice,,10,CNY,2026-03-01,
B6,sandbox:alice,,10,RMB1,2026-03-01,
B7,sandbox:alice,,10,CNY,2099-01-01,
B8,,+86 139 0000 0009,10,CNY,2026-03-01,
"""


@pytest.fixture
def shop(tmp_path: Path, db_url: str):
    db = Database(db_url)
    db.migrate()
    with db.transaction() as s:
        alice = Customer(display_name="Alice")
        bob = Customer(display_name="Bob", phone="13800000001")
        s.add_all([alice, bob])
        s.flush()
        s.add(Identity(customer_id=alice.id, channel="sandbox", external_id="alice"))
    config = tmp_path / "siyu.toml"
    config.write_text(f'[database]\nurl = "{db_url}"\n')
    yield db, str(config)
    db.close()


def test_csv_import_keeps_good_rows_once_and_reports_each_bad_row(shop, tmp_path, capsys):
    db, config = shop
    path = tmp_path / "orders.csv"
    path.write_text(CSV, encoding="utf-8")
    assert main(["import", "orders", str(path), "--config", config]) == 1
    out, err = capsys.readouterr()
    assert out.strip() == f"{path}: 2 new order(s), 0 already imported, 10 rejected"
    assert [line for line in err.splitlines() if ": rejected" in line] == [
        f"{path}:4: rejected (order B1): no customer with identity sandbox:nobody",
        f"{path}:5: rejected (order B2): 'amount' must be 0 or more, got '-5'",
        f"{path}:6: rejected (order B3): 'amount' '12.345' has more than 2 decimals",
        f"{path}:7: rejected (order B4): 'time' 'yesterday' is not ISO 8601 (e.g. 2026-03-01T10:00:00+08:00)",
        f"{path}:8: rejected (order A1): duplicate order id (first on line 2)",
        f"{path}:9: rejected (order B5): 'customer' 'wechat' must be '<channel>:<user id>' (channels: sandbox, telegram, wechat, wecom)",
        f"{path}:10: rejected: 'order_id' is required",
        f"{path}:11: rejected (order B6): 'currency' 'RMB1' must be a 3-letter code such as CNY",
        f"{path}:12: rejected (order B7): 'time' '2099-01-01' is in the future",
        f"{path}:13: rejected (order B8): no customer with phone 13900000009",
    ]
    with db.sessions() as s:
        orders = {o.order_id: o for o in s.scalars(select(Order))}
        assert set(orders) == {"A1", "A2"}
        assert orders["A1"].amount_cents == 19900
        assert orders["A1"].items == {"lines": ["奶粉 x1", "辅食 x2"]}
        assert orders["A1"].ordered_at.isoformat() == "2026-03-01T02:00:00+00:00"
        assert orders["A2"].ordered_at.isoformat() == "2026-03-02T01:30:00+00:00"  # Asia/Shanghai
        bob = s.scalar(select(Customer).where(Customer.display_name == "Bob"))
        assert orders["A2"].customer_id == bob.id
    assert main(["import", "orders", str(path), "--config", config]) == 1
    out, _ = capsys.readouterr()
    assert out.strip() == f"{path}: 0 new order(s), 2 already imported, 10 rejected"
    with db.sessions() as s:
        assert s.scalar(select(func.count(Order.id))) == 2


def test_csv_without_required_columns_is_refused_whole(shop, tmp_path, capsys):
    _, config = shop
    path = tmp_path / "bad.csv"
    path.write_text("id,who,total\n1,sandbox:alice,3\n", encoding="utf-8")
    assert main(["import", "orders", str(path), "--config", config]) == 2
    assert "missing column(s) order_id, amount, time" in capsys.readouterr().err
    assert main(["import", "orders", str(tmp_path / "none.csv"), "--config", config]) == 2


@pytest.fixture
def api(config, sqlite_db, clock):
    config = config.replace(api=replace(config.api, key="s3cret"))
    harness = SandboxHarness(config, sqlite_db, clock)
    with sqlite_db.transaction() as s:
        alice = Customer(display_name="Alice")
        s.add(alice)
        s.flush()
        s.add(Identity(customer_id=alice.id, channel="sandbox", external_id="alice"))
    transport = httpx.ASGITransport(app=harness.app.asgi)
    return httpx.AsyncClient(transport=transport, base_url="http://siyu.test"), sqlite_db


async def test_api_needs_the_key(api):
    client, _ = api
    order = {"order_id": "X", "customer": "sandbox:alice", "amount": 1, "time": "2026-03-01"}
    r = await client.post("/api/orders", json=order)
    assert r.status_code == 401
    r = await client.post("/api/orders", json=order, headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401
    r = await client.post("/api/orders", json=order, headers={"X-API-Key": "s3cret"})
    assert (r.status_code, r.json()) == (200, {"inserted": 1, "duplicates": 0, "rejected": []})


async def test_api_is_idempotent_and_reports_bad_orders_precisely(api):
    client, db = api
    auth = {"Authorization": "Bearer s3cret"}
    body = {
        "orders": [
            {
                "order_id": "P1",
                "customer": "sandbox:alice",
                "amount": "59.90",
                "time": "2026-03-01T08:00:00Z",
                "items": ["茶"],
            },
            {"order_id": "P2", "customer": "sandbox:alice", "amount": "abc", "time": "2026-03-01"},
            "not an order",
            {
                "order_id": "P3",
                "customer": "sandbox:alice",
                "amount": 5,
                "time": "2026-03-01",
                "items": 7,
            },
        ]
    }
    r = await client.post("/api/orders", json=body, headers=auth | {"Accept-Language": "en"})
    assert r.status_code == 422
    assert r.json() == {
        "inserted": 1,
        "duplicates": 0,
        "rejected": [
            {"index": 1, "order_id": "P2", "code": "amount.not_number",
             "error": "'amount' 'abc' is not a number"},
            {"index": 2, "order_id": "", "code": "intake.order.not_object",
             "error": "an order must be a JSON object"},
            {"index": 3, "order_id": "P3", "code": "intake.order.items_type",
             "error": "'items' must be text or a list of strings"},
        ],
    }  # fmt: skip
    # the same codes, said in the reader's locale (zh-CN without Accept-Language)
    r = await client.post("/api/orders", json={"orders": body["orders"][1:]}, headers=auth)
    assert [(e["code"], e["error"]) for e in r.json()["rejected"]] == [
        ("amount.not_number", "金额 'abc' 不是数字（请写成 35.00 这样的形式）"),
        ("intake.order.not_object", "每个订单必须是一个 JSON 对象"),
        ("intake.order.items_type", "“items”必须是文本或字符串列表"),
    ]
    r = await client.post("/api/orders", json=body["orders"][0], headers=auth)
    assert (r.status_code, r.json()["duplicates"]) == (200, 1)
    for payload, status, message in (
        (b"{not json", 400, "JSON"),
        (b"[1, 2]", 400, "expected an order object"),
        (b'{"orders": {}}', 400, "'orders' must be a list"),
        (b'{"orders": []}', 400, "'orders' is empty"),
    ):
        r = await client.post(
            "/api/orders", content=payload, headers=auth | {"Accept-Language": "en"}
        )
        assert r.status_code == status and message in r.json()["error"]
    with db.sessions() as s:
        assert s.scalar(select(func.count(Order.id))) == 1
        score = s.scalars(select(CustomerScore)).one()  # stage and tier follow at once
        assert (score.orders_total, score.lifecycle, score.tier) == (1, "activated", None)
        assert [(e.kind, e.new_value) for e in events_since(s)] == [("stage_changed", "activated")]
