"""Bulk, idempotent outbox inserts for campaigns (thousands of rows per statement).

Per-row ORM inserts are about ten times slower than the database can take rows. On
PostgreSQL the rows are ``COPY``-ed into a temporary table and moved with one
``INSERT ... SELECT ... ON CONFLICT (idempotency_key) DO NOTHING``; on SQLite they go
through the driver's ``executemany`` of ``INSERT ... ON CONFLICT DO NOTHING``. Either way a key queued
before is skipped, so a re-run never queues a message twice.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import NamedTuple

from sqlalchemy.orm import Session

__all__ = ["OutboxRow", "insert_outbox_rows", "insert_target_rows", "sqlite_time"]

COLUMNS = (
    "idempotency_key",
    "channel",
    "chat_id",
    "user_id",
    "customer_id",
    "purpose",
    "priority",
    "payload",
    "status",
    "attempts",
    "next_attempt_at",
    "created_at",
)


class OutboxRow(NamedTuple):
    """One outbox row to insert (payload as a dict; times timezone-aware)."""

    idempotency_key: str
    channel: str
    chat_id: str
    user_id: str
    customer_id: int | None
    purpose: str
    priority: int
    payload: dict
    next_attempt_at: datetime
    created_at: datetime


def sqlite_time(value: datetime) -> str:
    """A UTC datetime in the text form SQLAlchemy stores on SQLite."""
    return value.astimezone(UTC).replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")


def insert_outbox_rows(session: Session, rows: Sequence[OutboxRow]) -> int:
    """Insert rows not queued before (by idempotency key); returns how many were new."""
    if not rows:
        return 0
    connection = session.connection()
    raw = connection.connection.driver_connection
    if connection.dialect.name == "postgresql":
        return _postgres(raw, rows)
    return _sqlite(raw, rows)


def _postgres(raw, rows: Sequence[OutboxRow]) -> int:
    cols = ", ".join(COLUMNS)
    with raw.cursor() as cur:
        cur.execute(
            "CREATE TEMP TABLE IF NOT EXISTS siyu_outbox_load (idempotency_key text, "
            "channel text, chat_id text, user_id text, customer_id bigint, purpose text, "
            "priority integer, payload json, status text, attempts integer, "
            "next_attempt_at timestamptz, created_at timestamptz) ON COMMIT DELETE ROWS"
        )
        cur.execute("TRUNCATE siyu_outbox_load")
        with cur.copy(f"COPY siyu_outbox_load ({cols}) FROM STDIN") as copy:
            for r in rows:
                copy.write_row(
                    (
                        r.idempotency_key,
                        r.channel,
                        r.chat_id,
                        r.user_id,
                        r.customer_id,
                        r.purpose,
                        r.priority,
                        json.dumps(r.payload, ensure_ascii=False),
                        "pending",
                        0,
                        r.next_attempt_at,
                        r.created_at,
                    )
                )
        cur.execute(
            f"INSERT INTO outbox ({cols}) SELECT {cols} FROM siyu_outbox_load "
            "ON CONFLICT (idempotency_key) DO NOTHING"
        )
        return cur.rowcount or 0


def _sqlite(raw, rows: Sequence[OutboxRow]) -> int:
    cols = ", ".join(COLUMNS)
    marks = ", ".join("?" * len(COLUMNS))
    cur = raw.cursor()
    before = raw.total_changes
    cur.executemany(
        f"INSERT INTO outbox ({cols}) VALUES ({marks}) ON CONFLICT (idempotency_key) DO NOTHING",
        [
            (
                r.idempotency_key,
                r.channel,
                r.chat_id,
                r.user_id,
                r.customer_id,
                r.purpose,
                r.priority,
                json.dumps(r.payload, ensure_ascii=False),
                "pending",
                0,
                sqlite_time(r.next_attempt_at),
                sqlite_time(r.created_at),
            )
            for r in rows
        ],
    )
    cur.close()
    return raw.total_changes - before


TARGET_COLUMNS = ("campaign_id", "customer_id", "arm", "variant", "status", "reason", "created_at")


def insert_target_rows(session: Session, rows: Sequence[dict]) -> None:
    """Bulk-insert ``campaign_targets`` rows, keeping any recorded before (same key)."""
    if not rows:
        return
    connection = session.connection()
    raw = connection.connection.driver_connection
    cols = ", ".join(TARGET_COLUMNS)
    if connection.dialect.name == "postgresql":
        with raw.cursor() as cur:
            cur.execute(
                "CREATE TEMP TABLE IF NOT EXISTS siyu_target_load (campaign_id bigint, "
                "customer_id bigint, arm text, variant text, status text, reason text, "
                "created_at timestamptz) ON COMMIT DELETE ROWS"
            )
            cur.execute("TRUNCATE siyu_target_load")
            with cur.copy(f"COPY siyu_target_load ({cols}) FROM STDIN") as copy:
                for r in rows:
                    copy.write_row(tuple(r[c] for c in TARGET_COLUMNS))
            cur.execute(
                f"INSERT INTO campaign_targets ({cols}) SELECT {cols} FROM siyu_target_load "
                "ON CONFLICT (campaign_id, customer_id) DO NOTHING"
            )
        return
    cur = raw.cursor()
    cur.executemany(
        f"INSERT INTO campaign_targets ({cols}) VALUES ({', '.join('?' * len(TARGET_COLUMNS))}) "
        "ON CONFLICT (campaign_id, customer_id) DO NOTHING",
        [
            tuple(sqlite_time(r[c]) if c == "created_at" else r[c] for c in TARGET_COLUMNS)
            for r in rows
        ],
    )
    cur.close()
