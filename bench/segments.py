"""Benchmark: RFM recompute and segment counts on a large generated customer base.

    .venv/bin/python bench/segments.py --customers 1000000 --orders 5000000 --backend both
    .venv/bin/python bench/segments.py --customers 20000 --orders 100000   # quick run

Generates customers, tags and orders with driver-level bulk loads (psycopg COPY on
PostgreSQL, sqlite3 executemany on SQLite) in fixed-size chunks, so the generator's memory
does not grow with the size; then times the RFM recompute and six segment counts (the sixth on interest scores), shows
PostgreSQL's plan for each count (EXPLAIN), and prints the process's peak RSS.

PostgreSQL: a throwaway database is created next to --pg-url's and dropped afterwards
(``--keep`` keeps it). SQLite: a file under var/bench/ (removed unless --keep).
"""

from __future__ import annotations

import argparse
import math
import random
import resource
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import text

from bench.pgdb import throwaway_database
from bot.app.config import load_config
from bot.customers.rfm import recompute_scores
from bot.customers.segments import compile_segment, count_segment
from storage.db import Database
from storage.tag_scores import days_since_epoch, rate_for

NOW = datetime(2026, 6, 1, tzinfo=UTC)
CITIES = ["杭州", "上海", "北京", "广州", "深圳", "成都", "武汉", "南京", "西安", "苏州"] + [
    f"城市{i}" for i in range(30)
]
TAGS = ["母婴", "早餐", "周末出游", "活跃", "美妆", "数码", "宠物", "运动", "茶饮", "读书"]
SEGMENTS = [
    "tag:母婴 and city:杭州",
    "rfm:重要价值 and not tier:黑卡",
    "stage:dormant and spend >= 1000",
    "last_active < 30d and (tag:早餐 or tag:周末出游)",
    "tag:母婴 and rfm:重要价值 and not tier:黑卡 and last_active < 30d and city:杭州",
    "tagscore:母婴 >= 3 and city:杭州",
]
CHUNK = 50_000


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _ts(moment: datetime, sqlite: bool) -> str:
    if sqlite:
        return moment.replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")
    return moment.isoformat()


def customers(n: int, sqlite: bool, rnd: random.Random) -> Iterator[tuple]:
    for cid in range(1, n + 1):
        created = NOW - timedelta(days=rnd.randint(0, 900))
        active = (
            None
            if rnd.random() < 0.1
            else _ts(NOW - timedelta(minutes=rnd.randint(0, 300 * 1440)), sqlite)
        )
        city = rnd.choice(CITIES) if rnd.random() < 0.8 else None
        yield (cid, f"c{cid}", "zh-CN", "Asia/Shanghai", city, False, _ts(created, sqlite), active)


def customer_tags(n: int, sqlite: bool, rnd: random.Random) -> Iterator[tuple]:
    stamp = _ts(NOW - timedelta(days=3), sqlite)
    for cid in range(1, n + 1):
        for tag_id in rnd.sample(range(1, len(TAGS) + 1), rnd.choice((0, 0, 1, 1, 2, 3))):
            yield (cid, tag_id, "bench", stamp, stamp, None)


def tag_interest(n: int, sqlite: bool, rnd: random.Random) -> Iterator[tuple]:
    """Interest scores: about half the customers, 1-2 tags each, hits over 90 days."""
    rate = rate_for(30.0)
    for cid in range(1, n + 1):
        if rnd.random() < 0.5:
            continue
        for tag_id in rnd.sample(range(1, len(TAGS) + 1), rnd.choice((1, 2))):
            last = NOW - timedelta(minutes=rnd.randint(0, 90 * 1440))
            score = rnd.choice((1.0, 2.0, 3.0, 5.0, 8.0))
            key = math.log2(score) + rate * days_since_epoch(last)
            stamp = _ts(last, sqlite)
            yield (cid, tag_id, score, rate, key, int(score), stamp, stamp)


def orders(m: int, n: int, sqlite: bool, rnd: random.Random) -> Iterator[tuple]:
    stamp = _ts(NOW, sqlite)
    for oid in range(1, m + 1):
        cid = int(rnd.paretovariate(1.2) * n / 6) % n + 1
        at = NOW - timedelta(minutes=rnd.randint(0, 730 * 1440))
        cents = int(rnd.lognormvariate(5.0, 1.0) * 100)
        yield (oid, f"B{oid}", cid, cents, "CNY", _ts(at, sqlite), "{}", "bench", stamp)


TABLES = {
    "customers": "id, display_name, locale, timezone, city, marketing_opt_out, created_at, last_active_at",
    "customer_tags": "customer_id, tag_id, source, first_seen_at, last_seen_at, expires_at",
    "orders": "id, order_id, customer_id, amount_cents, currency, ordered_at, items, source, created_at",
    "tag_interest": "customer_id, tag_id, score, decay_rate, decay_key, hits, first_hit_at, last_hit_at",
}


def load(db: Database, n: int, m: int, seed: int) -> float:
    rnd = random.Random(seed)
    sqlite = not db.is_postgres
    started = time.perf_counter()
    tag_rows = [(i + 1, name, _ts(NOW, sqlite)) for i, name in enumerate(TAGS)]
    sources = {
        "customers": customers(n, sqlite, rnd),
        "customer_tags": customer_tags(n, sqlite, rnd),
        "orders": orders(m, n, sqlite, rnd),
        "tag_interest": tag_interest(n, sqlite, rnd),
    }
    raw = db.engine.raw_connection()
    try:
        cur = raw.cursor()
        if sqlite:
            cur.executemany("INSERT INTO tags (id, name, created_at) VALUES (?, ?, ?)", tag_rows)
            for table, columns in TABLES.items():
                marks = ", ".join("?" * len(columns.split(",")))
                chunk: list[tuple] = []
                for row in sources[table]:
                    chunk.append(row)
                    if len(chunk) == CHUNK:
                        cur.executemany(f"INSERT INTO {table} ({columns}) VALUES ({marks})", chunk)
                        chunk.clear()
                cur.executemany(f"INSERT INTO {table} ({columns}) VALUES ({marks})", chunk)
            cur.execute("ANALYZE")
        else:
            cur.executemany("INSERT INTO tags (id, name, created_at) VALUES (%s, %s, %s)", tag_rows)
            for table, columns in TABLES.items():
                with cur.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                    for row in sources[table]:
                        copy.write_row(row)
                print(f"  loaded {table} ({time.perf_counter() - started:.1f} s)", flush=True)
            for table in ("customers", "orders", "tags"):
                cur.execute(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))"
                )
            cur.execute("ANALYZE")
        raw.commit()
    finally:
        raw.close()
    return time.perf_counter() - started


def _report_rfm(dialect: str, label: str, rfm) -> None:
    steps = ", ".join(f"{k} {v:.1f} s" for k, v in rfm.steps.items())
    print(
        f"[{dialect}] RFM recompute ({label}): {rfm.seconds:.1f} s [{steps}] "
        f"({rfm.scored:,} scored, {rfm.tier_changes:,} tier and {rfm.stage_changes:,} "
        "stage changes)",
        flush=True,
    )


def run(url: str, n: int, m: int, explain: bool, seed: int) -> dict:
    config = load_config(None, environ={})
    db = Database(url)
    db.migrate()
    print(f"[{db.dialect}] generating {n:,} customers, {m:,} orders ...", flush=True)
    load_s = load(db, n, m, seed)
    print(f"[{db.dialect}] load: {load_s:.1f} s", flush=True)
    results: dict = {"backend": db.dialect, "load_s": load_s}
    with db.transaction() as session:
        rfm = recompute_scores(session, config, NOW)
    if db.is_postgres:
        with db.engine.connect() as conn:
            conn.execute(text("ANALYZE customer_scores"))
            conn.commit()
    results["rfm_s"] = rfm.seconds
    _report_rfm(db.dialect, "first", rfm)
    with db.transaction() as session:  # the nightly case: scores exist, few changes
        rfm = recompute_scores(session, config, NOW + timedelta(days=1))
    _report_rfm(db.dialect, "next night", rfm)
    counts = []
    for expression in SEGMENTS:
        with db.sessions() as session:
            started = time.perf_counter()
            found = count_segment(session, expression, config=config, now=NOW)
            seconds = time.perf_counter() - started
            counts.append((expression, found, seconds))
            print(f"[{db.dialect}] {seconds:6.3f} s  {found:>9,}  {expression}", flush=True)
            if explain and db.is_postgres:
                stmt = compile_segment(expression, config=config, now=NOW, session=session)
                sql = stmt.select_count().compile(
                    dialect=session.get_bind().dialect, compile_kwargs={"literal_binds": True}
                )
                plan = session.execute(text(f"EXPLAIN {sql}")).scalars().all()
                for line in plan:
                    if "Scan" in line or "Join" in line:
                        print(f"      {line.strip()}")
    results["counts"] = counts
    db.close()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--orders", type=int, default=5_000_000)
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--no-explain", action="store_true", help="skip EXPLAIN on PostgreSQL")
    parser.add_argument("--keep", action="store_true", help="keep the generated database")
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args()
    if args.customers < 1 or args.orders < 0:
        parser.error("--customers must be ≥ 1 and --orders ≥ 0")
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    for backend in backends:
        if backend == "sqlite":
            path = Path("var/bench") / f"segments-{uuid.uuid4().hex[:8]}.db"
            try:
                run(f"sqlite:///{path}", args.customers, args.orders, False, args.seed)
            finally:
                if not args.keep:
                    for suffix in ("", "-wal", "-shm"):
                        Path(f"{path}{suffix}").unlink(missing_ok=True)
        else:
            with throwaway_database(args.pg_url, keep=args.keep) as url:
                run(url, args.customers, args.orders, not args.no_explain, args.seed)
    print(f"peak RSS of this process: {peak_rss_mb():.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
