"""Shared fixtures: databases on both backends, a fake clock, a runtime with the sandbox.

PostgreSQL tests connect for real (``SIYU_TEST_PG_URL``, default the local server's
``test`` database); each test session creates its own throwaway database there and drops
it at the end, so parallel runs never see each other's rows.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from bot.app.config import Config, load_config
from bot.core.clock import FakeClock
from storage.db import Database, normalize_url

PG_ADMIN_URL = normalize_url(
    os.environ.get("SIYU_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
)


def _pg_admin():
    return create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session (dropped afterwards)."""
    try:
        url = _fresh_pg_database(PG_ADMIN_URL)
    except Exception as exc:  # pragma: no cover - environment problem, say it plainly
        pytest.fail(f"PostgreSQL at {PG_ADMIN_URL} is required for these tests: {exc}")
    yield url
    _drop_pg_database(url)


def _fresh_pg_database(base_url: str) -> str:
    """A new empty database on the same server as ``base_url``."""
    name = f"siyu_test_{uuid.uuid4().hex[:10]}"
    admin = _pg_admin()
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return base_url.rsplit("/", 1)[0] + f"/{name}"


def _drop_pg_database(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    admin = _pg_admin()
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'siyu.db'}"


@pytest.fixture
def pg_url(pg_server_url: str) -> Iterator[str]:
    """A clean, empty PostgreSQL database for one test."""
    url = _fresh_pg_database(pg_server_url)
    yield url
    _drop_pg_database(url)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The same test on SQLite and on PostgreSQL (storage contract tests)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'siyu.db'}"
    else:
        yield request.getfixturevalue("pg_url")


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    """A migrated database on each backend."""
    database = Database(db_url)
    database.migrate()
    yield database
    database.close()


@pytest.fixture
def sqlite_db(sqlite_url: str) -> Iterator[Database]:
    database = Database(sqlite_url)
    database.migrate()
    yield database
    database.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime(2026, 3, 6, 1, 0, tzinfo=UTC))


@pytest.fixture
def config(tmp_path: Path) -> Config:
    """Built-in defaults, ignoring any SIYU_* variables of the developer's shell.

    The scenario scheduler is off, so a test's fake clock never fires pushes it did not ask
    for; scheduler tests turn it on.
    """
    defaults = load_config(None, environ={})
    return defaults.replace(
        scenarios=replace(defaults.scenarios, scheduler=False),
        # The example config's manager: the sandbox page's manager persona.
        roles=replace(defaults.roles, managers=["sandbox:manager"]),
    )
