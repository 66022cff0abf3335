"""``siyu staff passwd|disable|enable|role`` as a subprocess: the same account changes as
the console's Staff page, refusals exit 2 with the reason, the last manager stays."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from bot.conversations.staff import authenticate, create_staff
from bot.core.clock import SystemClock
from storage.db import Database
from storage.handoff import AuditEntry, StaffUser
from tests.conftest import TEST_PASSWORD_COST

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def accounts(tmp_path: Path, sqlite_url: str):
    db = Database(sqlite_url)
    db.migrate()
    with db.transaction() as s:
        create_staff(s, "maria", "manager-pass-1", role="manager", now=SystemClock().now())
        create_staff(s, "sam", "staff-pass-123", role="staff", now=SystemClock().now())
    path = tmp_path / "siyu.toml"
    cost = "".join(f"{key} = {value}\n" for key, value in TEST_PASSWORD_COST.items())
    path.write_text(f'[database]\nurl = "{sqlite_url}"\n[web]\n{cost}')
    yield db, str(path)
    db.close()


def siyu(config: str, *args: str, password: str | None = None, lang: str = "en_US.UTF-8"):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SIYU_", "LC_"))}
    env["LANG"] = lang
    if password is not None:
        env["SIYU_STAFF_PASSWORD"] = password
    return subprocess.run(
        [sys.executable, "-m", "bot.app.cli", "staff", *args, "--config", config],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=60,
    )  # fmt: skip


def user(db: Database, name: str) -> StaffUser:
    with db.sessions() as s:
        return s.scalars(select(StaffUser).where(StaffUser.username == name)).one()


def test_passwd_disable_enable_role(accounts):
    db, config = accounts
    done = siyu(config, "passwd", "sam", password="new-staff-pass")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "Password of sam reset."
    assert "new-staff-pass" not in done.stdout + done.stderr
    with db.transaction() as s:
        assert authenticate(s, "sam", "new-staff-pass", SystemClock().now()) is not None
        assert authenticate(s, "sam", "staff-pass-123", SystemClock().now()) is None
    assert siyu(config, "disable", "sam").returncode == 0
    assert user(db, "sam").active is False
    zh = siyu(config, "enable", "sam", lang="zh_CN.UTF-8")
    assert zh.returncode == 0 and zh.stdout.strip() == "sam 已启用。"
    assert user(db, "sam").active is True
    assert siyu(config, "role", "sam", "manager").returncode == 0
    assert user(db, "sam").role == "manager"
    with db.sessions() as s:
        actions = list(s.scalars(select(AuditEntry.action).order_by(AuditEntry.id)))
    assert actions == ["staff_passwd", "staff_disable", "staff_enable", "staff_role"]


def test_refusals_exit_2_with_the_reason_and_change_nothing(accounts):
    db, config = accounts
    short = siyu(config, "passwd", "sam", password="short")
    assert short.returncode == 2 and "at least 8 characters" in short.stderr
    unknown = siyu(config, "disable", "nobody")
    assert unknown.returncode == 2 and "no staff account named 'nobody'" in unknown.stderr
    for args in (("disable", "maria"), ("role", "maria", "staff")):
        last = siyu(config, *args)
        assert last.returncode == 2 and "last active manager" in last.stderr
    bad_role = siyu(config, "role", "sam", "admin")
    assert bad_role.returncode == 2  # argparse refuses the choice
    maria = user(db, "maria")
    assert maria.active and maria.role == "manager"
