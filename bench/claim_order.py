"""Benchmark: what one outbox claim costs with a large marketing backlog on PostgreSQL.

    .venv/bin/python -m bench.claim_order --backlog 300000 --campaigns 3

Queues ``--backlog`` campaign messages split over ``--campaigns`` campaigns (plus a few
replies) in a throwaway database, then times, each ``--rounds`` times: reading the
marketing sources (what a worker does every ``fair_share_refresh_seconds``), a claim of
``--batch`` rows in the delivery order (transactional first, campaigns in fair shares), a
claim taking only transactional rows (a worker woken while full), and the single
``ORDER BY priority DESC, id`` claim this order replaced. Claims are rolled back, so every
round sees the same backlog.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update

from bench.pgdb import throwaway_database
from bot.outbox.queue import claim_due, marketing_sources
from bot.outbox.states import OutboxStatus
from storage.bulk import insert_outbox_rows
from storage.db import Database
from storage.models import OutboxMessage

TEXT = '{"text": "新品"}'


def _queue(db: Database, backlog: int, campaigns: int, now: datetime) -> None:
    per = backlog // campaigns
    for c in range(1, campaigns + 1):
        rows = [
            (f"c{c}:{i}", "fake", f"u{i}", f"u{i}", None, "campaign", 10, TEXT, now, now)
            for i in range(per)
        ]
        with db.transaction() as session:
            insert_outbox_rows(session, rows, source=("campaign", c))
    replies = [
        (f"r:{i}", "fake", f"r{i}", f"r{i}", None, "reply", 0, '{"text": "您好"}', now, now)
        for i in range(20)
    ]
    with db.transaction() as session:
        insert_outbox_rows(session, replies)
    with db.engine.connect() as conn:
        conn.exec_driver_sql("ANALYZE outbox")


def _old_claim(session, now: datetime, batch: int) -> list:
    due = (
        select(OutboxMessage.id)
        .where(OutboxMessage.channel.in_(["fake"]))
        .where(OutboxMessage.status == OutboxStatus.PENDING, OutboxMessage.next_attempt_at <= now)
        .order_by(OutboxMessage.priority.desc(), OutboxMessage.id)
        .limit(batch)
        .with_for_update(skip_locked=True)
    )
    stmt = (
        update(OutboxMessage)
        .where(OutboxMessage.id.in_(due.scalar_subquery()))
        .values(status="sending", claimed_by="bench")
        .returning(OutboxMessage.id)
    )
    return list(session.scalars(stmt))


def _time(db: Database, rounds: int, fn: Callable) -> tuple[float, int]:
    times, n = [], 0
    for _ in range(rounds):
        with db.sessions() as session:
            started = time.perf_counter()
            n = len(fn(session))
            times.append(time.perf_counter() - started)
            session.rollback()
    return statistics.median(times) * 1000, n


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backlog", type=int, default=300_000)
    p.add_argument("--campaigns", type=int, default=3)
    p.add_argument("--batch", type=int, default=50)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument(
        "--pg",
        default=os.environ.get("SIYU_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test"),
    )
    args = p.parse_args()
    with throwaway_database(args.pg) as url:
        db = Database(url)
        db.migrate()
        now = datetime.now(UTC)
        _queue(db, args.backlog, args.campaigns, now)
        with db.sessions() as session:
            sources = marketing_sources(session, ["fake"])
        later = now + timedelta(seconds=1)
        lease = timedelta(seconds=60)

        def claim(marketing: bool) -> Callable:
            return lambda s: claim_due(
                s,
                worker="bench",
                now=later,
                lease=lease,
                limit=args.batch,
                channels=["fake"],
                sources=sources,
                marketing=marketing,
            )

        print(f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f}")
        print(f"backlog {args.backlog} in {args.campaigns} campaigns + 20 replies")
        for name, fn in (
            ("marketing_sources (every refresh)", lambda s: marketing_sources(s, ["fake"])),
            (f"claim {args.batch}, delivery order", claim(True)),
            (f"claim {args.batch}, transactional only", claim(False)),
            (
                f"claim {args.batch}, priority/id (before)",
                lambda s: _old_claim(s, later, args.batch),
            ),
        ):
            ms, n = _time(db, args.rounds, fn)
            print(f"{name:<42} {ms:>8.1f} ms median  ({n} rows)")
        db.close()


if __name__ == "__main__":
    main()
