"""The command line as a user runs it (a subprocess): quiet by default, --config and
--json anywhere, progress on stderr, search and CSV exports, campaign list, and database
problems as one line that says what to do."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import event
from sqlalchemy.engine import Engine

from bot.app.cli import hoist_options, main
from storage.db import Database
from storage.models import Customer
from tests.customers_world import build_world

ROOT = Path(__file__).resolve().parent.parent


def siyu(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bot.app.cli", *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT), "LANG": "C.UTF-8", **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def world(tmp_path: Path, clock):
    url = f"sqlite:///{tmp_path / 'siyu.db'}"
    db = Database(url)
    db.migrate()
    with db.transaction() as s:
        ids = build_world(s, clock.now())
        s.get(Customer, ids["A"]).phone = "13812345678"
    db.close()
    (tmp_path / "prod.toml").write_text(f'[database]\nurl = "{url}"\n')
    return tmp_path


def test_ordinary_commands_print_no_log_lines_unless_verbose(tmp_path):
    (tmp_path / "c.toml").write_text(f'[database]\nurl = "sqlite:///{tmp_path / "x.db"}"\n')
    quiet = siyu("migrate", "--config", "c.toml", cwd=tmp_path)
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr == "" and quiet.stdout.startswith("database is up to date")
    (tmp_path / "x.db").unlink()
    loud = siyu("-v", "migrate", "--config", "c.toml", cwd=tmp_path)
    assert "INFO alembic.runtime.migration" in loud.stderr


def test_config_is_taken_anywhere_on_the_line(world):
    # A trailing --config after a campaign definition is the config, not a definition word.
    made = siyu(
        "campaign",
        "new",
        "spring",
        "segment=tag:母婴",
        "text=hi",
        "--config",
        "prod.toml",
        cwd=world,
    )
    assert made.returncode == 0, made.stderr
    assert made.stdout.strip() == "campaign spring created (#1, draft)"
    listed = siyu("campaign", "list", "--json", "--config=prod.toml", cwd=world)
    (row,) = json.loads(listed.stdout)
    assert (row["name"], row["status"], row["segment"]) == ("spring", "draft", "tag:母婴")
    # without it (no ./config.toml) the default database has no such campaign
    other = siyu("campaign", "list", cwd=world)
    assert "spring" not in other.stdout
    assert hoist_options(["campaign", "launch", "x", "--config", "p.toml", "-v"]) == (
        ["campaign", "launch", "x"],
        {"config": "p.toml", "verbose": True, "json": False},
    )


def test_json_on_commands_that_print_data(world):
    def data(*args):
        r = siyu(*args, "--json", "--config", "prod.toml", cwd=world)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    assert data("segment", "count", "city:杭州") == {"expression": "city:杭州", "count": 3}
    assert [c["display_name"] for c in data("segment", "preview", "tag:母婴")] == ["A", "C"]
    assert data("customer", "show", "sandbox", "a")["display_name"] == "A"
    assert data("staff", "list") == []
    assert data("campaign", "list") == []
    assert set(data("rfm", "recompute")) == {"scored", "tier_changes", "stage_changes", "seconds"}
    assert data("check-config")["ok"] is True
    assert data("customer", "set", "sandbox", "a", "city=宁波") == {
        "customer_id": 1,
        "changed": {"city": "宁波"},
    }


def test_customer_search_by_name_phone_and_user_id(world):
    by_phone = siyu("customer", "search", "5678", "--config", "prod.toml", cwd=world)
    assert by_phone.returncode == 0
    lines = by_phone.stdout.splitlines()
    assert lines[0] == "id\tname\tphone\tcity\tidentities"
    assert lines[1].split("\t")[1:4] == ["A", "13812345678", "杭州"]
    by_id = siyu("customer", "search", "1001", "--json", "--config", "prod.toml", cwd=world)
    assert [c["display_name"] for c in json.loads(by_id.stdout)["customers"]] == ["A"]
    nobody = siyu("customer", "search", "zzz", "--config", "prod.toml", cwd=world)
    assert nobody.returncode == 1 and nobody.stderr.strip() == "siyu: no customer matches 'zzz'"


def test_exports_write_csv_with_progress_on_stderr(world):
    every = siyu("export", "customers", "--config", "prod.toml", cwd=world)
    assert every.returncode == 0, every.stderr
    rows = list(csv.DictReader(io.StringIO(every.stdout)))
    assert [r["display_name"] for r in rows] == ["A", "B", "C", "D", "E", "F"]
    assert rows[0]["phone"] == "13812345678" and rows[0]["tags"] == "母婴"
    assert "exporting [####################] 6/6 (100%)" in every.stderr
    assert every.stderr.strip().endswith("exported 6 row(s) to stdout")
    out = world / "hz.csv"
    seg = siyu("export", "segment", "city:杭州", "-o", str(out), "--config", "prod.toml", cwd=world)
    assert seg.returncode == 0 and seg.stdout == ""
    assert [r["display_name"] for r in csv.DictReader(out.open(encoding="utf-8"))] == [
        "A",
        "B",
        "F",
    ]
    siyu(
        "campaign",
        "new",
        "mb",
        "segment=tag:母婴",
        "text=hi",
        "pilot=0",
        "holdout=0",
        "--config",
        "prod.toml",
        cwd=world,
    )
    launched = siyu("campaign", "launch", "mb", "--config", "prod.toml", cwd=world)
    assert launched.returncode == 0, launched.stderr
    assert "preparing campaign messages [####################] 2/2 (100%)" in launched.stderr
    camp = siyu("export", "campaign", "mb", "--config", "prod.toml", cwd=world)
    rows = list(csv.DictReader(io.StringIO(camp.stdout)))
    assert [(r["display_name"], r["status"], r["delivery"]) for r in rows] == [
        ("A", "queued", "pending"),
        ("C", "queued", "pending"),
    ]


def test_an_audience_of_nobody_cannot_launch_from_the_cli(world):
    siyu(
        "campaign",
        "new",
        "mars",
        "segment=city:火星",
        "text=hi",
        "--config",
        "prod.toml",
        cwd=world,
    )
    r = siyu("campaign", "launch", "mars", "--config", "prod.toml", cwd=world)
    assert r.returncode == 2
    assert r.stderr.strip() == (
        "siyu: campaign 'mars' would reach nobody now (empty segment, or everyone opted out "
        "or capped): it cannot pilot or launch"
    )


def test_imports_show_progress_and_report_as_json(world):
    (world / "orders.csv").write_text(
        "order_id,customer,amount,currency,time\n"
        "o-1,sandbox:a,35.00,CNY,2026-03-01 10:00\n"
        "o-2,sandbox:nobody-here,20.00,CNY,2026-03-01 11:00\n",
        encoding="utf-8",
    )
    r = siyu("import", "orders", "orders.csv", "--json", "--config", "prod.toml", cwd=world)
    report = json.loads(r.stdout)
    assert report["inserted"] + report["duplicates"] + len(report["rejected"]) == 2
    assert "importing orders [" in r.stderr and "2/2 (100%)" in r.stderr
    assert "INFO" not in r.stderr


def test_an_unmigrated_database_is_one_line_saying_what_to_do(tmp_path):
    (tmp_path / "c.toml").write_text(f'[database]\nurl = "sqlite:///{tmp_path / "new.db"}"\n')
    r = siyu("customer", "show", "sandbox", "a", "--config", "c.toml", cwd=tmp_path)
    assert r.returncode == 1
    assert (
        r.stderr
        == f"siyu: the database sqlite:///{tmp_path / 'new.db'} is not migrated: run 'siyu migrate' first\n"
    )
    zh = siyu("campaign", "list", "--config", "c.toml", cwd=tmp_path, env={"SIYU_LANG": "zh_CN"})
    assert zh.stderr.startswith("siyu: 数据库") and "请先运行 siyu migrate" in zh.stderr
    assert len(zh.stderr.splitlines()) == 1


def test_a_read_only_database_is_one_line(world):
    url = f"sqlite:///file:{world / 'siyu.db'}?mode=ro&uri=true"
    (world / "ro.toml").write_text(f'[database]\nurl = "{url}"\n')
    r = siyu(
        "staff",
        "add",
        "zed",
        "--config",
        "ro.toml",
        cwd=world,
        env={"SIYU_STAFF_PASSWORD": "long-enough-1"},
    )
    assert r.returncode == 1
    assert len(r.stderr.splitlines()) == 1 and "Traceback" not in r.stderr
    assert "is read-only: check its file permissions" in r.stderr


def test_a_full_database_is_one_line(world, capsys):
    """SQLite's own "database or disk is full", made real by capping the file's pages."""

    def cap(dbapi_connection, _record):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA max_page_count = 1")  # what a full disk looks like to SQLite
        cursor.close()

    rows = "customer,name\n" + "".join(f"sandbox:n{i},{'名' * 50}{i}\n" for i in range(3000))
    (world / "many.csv").write_text(rows, encoding="utf-8")
    event.listen(Engine, "connect", cap)
    try:
        code = main(
            ["import", "customers", str(world / "many.csv"), "--config", str(world / "prod.toml")]
        )
    finally:
        event.remove(Engine, "connect", cap)
    err = capsys.readouterr().err
    assert code == 1
    assert err.strip().splitlines()[-1].startswith("siyu: the disk of the database")
    assert "free some space" in err and "Traceback" not in err
