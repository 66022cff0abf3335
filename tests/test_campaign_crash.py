"""Exactly-once delivery of a campaign: two worker processes, one SIGKILLed midway.

3,000 messages are sixty claims of fifty: both workers go through many claims before
and after the kill, which is what exactly-once depends on (the kill lands with a batch
in flight, its leases run out, the other worker takes them over); more messages repeat
the same steps.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import replace

import psycopg
import pytest
from sqlalchemy import func, select

from bot.core.clock import SystemClock
from bot.core.templating import Renderer
from bot.marketing.campaigns.manage import create_campaign, launch
from bot.marketing.campaigns.spec import parse_spec
from storage.db import Database
from storage.models import OutboxMessage
from tests import delivery_proc
from tests.campaign_support import bulk_customers, services
from tests.fakes.platform import create_schema, libpq_dsn

N = 3_000


def _count(dsn: str, sql: str) -> int:
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql).fetchone()[0]


@pytest.mark.slow
def test_three_thousand_messages_two_workers_one_killed_each_delivered_once(pg_url, config):
    config = config.replace(
        marketing=replace(config.marketing, quiet_hours="00:00-00:00", max_per_window=0)
    )
    db = Database(pg_url)
    db.migrate()
    clock = SystemClock()
    dsn = libpq_dsn(pg_url)
    try:
        bulk_customers(db, N, clock.now())
        svc = services(db, config, clock)
        with db.transaction() as session:
            spec = parse_spec(
                'big segment="opt_out:no" holdout=0 text="hi {{ customer.name }}"', config
            )
            cid = create_campaign(
                session, spec, config=config, renderer=Renderer(), now=clock.now()
            ).id
        result = launch(svc, cid)
        assert result.new_rows == N
        create_schema(dsn)
        workers = [delivery_proc.spawn(pg_url) for _ in range(2)]
        deadline = time.monotonic() + 60
        while _count(dsn, "SELECT count(*) FROM fake_deliveries") < N // 4:
            assert time.monotonic() < deadline, "workers made no progress"
            time.sleep(0.05)
        victim = workers[0]
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait()
        at_kill = _count(dsn, "SELECT count(*) FROM fake_deliveries")
        assert at_kill < N  # killed midway
        _, err = workers[1].communicate(timeout=180)
        assert workers[1].returncode == 0, err

        with db.sessions() as session:
            statuses = dict(
                session.execute(
                    select(OutboxMessage.status, func.count()).group_by(OutboxMessage.status)
                ).all()
            )
        assert statuses == {"sent": N}
        assert _count(dsn, "SELECT count(*) FROM fake_deliveries") == N
        assert (
            _count(
                dsn,
                "SELECT count(*) FROM fake_deliveries d JOIN outbox o "
                "ON o.idempotency_key = d.idempotency_key",
            )
            == N
        )
        repeats = _count(
            dsn,
            "SELECT count(*) - count(DISTINCT idempotency_key) FROM fake_attempts",
        )
        # Only sends in flight at the kill may be attempted again (the platform dedupes them).
        assert repeats <= 50
    finally:
        db.close()
