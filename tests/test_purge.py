"""``siyu purge`` (the CLI, as a subprocess) applies the ``[retention]`` periods in bounded
batches: old interactions, transcripts and finished outbox rows go; recent rows, rows
still waiting to be sent and rows the frequency cap still counts stay."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import func, select

from bot.app.purge import purge
from storage.db import Database
from storage.models import Customer, Interaction, OutboxMessage, SandboxMessage

ROOT = Path(__file__).resolve().parent.parent
NOW = datetime.now(UTC)


def _seed(db: Database) -> None:
    """Per kind: 5 rows 100 days old, 2 rows 3 days old; outbox rows in several states."""
    with db.transaction() as s:
        customer = Customer(display_name="王女士")
        s.add(customer)
        s.flush()
        for i, age in enumerate([100] * 5 + [3] * 2):
            at = NOW - timedelta(days=age)
            s.add(
                Interaction(
                    customer_id=customer.id,
                    event_id=f"e{i}",
                    channel="sandbox",
                    chat_id="u1",
                    kind="message",
                    text="你好",
                    occurred_at=at,
                )
            )
            s.add(
                SandboxMessage(
                    chat_id="u1", user_id="u1", direction="in", text="你好", created_at=at
                )
            )
            s.add(_outbox(f"sent-{i}", "sent", at))
        s.add(_outbox("old-pending", "pending", NOW - timedelta(days=100)))  # still to send
        s.add(_outbox("old-failed", "failed", NOW - timedelta(days=100)))
        s.add(_outbox("in-cap-window", "sent", NOW - timedelta(days=5)))  # cap counts it


def _outbox(key: str, status: str, at: datetime) -> OutboxMessage:
    return OutboxMessage(
        idempotency_key=key,
        channel="sandbox",
        chat_id="u1",
        user_id="u1",
        status=status,
        created_at=at,
        next_attempt_at=at,
    )


def _counts(db: Database) -> dict[str, int]:
    with db.sessions() as s:
        return {
            "interactions": s.scalar(select(func.count()).select_from(Interaction)),
            "transcripts": s.scalar(select(func.count()).select_from(SandboxMessage)),
            "outbox": s.scalar(select(func.count()).select_from(OutboxMessage)),
            "pending": s.scalar(select(func.count()).where(OutboxMessage.status == "pending")),
            "in_window": s.scalar(
                select(func.count()).where(OutboxMessage.idempotency_key == "in-cap-window")
            ),
        }


def _siyu(db_url: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SIYU_")}
    environ.update(SIYU_DATABASE_URL=db_url, LANG="en_US.UTF-8", PYTHONPATH=str(ROOT), **env)
    return subprocess.run(
        [sys.executable, "-m", "bot.app.cli", *args],
        capture_output=True,
        text=True,
        env=environ,
        timeout=120,
    )


RETENTION = {
    "SIYU_RETENTION_INTERACTIONS_DAYS": "30",
    "SIYU_RETENTION_TRANSCRIPTS_DAYS": "30",
    "SIYU_RETENTION_DELIVERED_OUTBOX_DAYS": "1",  # shorter than the 7-day cap window
    "SIYU_RETENTION_BATCH_SIZE": "2",
}


def test_purge_deletes_old_rows_in_batches_and_keeps_the_rest(pg_url, tmp_path):
    db = Database(pg_url)
    _seed(db)
    before = _counts(db)
    assert before == {
        "interactions": 7,
        "transcripts": 7,
        "outbox": 10,
        "pending": 1,
        "in_window": 1,
    }

    dry = _siyu(pg_url, "purge", "--dry-run", **RETENTION)
    assert dry.returncode == 0, dry.stderr
    assert "interactions: 5 row(s) would be deleted" in dry.stdout
    assert "delivered outbox rows: 6 row(s) would be deleted" in dry.stdout
    assert _counts(db) == before  # a dry run deletes nothing

    done = _siyu(pg_url, "purge", **RETENTION)
    assert done.returncode == 0, done.stderr
    assert "interactions: 5 row(s) deleted" in done.stdout
    assert "transcripts: 5 row(s) deleted" in done.stdout
    assert "delivered outbox rows: 6 row(s) deleted" in done.stdout
    assert _counts(db) == {
        "interactions": 2,
        "transcripts": 2,
        "outbox": 4,  # 2 recent sent + the pending one + the one in the cap window
        "pending": 1,
        "in_window": 1,
    }
    again = _siyu(pg_url, "purge", **RETENTION)
    assert "interactions: 0 row(s) deleted" in again.stdout
    db.close()


def test_purge_goes_in_bounded_batches(config, sqlite_url):
    db = Database(sqlite_url)
    _seed(db)
    cfg = config.replace(retention=replace(config.retention, interactions_days=30, batch_size=2))
    [result] = purge(db, cfg, NOW)
    assert (result.kind, result.deleted, result.batches) == ("interactions", 5, 3)
    assert _counts(db)["transcripts"] == 7  # no period set: kept
    db.close()


def test_purge_without_periods_deletes_nothing_and_says_so(sqlite_url):
    db = Database(sqlite_url)
    _seed(db)
    result = _siyu(sqlite_url, "purge")
    assert result.returncode == 0 and "nothing deleted" in result.stdout
    zh = _siyu(sqlite_url, "purge", "--lang", "zh-CN")
    assert "不删除任何数据" in zh.stdout
    assert _counts(db)["interactions"] == 7
    db.close()


def test_retention_settings_are_bounded():
    from bot.app.config import ConfigError, load_config

    for key, value in (
        ("SIYU_RETENTION_INTERACTIONS_DAYS", "-1"),
        ("SIYU_RETENTION_BATCH_SIZE", "0"),
    ):
        try:
            load_config(None, environ={key: value})
        except ConfigError as exc:
            assert "retention." in str(exc)
        else:
            raise AssertionError(f"{key}={value} was accepted")
