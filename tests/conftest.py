"""Shared fixtures: migrated databases on both backends, a fake clock, the default config.

Migrating a database runs every Alembic revision, which costs far more than most tests. So
each backend is migrated ONCE per test session into a template, and every test gets a
database in the template's state: on SQLite a file copy, on PostgreSQL a copy made with
``CREATE DATABASE … TEMPLATE`` and, between tests, reset to the template's state rather than
dropped (see :class:`PgDatabases`). A test that needs an empty, unmigrated database asks for
``empty_sqlite_url`` or ``empty_pg_url``.

PostgreSQL tests connect for real (``SIYU_TEST_PG_URL``, default the local server's
``test`` database); each test session creates its own throwaway databases there and drops
them at the end, so parallel runs never see each other's rows.

The fakes of the platforms' network edges live in ``tests/fakes/``; their fixtures are here.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
import uuid
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.pool import NullPool

from bot.app.config import Config, load_config
from bot.conversations.staff import use_password_cost
from bot.core.clock import FakeClock
from storage.db import Database, normalize_url
from tests.browser import close_browser
from tests.fakes.wechat import FakeWechatApi
from tests.support import free_port

PG_ADMIN_URL = normalize_url(
    os.environ.get("SIYU_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
)
REDIS_SERVER = os.environ.get("SIYU_TEST_REDIS_URL", "redis://127.0.0.1:6379").rstrip("/")
#: The Redis databases tests may take for their own (database 0 holds the claims on them).
REDIS_DATABASES = range(1, 9)


#: The argon2id cost of staff passwords in tests ([web] password_time_cost and
#: password_memory_kib): the cheapest the library takes. Production keeps the library's
#: defaults (tests/test_password_cost.py checks they stay strong).
TEST_PASSWORD_COST = {"password_time_cost": 1, "password_memory_kib": 64}


def pytest_configure(config: pytest.Config) -> None:
    use_password_cost(
        TEST_PASSWORD_COST["password_time_cost"], TEST_PASSWORD_COST["password_memory_kib"]
    )


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    close_browser()  # the test process's Chromium, shared by its browser tests


#: The longest tests, longest first (node ids; a prefix covers every parameter). Under
#: pytest-xdist they are handed out first, so each worker starts with a long one and the
#: short tests fill the gaps at the end: the workers finish together instead of one long
#: test running alone at the end. The order is what matters, from ``--durations`` of a
#: whole run (CONTRIBUTING.md, "Running the tests"); a test missing here only starts later.
LONGEST_FIRST = (
    "tests/test_topology.py::test_two_web_two_workers_one_scheduler_deliver_a_message",
    "tests/test_pipeline_crash.py::test_sigkill_during_a_burst_then_retries_process_every",
    "tests/test_wechat_ack_after_store.py::test_callbacks_during_a_bulk_import_are_all_stored",
    "tests/test_campaign_crash.py::test_three_thousand_messages_two_workers_one_killed",
    "tests/test_ux_cli.py::test_json_on_commands_that_print_data",
    "tests/test_groups_cli.py::test_sop_plans_from_the_shell",
    "tests/test_cli_staff.py::test_passwd_disable_enable_role",
    "tests/test_authz_table.py::test_every_command_as_every_actor_is_allowed_or_refused",
    "tests/test_crash_recovery.py::test_sigkill_and_sigterm_mid_delivery_lose_and_duplicate",
    "tests/test_process_roles.py::test_two_worker_processes_stay_within_telegrams_30_per",
    "tests/test_web_streams.py::test_a_thousand_dropped_streams_leave_messages_and_sigterm",
    "tests/test_shared_quotas.py::test_two_worker_processes_share_the_wecom_quota",
    "tests/test_cli_staff.py::test_refusals_exit_2_with_the_reason_and_change_nothing",
    "tests/test_ux_cli.py::test_exports_write_csv_with_progress_on_stderr",
    "tests/test_console_browser.py::test_measures_and_groups_pages_in_the_browser",
    "tests/test_process_roles.py::test_web_processes_in_webhook_mode_all_take_updates",
    "tests/test_process_roles.py::test_exactly_one_of_two_processes_polls_and_the_other",
    "tests/test_groups_sop_platforms.py::test_two_processes_post_a_slot_once",
    "tests/test_purge.py::test_purge_deletes_old_rows_in_batches_and_keeps_the_rest",
    "tests/test_pipeline_prefetch.py::test_a_batch_loads_its_rows_in_a_few_queries_not_one",
    "tests/test_wechat_delivery.py::test_two_siyu_processes_fetch_the_token_once",
    "tests/test_scenario_scheduler.py::test_two_processes_fire_a_scenario_once",
    "tests/test_campaign_pilot.py::",
    "tests/test_ux_cli.py::",
    "tests/test_groups_cli.py::",
    "tests/test_console_group_forms_browser.py::",
    "tests/test_outbox_notify.py::",
    "tests/test_delivery_order.py::test_two_worker_processes_keep_the_shares_fair",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under pytest-xdist, the longest tests (``LONGEST_FIRST``) first, then the other slow
    tests (real processes), then the browser tests, then the rest.

    Workers take tests two at a time in this order, so the long ones start early on every
    worker and the short ones fill the gaps at the end instead of one long test running
    alone. Every worker sorts the same collection the same way (a stable sort).
    """
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return

    def weight(item: pytest.Item) -> tuple[int, int]:
        known = next(
            (rank for rank, prefix in enumerate(LONGEST_FIRST) if item.nodeid.startswith(prefix)),
            len(LONGEST_FIRST),
        )
        if item.get_closest_marker("slow"):
            return known, 0
        return known, 1 if item.get_closest_marker("browser") else 2

    items.sort(key=weight)


def _pg_database_url(name: str) -> str:
    return PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"


class PgDatabases:
    """The session's PostgreSQL databases: a migrated template and the copies tests use.

    Dropping a database costs a server checkpoint (0.1-3 s on a busy machine), so a copy
    is not dropped after its test but reset and handed to the next one: the sessions still
    connected to it are ended, every row is deleted (foreign keys off for the reset),
    tables the test created are dropped and the sequences start again — the template's
    state, in ~50 ms. It is then renamed, so the next test sees a new URL (caches keyed by
    the database's URL, such as tag ids, never outlive it). Resets and new copies run on
    a helper thread; only the databases left at the end of the session are dropped.

    Every database is created with ``synchronous_commit = off`` (every session on it, the
    ``siyu`` processes' too): a commit returns without waiting for its WAL to reach the
    disk, which took 2-6 ms of a machine whose disk other runs share, against 0.2 ms.
    What other sessions see is the same (a commit is visible at once either way); only
    the server's own crash could lose the last commits, and no test crashes the server.
    """

    def __init__(self) -> None:
        self._admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT", poolclass=NullPool)
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pg-databases")
        self._free: deque[Future[str]] = deque()
        self._tables: list[str] = []
        self.template: str | None = None

    def create(self, template: str | None = None) -> str:
        """A new database, empty or a copy of ``template``; returns its URL."""
        return self._worker.submit(self._create, template).result()

    def set_template(self, url: str) -> None:
        """Use the migrated database at ``url`` as the template of every copy."""
        engine = create_engine(url, poolclass=NullPool)
        try:
            self._tables = inspect(engine).get_table_names()
        finally:
            engine.dispose()
        self.template = url.rsplit("/", 1)[1]

    def copy_of_template(self) -> str:
        """A database in the template's state: one a test gave back, else a new copy."""
        assert self.template is not None
        if self._free:
            return self._free.popleft().result()
        return self.create(self.template)

    def give_back(self, url: str) -> None:
        """The test is done with this copy: reset it (in the background) for the next one."""
        self._free.append(self._worker.submit(self._reset, url))

    def drop(self, url: str) -> None:
        self._worker.submit(self._drop, url)

    def close(self) -> None:
        """Drop every database of the session (the copies and the template)."""
        while self._free:
            with contextlib.suppress(Exception):  # a failed reset has nothing to drop
                self.drop(self._free.popleft().result())
        if self.template is not None:
            self.drop(_pg_database_url(self.template))
        self._worker.shutdown(wait=True)
        self._admin.dispose()

    def _create(self, template: str | None) -> str:
        name = f"siyu_test_{uuid.uuid4().hex[:10]}"
        clause = f' TEMPLATE "{template}"' if template else ""
        with self._admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"{clause}'))
            conn.execute(text(f'ALTER DATABASE "{name}" SET synchronous_commit = off'))
        return _pg_database_url(name)

    def _drop(self, url: str) -> None:
        name = url.rsplit("/", 1)[1]
        with self._admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    def _reset(self, url: str) -> str:
        """Bring a used copy back to the template's state; a fresh copy if that fails.

        The copy is renamed first, right after its sessions are ended, and cleaned under
        its new name: a pool or thread the finished test left behind can only reconnect to
        the old name, which no longer exists, so it cannot write into the next test's copy.
        """
        name = url.rsplit("/", 1)[1]
        fresh = f"siyu_test_{uuid.uuid4().hex[:10]}"
        try:
            with self._admin.connect() as conn:
                conn.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = :name AND pid <> pg_backend_pid()"
                    ),
                    {"name": name},
                )
                conn.execute(text(f'ALTER DATABASE "{name}" RENAME TO "{fresh}"'))
            fresh_url = _pg_database_url(fresh)
            engine = create_engine(fresh_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
            try:
                with engine.connect() as conn:
                    present = inspect(conn).get_table_names()
                    extra = [t for t in present if t not in self._tables]
                    kept = [t for t in present if t in self._tables and t != "alembic_version"]
                    conn.exec_driver_sql(
                        "SET session_replication_role = replica; "
                        + "".join(f'DROP TABLE IF EXISTS "{t}" CASCADE; ' for t in extra)
                        + "".join(f'DELETE FROM "{t}"; ' for t in kept)
                        + "SELECT setval(c.oid, 1, false) FROM pg_class c JOIN pg_namespace n "
                        "ON n.oid = c.relnamespace WHERE c.relkind = 'S' AND n.nspname = 'public'"
                    )
            finally:
                engine.dispose()
            return fresh_url
        except Exception:  # e.g. a session reconnected before the rename: a new copy then
            self._drop(url)
            self._drop(_pg_database_url(fresh))
            assert self.template is not None
            return self._create(self.template)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgDatabases]:
    """The session's PostgreSQL databases, with a template migrated once."""
    databases = PgDatabases()
    try:
        url = databases.create()
    except Exception as exc:  # pragma: no cover - environment problem, say it plainly
        databases.close()
        pytest.fail(f"PostgreSQL at {PG_ADMIN_URL} is required for these tests: {exc}")
    database = Database(url)
    try:
        database.migrate()
    finally:
        database.close()  # CREATE DATABASE … TEMPLATE needs the template without sessions
    databases.set_template(url)
    yield databases
    databases.close()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated once for the session, its WAL folded in; tests get copies."""
    path = tmp_path_factory.mktemp("template") / "siyu.db"
    database = Database(f"sqlite:///{path}")
    try:
        database.migrate()
        with database.engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        database.close()
    return path


@pytest.fixture
def sqlite_url(tmp_path: Path, sqlite_template: Path) -> str:
    """A migrated SQLite database of this test's own (a copy of the template)."""
    path = tmp_path / "siyu.db"
    shutil.copyfile(sqlite_template, path)
    return f"sqlite:///{path}"


@pytest.fixture
def pg_url(pg_server: PgDatabases) -> Iterator[str]:
    """A migrated PostgreSQL database, in the template's state, for this test alone."""
    url = pg_server.copy_of_template()
    yield url
    pg_server.give_back(url)


@pytest.fixture
def empty_sqlite_url(tmp_path: Path) -> str:
    """A SQLite database with no tables at all (for tests of the migrations themselves)."""
    return f"sqlite:///{tmp_path / 'empty.db'}"


@pytest.fixture
def empty_pg_url(pg_server: PgDatabases) -> Iterator[str]:
    """An empty PostgreSQL database (for tests of the migrations themselves)."""
    url = pg_server.create()
    yield url
    pg_server.drop(url)


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_db_url(request: pytest.FixtureRequest) -> str:
    """An empty database on SQLite and on PostgreSQL (tests of the migrations themselves)."""
    if request.param == "sqlite":
        return request.getfixturevalue("empty_sqlite_url")
    return request.getfixturevalue("empty_pg_url")


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest) -> str:
    """The same test on SQLite and on PostgreSQL (storage contract tests); migrated."""
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_url")
    return request.getfixturevalue("pg_url")


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    """A migrated database on each backend."""
    database = Database(db_url)
    yield database
    database.close()


@pytest.fixture
def sqlite_db(sqlite_url: str) -> Iterator[Database]:
    """A migrated SQLite database."""
    database = Database(sqlite_url)
    yield database
    database.close()


@pytest.fixture
def redis_url() -> Iterator[str]:
    """An empty Redis database of this test's own, for tests whose processes share Redis.

    Parallel test workers (and parallel runs on the same server) must not flush or count
    each other's keys, so a test claims a free database number with ``SET NX`` (a claim
    that expires, should the test be killed) and gives it back, emptied, at the end.
    """
    import redis

    claims = redis.Redis.from_url(f"{REDIS_SERVER}/0")
    token = uuid.uuid4().hex
    deadline = time.monotonic() + 120
    number = None
    while number is None:
        number = next(
            (n for n in REDIS_DATABASES if claims.set(f"siyu:test:db:{n}", token, nx=True, ex=900)),
            None,
        )
        if number is None:
            if time.monotonic() > deadline:
                pytest.fail(f"no free Redis test database in {list(REDIS_DATABASES)}")
            time.sleep(0.1)
    url = f"{REDIS_SERVER}/{number}"
    database = redis.Redis.from_url(url)
    database.flushdb()
    try:
        yield url
    finally:
        database.flushdb()
        database.close()
        if claims.get(f"siyu:test:db:{number}") == token.encode():
            claims.delete(f"siyu:test:db:{number}")
        claims.close()


@pytest.fixture
def fake_api() -> Iterator[FakeWechatApi]:
    """The fake WeChat / WeCom HTTP API on a free local port."""
    fake = FakeWechatApi(free_port()).start()
    yield fake
    fake.stop()


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
        web=replace(defaults.web, **TEST_PASSWORD_COST),
        # The example config's manager: the sandbox page's manager persona.
        roles=replace(defaults.roles, managers=["sandbox:manager"]),
    )
