"""Bulk outbox inserts: the fast path falls back to the safe one when a key exists."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select

from storage.bulk import insert_new, insert_outbox_rows
from storage.models import OutboxMessage

NOW = datetime(2026, 3, 6, 2, 0, tzinfo=UTC)


def _row(key: str, text: str) -> tuple:
    return (key, "sandbox", "u1", "u1", None, "campaign", 10, f'{{"text": "{text}"}}', NOW, NOW)


def test_fast_insert_skips_keys_queued_before_and_keeps_the_first_row(db):
    with db.transaction() as session:
        assert insert_outbox_rows(session, [_row("p:1:main", "first")]) == 1
    with db.transaction() as session:
        # believed new, but p:1:main exists (a concurrent or earlier run queued it)
        assert insert_new(session, [_row("p:1:main", "again"), _row("p:2:main", "two")], []) == 1
    with db.sessions() as session:
        rows = session.execute(
            select(OutboxMessage.idempotency_key, OutboxMessage.payload).order_by(
                OutboxMessage.idempotency_key
            )
        ).all()
    assert rows == [("p:1:main", {"text": "first"}), ("p:2:main", {"text": "two"})]
