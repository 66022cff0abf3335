"""The one intake: CSV files and JSON bodies of orders, customers and tags read alike."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from bot.app.cli import main
from storage.db import Database
from storage.models import Customer, CustomerTag, Identity
from storage.orders import Order
from tests.support import SandboxHarness


@pytest.fixture
def cli_db(tmp_path: Path, sqlite_url: str):
    db = Database(sqlite_url)
    db.migrate()
    with db.transaction() as s:
        alice = Customer(display_name="Alice")
        s.add(alice)
        s.flush()
        s.add(Identity(customer_id=alice.id, channel="sandbox", external_id="alice"))
    config = tmp_path / "siyu.toml"
    config.write_text(f'[database]\nurl = "{sqlite_url}"\n')
    yield db, str(config)
    db.close()


def test_every_csv_import_skips_blank_rows_and_rejects_overlong_ones_by_line(
    cli_db, tmp_path, capsys
):
    db, config = cli_db
    files = {
        "orders": "order_id,customer,amount,time\n\nO1,sandbox:alice,5,2026-01-01\nO2,x,1,2,3\n",
        "customers": "customer,city\n\nsandbox:alice,杭州\nsandbox:bob,上海,extra\n",
        "tags": "customer,tag\n\nsandbox:alice,VIP\nsandbox:alice,VIP,extra\n",
    }
    for kind, text in files.items():
        path = tmp_path / f"{kind}.csv"
        path.write_text(text, encoding="utf-8")
        argv = ["tags", "import"] if kind == "tags" else ["import", kind]
        assert main([*argv, str(path), "--config", config]) == 1, kind
        err = capsys.readouterr().err
        rejected = [line for line in err.splitlines() if "rejected" in line]
        assert len(rejected) == 1 and rejected[0].startswith(f"{path}:4: rejected"), kind
        assert rejected[0].endswith("more fields than columns"), kind
    with db.sessions() as s:
        assert s.scalar(select(func.count(Order.id))) == 1
        assert s.scalar(select(Customer.city).where(Customer.display_name == "Alice")) == "杭州"
        assert s.scalar(select(func.count()).select_from(CustomerTag)) == 1


@pytest.mark.parametrize(
    ("kind", "header", "message"),
    [
        ("orders", "order_id,customer,amount", "missing column(s) time"),
        ("customers", "customer,brithday", "unknown column(s) 'brithday'"),
        ("tags", "customer,ttl_days", "missing column(s) tag"),
        ("tags", "tag,ttl_days", "the file needs one of the columns 'customer', 'phone'"),
    ],
)
def test_a_csv_without_its_columns_is_refused_whole(
    cli_db, tmp_path, capsys, kind, header, message
):
    _db, config = cli_db
    path = tmp_path / f"{kind}.csv"
    path.write_text(header + "\nsandbox:alice,1\n", encoding="utf-8")
    argv = ["tags", "import"] if kind == "tags" else ["import", kind]
    assert main([*argv, str(path), "--config", config]) == 2
    assert message in capsys.readouterr().err


@pytest.fixture
def api(config, sqlite_db, clock):
    config = config.replace(api=replace(config.api, key="s3cret"))
    harness = SandboxHarness(config, sqlite_db, clock)
    transport = httpx.ASGITransport(app=harness.app.asgi)
    return httpx.AsyncClient(transport=transport, base_url="http://siyu.test")


@pytest.mark.parametrize("kind", ["orders", "customers"])
async def test_json_bodies_have_one_shape_and_one_bound(api, kind):
    auth = {"Authorization": "Bearer s3cret", "Accept-Language": "en"}
    r = await api.post(f"/api/{kind}", json={kind: [{}], "extra": 1}, headers=auth)
    assert r.status_code == 400 and f"next to '{kind}'" in r.json()["error"]
    assert r.json()["code"] == "intake.body.other_keys"
    zh = await api.post(f"/api/{kind}", json={kind: []}, headers={"Authorization": "Bearer s3cret"})
    assert zh.json() == {"error": f"“{kind}”是空的", "code": "intake.body.empty"}
    r = await api.post(f"/api/{kind}", json={kind: [{}] * 1001}, headers=auth)
    assert r.status_code == 413 and f"at most 1000 {kind} per call" in r.json()["error"]
    r = await api.post(f"/api/{kind}", json={kind: ["x", {}]}, headers=auth)
    assert r.status_code == 422
    assert [e["index"] for e in r.json()["rejected"]] == [0, 1]
