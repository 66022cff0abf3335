"""Benchmark: prepare a campaign (segment stream + render + outbox insert) for N customers.

    .venv/bin/python -m bench.campaign --backend postgresql --customers 1000000
    .venv/bin/python -m bench.campaign --backend sqlite --customers 1000000

Reports rows/s and peak RSS of Siyu's path (bot.marketing.campaigns.manage.launch: chunked keyset
stream, bulk policy, compiled sandboxed template, COPY/executemany into the outbox), and in
the same run the raw ceiling of the same work: plain Jinja2 render plus a driver-level bulk
insert (COPY on PostgreSQL, executemany on SQLite) of the same rows into a copy of the
outbox table, with no segment, policy or idempotency. PostgreSQL uses a throwaway database
next to $SIYU_TEST_PG_URL (default postgresql://postgres@127.0.0.1:5432/test).
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import jinja2
from sqlalchemy import create_engine, text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.app.config import load_config
from bot.app.services import Services
from bot.core.clock import FakeClock
from bot.core.templating import Renderer
from bot.marketing.campaigns.manage import create_campaign, launch
from bot.marketing.campaigns.spec import parse_spec
from storage.bulk import sqlite_time
from storage.db import Database, normalize_url

TEXT = "{{ customer.name }}，早上好！今天的早餐已经准备好了 ☕ 回复「退订」不再接收此类消息。"
NOW = datetime(2026, 3, 6, 2, 0, tzinfo=UTC)


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_db(backend: str) -> tuple[str, callable]:
    if backend == "sqlite":
        path = Path(tempfile.mkdtemp()) / "bench.db"
        return f"sqlite:///{path}", lambda: None
    admin_url = normalize_url(
        os.environ.get("SIYU_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
    )
    name = f"siyu_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    return admin_url.rsplit("/", 1)[0] + f"/{name}", drop


def fill(db: Database, n: int) -> None:
    raw = db.engine.raw_connection()
    try:
        cur = raw.cursor()
        if db.is_postgres:
            with cur.copy(
                "COPY customers (display_name, locale, timezone, marketing_opt_out, created_at) FROM STDIN"
            ) as cp:
                for i in range(n):
                    cp.write_row((f"顾客{i}", "zh-CN", "Asia/Shanghai", False, NOW))
            cur.execute(
                "INSERT INTO identities (customer_id, channel, external_id, display_name, unreachable, created_at) "
                "SELECT id, 'sandbox', 'u' || id, '', false, created_at FROM customers"
            )
        else:
            stamp = sqlite_time(NOW)
            cur.executemany(
                "INSERT INTO customers (display_name, locale, timezone, marketing_opt_out, created_at) VALUES (?, 'zh-CN', 'Asia/Shanghai', 0, ?)",
                ((f"顾客{i}", stamp) for i in range(n)),
            )
            cur.execute(
                "INSERT INTO identities (customer_id, channel, external_id, display_name, unreachable, created_at) "
                "SELECT id, 'sandbox', 'u' || id, '', 0, created_at FROM customers"
            )
        raw.commit()
        # a live database has statistics; a freshly filled one gets them here
        cur.execute("ANALYZE")
        raw.commit()
    finally:
        raw.close()


def ceiling(db: Database, n: int, chunk: int) -> float:
    """Plain Jinja2 + driver-level bulk insert of the same rows (no segment, no policy)."""
    template = jinja2.Environment().from_string(TEXT)
    raw = db.engine.raw_connection()
    cols = "idempotency_key, channel, chat_id, user_id, customer_id, purpose, priority, payload, status, attempts, next_attempt_at, created_at"
    cur = raw.cursor()
    if db.is_postgres:
        cur.execute("CREATE TABLE bench_outbox (LIKE outbox INCLUDING ALL)")
    else:
        cur.execute("CREATE TABLE bench_outbox AS SELECT * FROM outbox WHERE 0")
    raw.commit()
    import json

    start = time.perf_counter()
    for base in range(1, n + 1, chunk):
        ids = range(base, min(base + chunk, n + 1))
        rows = [
            (
                f"raw:{i}:main",
                "sandbox",
                f"u{i}",
                f"u{i}",
                i,
                "campaign",
                10,
                json.dumps(
                    {"text": template.render(customer={"name": f"顾客{i}"})}, ensure_ascii=False
                ),
                "pending",
                0,
            )
            for i in ids
        ]
        if db.is_postgres:
            with cur.copy(f"COPY bench_outbox ({cols}) FROM STDIN") as cp:
                for r in rows:
                    cp.write_row((*r, NOW, NOW))
        else:
            stamp = sqlite_time(NOW)
            cur.executemany(
                f"INSERT INTO bench_outbox ({cols}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                [(*r, stamp, stamp) for r in rows],
            )
        raw.commit()
    elapsed = time.perf_counter() - start
    raw.close()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="postgresql")
    parser.add_argument("--customers", type=int, default=1_000_000)
    args = parser.parse_args()
    url, drop = make_db(args.backend)
    config = load_config(None, environ={})
    config = config.replace(
        marketing=replace(config.marketing, quiet_hours="00:00-00:00"),
        campaigns=replace(config.campaigns, chunk_size=5000),
    )
    db = Database(url)
    try:
        db.migrate()
        t0 = time.perf_counter()
        fill(db, args.customers)
        print(
            f"{args.backend}: {args.customers} customers created in {time.perf_counter() - t0:.1f}s"
        )
        rss_before = rss_mb()
        clock = FakeClock(NOW)
        services = Services(db, config, Renderer(), clock)
        with db.transaction() as session:
            spec = parse_spec(f'bench segment="opt_out:no" holdout=0 text="{TEXT}"', config)
            cid = create_campaign(
                session, spec, config=config, renderer=services.renderer, now=NOW
            ).id
        start = time.perf_counter()
        result = launch(services, cid)
        siyu = time.perf_counter() - start
        rss_siyu = rss_mb()
        raw = ceiling(db, args.customers, 5000)
        rate, raw_rate = result.new_rows / siyu, args.customers / raw
        print(
            f"siyu:    {result.new_rows} rows queued in {siyu:.1f}s = {rate:,.0f} rows/s "
            f"(+{args.customers} campaign_targets rows)"
        )
        print(f"ceiling: {args.customers} rows in {raw:.1f}s = {raw_rate:,.0f} rows/s")
        print(f"ratio:   {rate / raw_rate:.0%} of the raw ceiling")
        print(f"peak RSS: {rss_siyu:.0f} MB (after customer set-up: {rss_before:.0f} MB)")
    finally:
        db.close()
        drop()


if __name__ == "__main__":
    main()
