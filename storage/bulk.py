"""Bulk, idempotent outbox and campaign-target inserts (thousands of rows per statement).

Per-row ORM inserts are about ten times slower than the database can take rows. Rows are
plain tuples in :data:`COLUMNS` / :data:`TARGET_COLUMNS` order (payload already JSON text,
times timezone-aware).

* :func:`insert_new` is the fast path for rows the caller believes were never queued (no
  earlier row for the customer under this push): on PostgreSQL it ``COPY``-es them straight
  into ``outbox`` and ``campaign_targets`` inside a savepoint; if a unique key says
  otherwise (a concurrent or earlier run did queue one), it rolls back to the savepoint and
  takes the safe path for the whole chunk. The unique keys stay the guarantee.
* :func:`insert_outbox_rows` / :func:`insert_target_rows` are the safe path: on PostgreSQL
  ``COPY`` into a temporary table and one ``INSERT ... SELECT ... ON CONFLICT DO NOTHING``;
  on SQLite the driver's ``executemany`` of ``INSERT ... ON CONFLICT DO NOTHING``. Either
  way a key queued before is skipped, so a re-run never queues a message twice.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import psycopg
from sqlalchemy.orm import Session

__all__ = [
    "COLUMNS",
    "TARGET_COLUMNS",
    "insert_new",
    "insert_outbox_rows",
    "insert_target_rows",
    "sqlite_time",
]

#: Outbox columns of a row tuple (status and attempts are filled in: pending, 0).
COLUMNS = (
    "idempotency_key",
    "channel",
    "chat_id",
    "user_id",
    "customer_id",
    "purpose",
    "priority",
    "payload",
    "next_attempt_at",
    "created_at",
)
_OUTBOX_COLS = ", ".join((*COLUMNS, "status", "attempts", "source_kind", "source_id"))
_OUTBOX_TYPES = (
    "text",
    "text",
    "text",
    "text",
    "int8",
    "text",
    "int4",
    "text",  # the payload is JSON text already; json_recv takes its bytes as they are
    "timestamptz",
    "timestamptz",
    "text",
    "int4",
    "text",
    "int8",
)
TARGET_COLUMNS = ("campaign_id", "customer_id", "arm", "variant", "status", "reason", "created_at")
_TARGET_COLS = ", ".join(TARGET_COLUMNS)
_TARGET_TYPES = ("int8", "int8", "text", "text", "text", "text", "timestamptz")


def sqlite_time(value: datetime) -> str:
    """A UTC datetime in the text form SQLAlchemy stores on SQLite."""
    return value.astimezone(UTC).replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")


def _stamper() -> Callable[[datetime], str]:
    """sqlite_time with a cache (a chunk's rows share a few distinct times)."""
    stamps: dict[datetime, str] = {}

    def stamp(value: datetime) -> str:
        text = stamps.get(value)
        if text is None:
            text = stamps[value] = sqlite_time(value)
        return text

    return stamp


def _raw(session: Session) -> tuple[str, Any]:
    """The dialect name and the DBAPI connection (sqlite3 or psycopg) under ``session``."""
    connection = session.connection()
    return connection.dialect.name, connection.connection.driver_connection


def insert_new(
    session: Session,
    rows: Sequence[tuple[Any, ...]],
    targets: Sequence[tuple[Any, ...]],
    *,
    source: tuple[str, int] | None = None,
) -> int:
    """Insert outbox rows and target rows expected to be new; returns new outbox rows.

    Rows that turn out to exist are skipped exactly as in the safe path. ``source`` is
    the ``(source_kind, source_id)`` of every row (the campaign or scenario queuing them).
    """
    tail = ("pending", 0, *(source or (None, None)))
    dialect, raw = _raw(session)
    if dialect == "postgresql" and (rows or targets):
        with raw.cursor() as cur:
            cur.execute("SAVEPOINT siyu_bulk")
            try:
                _copy(
                    cur,
                    f"outbox ({_OUTBOX_COLS})",
                    ((*r, *tail) for r in rows),
                    _OUTBOX_TYPES,
                )
                _copy(cur, f"campaign_targets ({_TARGET_COLS})", targets, _TARGET_TYPES)
            except psycopg.errors.UniqueViolation:
                cur.execute("ROLLBACK TO SAVEPOINT siyu_bulk")
            else:
                cur.execute("RELEASE SAVEPOINT siyu_bulk")
                return len(rows)
    new = insert_outbox_rows(session, rows, source=source)
    insert_target_rows(session, targets)
    return new


def _copy(
    cur: psycopg.Cursor[Any], table: str, rows: Iterable[Sequence[Any]], types: Sequence[str]
) -> None:
    """COPY rows in the binary format (no text parsing on the server)."""
    with cur.copy(f"COPY {table} FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(types)
        write = copy.write_row
        for r in rows:
            write(r)


def insert_outbox_rows(
    session: Session, rows: Sequence[tuple[Any, ...]], *, source: tuple[str, int] | None = None
) -> int:
    """Insert rows not queued before (by idempotency key); returns how many were new.
    ``source`` is the ``(source_kind, source_id)`` of every row, if any."""
    if not rows:
        return 0
    tail = ("pending", 0, *(source or (None, None)))
    dialect, raw = _raw(session)
    if dialect == "postgresql":
        with raw.cursor() as cur:
            cur.execute(
                "CREATE TEMP TABLE IF NOT EXISTS siyu_outbox_load (idempotency_key text, "
                "channel text, chat_id text, user_id text, customer_id bigint, purpose text, "
                "priority integer, payload json, next_attempt_at timestamptz, "
                "created_at timestamptz, status text, attempts integer, source_kind text, "
                "source_id bigint) ON COMMIT DELETE ROWS"
            )
            cur.execute("TRUNCATE siyu_outbox_load")
            _copy(
                cur,
                f"siyu_outbox_load ({_OUTBOX_COLS})",
                ((*r, *tail) for r in rows),
                _OUTBOX_TYPES,
            )
            cur.execute(
                f"INSERT INTO outbox ({_OUTBOX_COLS}) SELECT {_OUTBOX_COLS} FROM siyu_outbox_load "
                "ON CONFLICT (idempotency_key) DO NOTHING"
            )
            return int(cur.rowcount or 0)
    marks = ", ".join("?" * (len(COLUMNS) + len(tail)))
    cur = raw.cursor()
    before = raw.total_changes
    stamp = _stamper()
    cur.executemany(
        f"INSERT INTO outbox ({_OUTBOX_COLS}) VALUES ({marks}) "
        "ON CONFLICT (idempotency_key) DO NOTHING",
        [(*r[:8], stamp(r[8]), stamp(r[9]), *tail) for r in rows],
    )
    cur.close()
    return int(raw.total_changes - before)


def insert_target_rows(session: Session, rows: Sequence[tuple[Any, ...]]) -> None:
    """Bulk-insert ``campaign_targets`` rows, keeping any recorded before (same key)."""
    if not rows:
        return
    dialect, raw = _raw(session)
    if dialect == "postgresql":
        with raw.cursor() as cur:
            cur.execute(
                "CREATE TEMP TABLE IF NOT EXISTS siyu_target_load (campaign_id bigint, "
                "customer_id bigint, arm text, variant text, status text, reason text, "
                "created_at timestamptz) ON COMMIT DELETE ROWS"
            )
            cur.execute("TRUNCATE siyu_target_load")
            _copy(cur, f"siyu_target_load ({_TARGET_COLS})", rows, _TARGET_TYPES)
            cur.execute(
                f"INSERT INTO campaign_targets ({_TARGET_COLS}) SELECT {_TARGET_COLS} "
                "FROM siyu_target_load ON CONFLICT (campaign_id, customer_id) DO NOTHING"
            )
        return
    cur = raw.cursor()
    stamp = _stamper()
    cur.executemany(
        f"INSERT INTO campaign_targets ({_TARGET_COLS}) VALUES "
        f"({', '.join('?' * len(TARGET_COLUMNS))}) "
        "ON CONFLICT (campaign_id, customer_id) DO NOTHING",
        [(*r[:6], stamp(r[6])) for r in rows],
    )
    cur.close()
