"""The argon2id cost of staff passwords: strong by default, lowered only when configured.

The test suite hashes at the cheapest cost (tests/conftest.py: TEST_PASSWORD_COST); these
tests check that a configuration that says nothing keeps the library's strong defaults,
that a configured cost is the one new hashes get, and that a login rehashes a password
stored at another cost.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from argon2 import Type, extract_parameters

from bot.app.assembly import build
from bot.app.config import ConfigError, load_config
from bot.conversations.staff import authenticate, create_staff, find_staff, use_password_cost
from tests.conftest import TEST_PASSWORD_COST

ROOT = Path(__file__).resolve().parent.parent
NOW = datetime(2026, 3, 6, 1, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def test_cost_again() -> Iterator[None]:
    """Each test here changes the process's cost; the suite's cheap one comes back after."""
    yield
    use_password_cost(
        TEST_PASSWORD_COST["password_time_cost"], TEST_PASSWORD_COST["password_memory_kib"]
    )


def _stored_hash(sqlite_db, username: str) -> str:
    with sqlite_db.sessions() as session:
        return find_staff(session, username).password_hash


def test_production_defaults_stay_strong(sqlite_db):
    defaults = load_config(None, environ={})
    assert defaults.web.password_time_cost is None
    assert defaults.web.password_memory_kib is None
    example = load_config(ROOT / "config.example.toml", environ={})
    assert example.web.password_time_cost is None and example.web.password_memory_kib is None
    use_password_cost()  # what a process whose configuration says nothing hashes with
    with sqlite_db.transaction() as session:
        create_staff(session, "maria", "a-long-password", role="manager", now=NOW)
    params = extract_parameters(_stored_hash(sqlite_db, "maria"))
    assert params.type is Type.ID
    assert params.time_cost >= 3
    assert params.memory_cost >= 64 * 1024  # KiB
    assert params.parallelism >= 4
    assert params.salt_len >= 16 and params.hash_len >= 32


def test_a_configured_cost_is_used_and_a_login_rehashes_at_the_cost_in_force(
    config, sqlite_db, clock
):
    config = config.replace(web=replace(config.web, password_time_cost=2, password_memory_kib=256))
    build(config, db=sqlite_db, clock=clock)
    with sqlite_db.transaction() as session:
        create_staff(session, "sam", "a-long-password", role="staff", now=NOW)
    params = extract_parameters(_stored_hash(sqlite_db, "sam"))
    assert (params.time_cost, params.memory_cost) == (2, 256)

    use_password_cost(time_cost=1, memory_kib=64)
    with sqlite_db.transaction() as session:
        assert authenticate(session, "sam", "wrong-password", NOW) is None
    assert extract_parameters(_stored_hash(sqlite_db, "sam")).time_cost == 2  # unchanged
    with sqlite_db.transaction() as session:
        assert authenticate(session, "sam", "a-long-password", NOW) is not None
    params = extract_parameters(_stored_hash(sqlite_db, "sam"))
    assert (params.time_cost, params.memory_cost) == (1, 64)
    with sqlite_db.transaction() as session:
        assert authenticate(session, "sam", "a-long-password", NOW) is not None


@pytest.mark.parametrize(
    ("key", "value", "problem"),
    [
        ("password_time_cost", 0, "must be between 1 and 64, got 0"),
        ("password_memory_kib", 8, "must be between 32 and 4194304, got 8"),
    ],
)
def test_a_cost_out_of_bounds_is_refused(tmp_path, key, value, problem):
    path = tmp_path / "siyu.toml"
    path.write_text(f"[web]\n{key} = {value}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as refused:
        load_config(path, environ={})
    assert f"web.{key}" in str(refused.value) and problem in str(refused.value)
