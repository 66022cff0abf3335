"""The database: engine set-up (SQLite WAL or PostgreSQL), sessions, migrations.

Storage code is synchronous SQLAlchemy; async callers use :meth:`Database.run`, which runs a
function in the database's own thread pool (one thread for SQLite, so writers never fight
over its lock inside one process). Work that answers a platform against a deadline (the
journal of WeChat / WeCom callbacks) goes through :meth:`Database.run_first`: it is taken
before any work queued by :meth:`Database.run`, so routing a burst never starves it.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import itertools
import logging
import queue
import threading
import weakref
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

from sqlalchemy import create_engine, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, CursorResult, Engine, Result, make_url
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql import Executable

if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig  # imported when migrating

__all__ = ["Database", "insert_ignore", "insert_ignore_returning", "normalize_url", "rowcount"]

log = logging.getLogger(__name__)
T = TypeVar("T")
MIGRATIONS = Path(__file__).parent / "migrations"


def normalize_url(url: str) -> str:
    """Accept plain ``postgresql://`` and ``postgres://`` URLs and use psycopg 3 for them."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # pysqlite's own transaction handling emits BEGIN only before INSERT/UPDATE/DELETE: a
    # transaction whose first statement is a SELECT or a SAVEPOINT ran outside any BEGIN,
    # and releasing that savepoint committed it. Off: _sqlite_begin emits BEGIN instead
    # (SQLAlchemy's documented pysqlite recipe).
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def _sqlite_begin(conn: Connection) -> None:
    """Open each SQLite transaction: ``BEGIN IMMEDIATE`` for a write transaction
    (:meth:`Database.transaction`), a plain deferred ``BEGIN`` for the rest (reads).

    A deferred transaction takes its read snapshot at its first SELECT and the write lock
    only at its first write; if another process committed in between, that upgrade fails at
    once with "database is locked" (in WAL mode SQLite cannot honour busy_timeout for a
    stale snapshot). A write transaction therefore takes the write lock at BEGIN and waits
    (busy_timeout) for it there. Reads keep a deferred BEGIN: a consistent snapshot that
    never holds writers up (WAL), however long a page or an export streams.
    """
    if conn.get_execution_options().get("isolation_level") == "AUTOCOMMIT":
        return
    immediate = conn.get_execution_options().get(_WRITE_OPTION)
    # Straight to the driver, as the driver's own BEGIN was: not a statement of ours (no
    # statement events, no echo).
    cursor = conn.connection.cursor()
    try:
        cursor.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
    finally:
        cursor.close()


#: The execution option that marks a connection's transaction as one that writes (SQLite).
_WRITE_OPTION = "siyu_write_transaction"


class Database:
    """One database: its engine, a session factory and the thread pool async code uses."""

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = normalize_url(url)
        parsed = make_url(self.url)
        self.dialect = parsed.get_backend_name()
        if self.dialect == "sqlite":
            database = parsed.database or ""
            if database and database != ":memory:" and not database.startswith("file:"):
                Path(database).parent.mkdir(parents=True, exist_ok=True)
            self.engine: Engine = create_engine(
                self.url, echo=echo, connect_args={"check_same_thread": False, "timeout": 10}
            )
            event.listen(self.engine, "connect", _sqlite_pragmas)
            event.listen(self.engine, "begin", _sqlite_begin)
            workers = 1
        else:
            self.engine = create_engine(self.url, echo=echo, pool_size=10, pool_pre_ping=True)
            workers = 8
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._executor = _PriorityPool(workers, "siyu-db")
        self._heads: frozenset[str] | None = None

    @property
    def is_postgres(self) -> bool:
        return self.dialect == "postgresql"

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session in one transaction: committed on success, rolled back on error."""
        with self.sessions() as session, session.begin():
            if self.dialect == "sqlite":  # take the write lock at BEGIN (_sqlite_begin)
                session.connection(execution_options={_WRITE_OPTION: True})
            yield session

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run blocking database work off the event loop, in the database's thread pool."""
        return await asyncio.wrap_future(self._executor.submit(_LATER, fn, *args))

    async def run_first(self, fn: Callable[..., T], *args: Any) -> T:
        """Like :meth:`run`, but taken before everything :meth:`run` queued (work that
        answers against a deadline)."""
        return await asyncio.wrap_future(self._executor.submit(_FIRST, fn, *args))

    def migrate(self) -> None:
        """Bring the schema up to the newest Alembic revision."""
        from alembic import command

        command.upgrade(alembic_config(self.url, self.engine), "heads")

    def at_head(self) -> bool:
        """Whether the schema is at the newest Alembic revision(s) of this code."""
        from alembic.runtime.migration import MigrationContext
        from alembic.script import ScriptDirectory

        if self._heads is None:
            script = ScriptDirectory.from_config(alembic_config(self.url, self.engine))
            self._heads = frozenset(script.get_heads())
        with self.engine.connect() as conn:
            current = frozenset(MigrationContext.configure(conn).get_current_heads())
        return current == self._heads

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        self.engine.dispose()


_FIRST, _LATER = 0, 1


def _finish_at_exit(pool: weakref.ref[_PriorityPool]) -> None:
    if (alive := pool()) is not None:
        alive.shutdown(wait=True)


class _PriorityPool:
    """A fixed pool of threads taking work by priority, then in arrival order."""

    def __init__(self, workers: int, name: str) -> None:
        self._queue: queue.PriorityQueue[tuple[int, int, Any]] = queue.PriorityQueue()
        self._order = itertools.count()
        self._lock = threading.Lock()
        self._closed = False
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}_{i}", daemon=True)
            for i in range(workers)
        ]
        for thread in self._threads:
            thread.start()
        # Like the standard thread pool: work queued when the interpreter exits is finished.
        atexit.register(_finish_at_exit, weakref.ref(self))

    def submit(self, priority: int, fn: Callable[..., T], *args: Any) -> Future[T]:
        future: Future[T] = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("cannot schedule new futures after shutdown")
            self._queue.put((priority, next(self._order), (future, fn, args)))
        return future

    def shutdown(self, wait: bool = True) -> None:
        """Finish the queued work, then stop the threads."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for _ in self._threads:  # after everything queued: the highest number
                self._queue.put((_LATER + 1, next(self._order), None))
        if wait:
            for thread in self._threads:
                thread.join()

    def _work(self) -> None:
        while True:
            item = self._queue.get()[2]
            if item is None:
                return
            future, fn, args = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = fn(*args)
            except BaseException as exc:
                future.set_exception(exc)
            else:
                future.set_result(result)


def alembic_config(url: str, engine: Engine | None = None) -> AlembicConfig:
    """An Alembic Config pointing at our migrations (no alembic.ini needed)."""
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if engine is not None:
        cfg.attributes["engine"] = engine
    return cfg


def insert_ignore(
    session: Session,
    table: Any,
    rows: list[dict[str, Any]] | dict[str, Any],
    conflict: list[str],
) -> int:
    """INSERT ... ON CONFLICT DO NOTHING on SQLite and PostgreSQL; returns rows inserted."""
    return len(insert_ignore_returning(session, table, rows, conflict))


def insert_ignore_returning(
    session: Session,
    table: Any,
    rows: list[dict[str, Any]] | dict[str, Any],
    conflict: list[str],
    returning: str = "",
) -> list[Any]:
    """INSERT ... ON CONFLICT DO NOTHING for one row or many (one statement); returns the
    ``returning`` column's value (default: the first conflict column's) of each row inserted."""
    if not rows:
        return []
    dialect = session.get_bind().dialect.name
    target = getattr(table, "__table__", table)
    column = returning or conflict[0]
    key = (dialect, target, tuple(conflict), column)
    stmt = _INSERT_IGNORE.get(key)
    if stmt is None:  # statements are immutable: build each one once (hot path)
        make = postgresql.insert if dialect == "postgresql" else sqlite.insert
        stmt = make(target).on_conflict_do_nothing(index_elements=conflict)
        # rowcount is not reliable for INSERT .. ON CONFLICT on every driver: use RETURNING.
        stmt = _INSERT_IGNORE[key] = stmt.returning(target.c[column])
    return list(session.connection().execute(stmt, rows).scalars())


def rowcount(result: Result[Any]) -> int:
    """The rows an UPDATE or DELETE matched (``Session.execute`` types its result as a plain
    ``Result``; for these statements it is a ``CursorResult``)."""
    return cast("CursorResult[Any]", result).rowcount or 0


_INSERT_IGNORE: dict[tuple[str, Any, tuple[str, ...], str], Executable] = {}
