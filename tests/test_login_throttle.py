"""Inbox login throttling over HTTP: too many failures per name or IP → 429, audited."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from datetime import timedelta

import pytest
from sqlalchemy import func, select
from starlette.testclient import TestClient

from bot.app.config import ConfigError, load_config
from bot.conversations.staff import create_staff, login_blocked_until, record_login_failure
from storage.db import Database
from storage.handoff import AuditEntry, LoginFailure
from tests.support import SandboxHarness

PASSWORD = "correct horse 42"


@pytest.fixture
def h(config, db, clock) -> SandboxHarness:
    harness = SandboxHarness(config, db, clock)
    with db.transaction() as s:
        create_staff(s, "alice", PASSWORD, role="staff", now=clock.now())
        create_staff(s, "bob", PASSWORD, role="staff", now=clock.now())
    return harness


class Browser:
    """One login form in one TestClient, posting from a given client IP."""

    def __init__(self, h: SandboxHarness, ip: str = "203.0.113.7") -> None:
        self.client = TestClient(h.app.asgi, follow_redirects=False, client=(ip, 50000))
        page = self.client.get("/inbox/login").text
        self.csrf = page.split('name="csrf" value="', 1)[1].split('"', 1)[0]

    def login(self, name: str, password: str):
        return self.client.post(
            "/inbox/login", data={"username": name, "password": password, "csrf": self.csrf}
        )


def throttled_entries(db) -> list[dict]:
    with db.sessions() as s:
        return [
            {"actor": a.actor, **a.detail}
            for a in s.scalars(
                select(AuditEntry)
                .where(AuditEntry.action == "login_throttled")
                .order_by(AuditEntry.id)
            )
        ]


def test_five_failures_block_the_name_even_with_the_right_password(h, clock):
    browser = Browser(h)
    for _ in range(5):
        clock.advance(timedelta(seconds=30))
        assert browser.login("alice", "wrong guess").status_code == 401
    first_failure = clock.now() - timedelta(seconds=120)

    r = browser.login("alice", PASSWORD)
    assert r.status_code == 429
    assert "登录失败次数过多" in r.text and "再试" in r.text
    retry_at = first_failure + timedelta(minutes=15)
    assert int(r.headers["Retry-After"]) == (retry_at - clock.now()).total_seconds()
    assert browser.client.get("/inbox").status_code == 303  # still not logged in

    # Every refusal is audited (the password is not checked, so no failure is counted).
    assert browser.login("alice", "another guess").status_code == 429
    entries = throttled_entries(h.db)
    assert [(e["actor"], e["username"], e["client_ip"]) for e in entries] == [
        ("alice", "alice", "203.0.113.7")
    ] * 2
    assert entries[0]["retry_at"] == retry_at.isoformat()
    with h.db.sessions() as s:
        assert s.scalar(select(func.count()).select_from(LoginFailure)) == 5

    # Another name from another IP is not affected.
    assert Browser(h, "198.51.100.1").login("bob", PASSWORD).status_code == 303

    # The window slides: once the oldest failure is 15 minutes old, 4 remain → allowed.
    clock.set(retry_at - timedelta(seconds=1))
    assert browser.login("alice", PASSWORD).status_code == 429
    clock.set(retry_at)
    assert browser.login("alice", PASSWORD).status_code == 303


def test_a_successful_login_clears_the_names_count(h, clock):
    browser = Browser(h)
    for _ in range(4):
        assert browser.login("alice", "wrong").status_code == 401
    assert browser.login("alice", PASSWORD).status_code == 303
    browser = Browser(h)
    for _ in range(5):
        assert browser.login("alice", "wrong").status_code == 401
    assert browser.login("alice", PASSWORD).status_code == 429


def test_failures_from_one_address_for_many_names_block_that_address(h, clock):
    attacker = Browser(h, "192.0.2.66")
    for i in range(20):  # [handoff] login_max_failures_per_address
        assert attacker.login(f"name{i % 7}", "guess").status_code == 401
    r = attacker.login("bob", PASSWORD)
    assert r.status_code == 429
    assert int(r.headers["Retry-After"]) == 15 * 60
    assert throttled_entries(h.db)[0]["client_ip"] == "192.0.2.66"
    # bob from his own address still gets in.
    assert Browser(h, "198.51.100.2").login("bob", PASSWORD).status_code == 303


def test_an_attacker_cannot_lock_a_manager_out_from_other_addresses(h, clock):
    attacker = Browser(h, "192.0.2.66")
    for _ in range(5):
        assert attacker.login("alice", "guess").status_code == 401
    assert attacker.login("alice", PASSWORD).status_code == 429  # the attacker is stopped
    # alice, at her own desk, is not: the count is per name *and* address.
    assert Browser(h, "198.51.100.9").login("alice", PASSWORD).status_code == 303
    # ... and her success does not reset the attacker's count.
    assert attacker.login("alice", PASSWORD).status_code == 429


def test_the_count_is_shared_by_every_process_on_the_database(h, config, db, clock):
    other = SandboxHarness(config, db, clock)  # a second Siyu on the same database
    for i in range(5):
        harness = h if i % 2 else other
        assert Browser(harness, "192.0.2.7").login("alice", "wrong").status_code == 401
    assert Browser(other, "192.0.2.7").login("alice", PASSWORD).status_code == 429
    assert Browser(h, "192.0.2.7").login("alice", PASSWORD).status_code == 429


def test_thresholds_are_config_keys(config, db, clock):
    strict = config.replace(
        handoff=replace(config.handoff, login_max_failures=2, login_window_minutes=1)
    )
    h = SandboxHarness(strict, db, clock)
    with db.transaction() as s:
        create_staff(s, "alice", PASSWORD, role="staff", now=clock.now())
    browser = Browser(h)
    assert browser.login("alice", "x1").status_code == 401
    assert browser.login("alice", "x2").status_code == 401
    r = browser.login("alice", PASSWORD)
    assert (r.status_code, r.headers["Retry-After"]) == (429, "60")
    clock.advance(timedelta(minutes=1))
    assert browser.login("alice", PASSWORD).status_code == 303


def test_bad_threshold_is_a_config_error(tmp_path):
    path = tmp_path / "siyu.toml"
    path.write_text("[handoff]\nlogin_max_failures = 0\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert info.value.key == "handoff.login_max_failures"


def test_parallel_guesses_on_postgresql_wait_for_each_others_count(pg_url, clock):
    """Two processes checking the same name at once: the second sees the first's failure."""
    first, second = Database(pg_url), Database(pg_url)
    first.migrate()
    window = timedelta(minutes=15)
    try:
        with first.transaction() as s:
            for _ in range(4):
                record_login_failure(s, "alice", "192.0.2.1", clock.now(), window=window)
        checked = threading.Event()
        seen: dict[str, object] = {}

        def guess_one() -> None:
            with first.transaction() as s:
                seen["one"] = login_blocked_until(
                    s, "alice", "192.0.2.1", clock.now(), max_failures=5, window=window
                )
                checked.set()
                time.sleep(0.3)  # verifying the password
                record_login_failure(s, "alice", "192.0.2.1", clock.now(), window=window)

        def guess_two() -> None:
            assert checked.wait(10)
            with second.transaction() as s:
                seen["two"] = login_blocked_until(
                    s, "alice", "192.0.2.1", clock.now(), max_failures=5, window=window
                )

        threads = [threading.Thread(target=fn) for fn in (guess_one, guess_two)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
        assert seen == {"one": None, "two": clock.now() + window}
    finally:
        first.close()
        second.close()
