"""The 360° profile and the customer CLI: segment count (exit 2 on a bad expression),
rfm recompute, tags export, customer show with value and orders."""

from __future__ import annotations

import csv
import io
from datetime import timedelta
from pathlib import Path

import pytest

from bot.app.cli import main
from bot.customers.rfm import recompute_scores
from storage.coupons import CouponCode, CouponDefinition
from storage.db import Database
from storage.models import Customer
from storage.repos import customer_profile, tags_of
from tests.customers_world import build_world


@pytest.fixture
def world_cli(tmp_path: Path, sqlite_url: str, config, clock):
    db = Database(sqlite_url)
    db.migrate()
    with db.transaction() as s:
        ids = build_world(s, clock.now())
        s.get(Customer, ids["A"]).phone = "13812345678"
    path = tmp_path / "siyu.toml"
    path.write_text(f'[database]\nurl = "{sqlite_url}"\n')
    yield db, str(path), ids
    db.close()


def test_segment_count_cli_and_its_errors(world_cli, capsys):
    _, config, _ = world_cli
    assert main(["segment", "count", "city:杭州", "--config", config]) == 0
    assert capsys.readouterr().out.strip() == "3"
    assert main(["segment", "count", "city:杭州 or", "--config", config]) == 2
    err = capsys.readouterr().err
    assert "siyu: bad segment expression: expected a condition such as tag:母婴, got the end" in err
    assert "(at position 10)\n  city:杭州 or\n            ^" in err
    assert main(["segment", "save", "hz", "city:杭州", "--config", config]) == 0
    assert main(["segment", "count", "segment:hz and not tag:母婴", "--config", config]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == "2"


def test_rfm_recompute_cli_then_segments_use_the_scores(world_cli, capsys):
    _, config, _ = world_cli
    # The world's orders are relative to the fake clock's 2026-03-06; the CLI uses real
    # time, so only check that it scores everyone who ordered and reports it.
    assert main(["rfm", "recompute", "--config", config]) == 0
    assert capsys.readouterr().out.startswith("scored 5 customer(s);")


def test_tags_export_streams_csv(world_cli, capsys):
    _, config, _ = world_cli
    assert main(["tags", "export", "--config", config]) == 0
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert rows[0][:4] == ["customer_id", "display_name", "tag", "source"]
    assert sorted((r[1], r[2]) for r in rows[1:]) == [("A", "母婴"), ("C", "母婴"), ("D", "早餐")]
    assert main(["tags", "export", "--tag", "早餐", "--include-expired", "--config", config]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 2


def test_profile_shows_value_orders_and_masks_the_phone(world_cli, config, clock, capsys):
    db, config_path, ids = world_cli
    now = clock.now()
    with db.transaction() as s:
        recompute_scores(s, config, now)
        coupon = CouponDefinition(name="breakfast5", title="早餐 5 元券", created_at=now)
        s.add(coupon)
        s.flush()
        s.add(
            CouponCode(
                code="BF5-XYZ",
                issue_key="test:1",
                definition_id=coupon.id,
                customer_id=ids["A"],
                status="redeemed",
                issued_at=now,
                expires_at=now + timedelta(days=7),
                redeemed_at=now,
            )
        )
    with db.sessions() as s:
        profile = customer_profile(s, "sandbox", "a", clock.now())
        data = profile.as_dict()
        assert data["phone"] == "138****5678"
        assert profile.as_dict(reveal_phone=True)["phone"] == "13812345678"
    assert data["city"] == "杭州"
    assert data["consent"] == {"marketing": True}
    assert data["value"]["tier"] == "金卡"
    assert data["value"]["lifecycle"] == "retained"
    assert data["value"]["rfm_group"] == "重要价值"
    assert (data["value"]["orders"], data["value"]["spend"]) == (3, 6500.0)
    assert [o["amount"] for o in data["orders"]] == [3000.0, 2500.0, 1000.0]
    assert [i["channel"] for i in data["identities"]] == ["sandbox", "telegram"]
    assert [(c["coupon"], c["code"], c["status"]) for c in data["coupons"]] == [
        ("breakfast5", "BF5-XYZ", "redeemed")
    ]
    assert main(["customer", "show", "sandbox", "a", "--config", config_path]) == 0
    out = capsys.readouterr().out
    assert "phone: 13812345678  city: 杭州" in out
    assert "stage: retained  tier: 金卡  RFM: 443 重要价值" in out


def test_tags_import_keeps_the_source_and_reports_bad_rows(world_cli, tmp_path, clock, capsys):
    db, config, ids = world_cli
    path = tmp_path / "tags.csv"
    path.write_text(
        "customer,phone,tag,ttl_days\n"
        "sandbox:b,,VIP,\n"
        ",138 1234 5678,VIP,30\n"
        "sandbox:zz,,VIP,\n"
        "sandbox:b,,,\n"
        "sandbox:b,,VIP,x\n",
        encoding="utf-8",
    )
    assert main(["tags", "import", str(path), "--config", config]) == 1
    captured = capsys.readouterr()
    assert captured.out.strip() == f"{path}: 2 tag(s) added, 0 refreshed, 3 rejected"
    assert [line for line in captured.err.splitlines() if "rejected" in line] == [
        f"{path}:4: rejected: no customer with identity 'sandbox:zz'",
        f"{path}:5: rejected: 'tag' must be 1-64 characters",
        f"{path}:6: rejected: 'ttl_days' 'x' must be 0-3650",
    ]
    with db.sessions() as s:
        b_tags = [(t.tag.name, t.source, t.expires_at) for t in tags_of(s, ids["B"], clock.now())]
        a_tags = [(t.tag.name, t.source) for t in tags_of(s, ids["A"], clock.now())]
    assert b_tags == [("VIP", "import:tags.csv", None)]
    assert ("VIP", "import:tags.csv") in a_tags
