"""Benchmark: the loyalty, cohort, AARRR and survey reports on a large customer base.

    .venv/bin/python bench/measures.py --customers 1000000 --orders 5000000
    .venv/bin/python bench/measures.py --customers 20000 --orders 100000 --backend sqlite

Loads customers, tags and orders with bench/segments.py's generator, then interactions
(about three per customer), referrals (one newcomer in twenty came by invite) and survey
answers, recomputes RFM and lifecycle stages, and times each report (each one SQL
aggregate) over a 90-day period — and the cohorts over 12 months — with and without a
segment. Prints seconds per report and the process's peak RSS. Goal: under 2 s each on
PostgreSQL at 1,000,000 customers / 5,000,000 orders.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


from bench.pgdb import throwaway_database
from bench.segments import CHUNK, NOW, _ts, load, peak_rss_mb
from bot.app.config import load_config
from bot.customers.rfm import recompute_scores
from bot.measures.loyalty import aarrr, cohorts, loyalty
from bot.measures.periods import parse_period
from bot.measures.surveys import results
from storage.db import Database

KINDS = ("message", "message", "command", "button", "join")
EXTRA = {
    "interactions": "customer_id, event_id, channel, chat_id, kind, text, payload, occurred_at",
    "referrals": "referrer_id, referred_id, code, channel, via, created_at",
    "survey_responses": (
        "survey, kind, customer_id, channel, source, staff, score, comment, answered_at, flagged"
    ),
}


def extra_rows(n: int, sqlite: bool, rnd: random.Random):
    def interactions():
        for cid in range(1, n + 1):
            for _ in range(rnd.choice((0, 1, 2, 3, 4, 5, 6))):
                at = NOW - timedelta(minutes=rnd.randint(0, 400 * 1440))
                yield (cid, uuid.uuid4().hex, "telegram", str(cid), rnd.choice(KINDS), "",
                       "{}", _ts(at, sqlite))  # fmt: skip

    def referrals():
        for cid in range(2, n + 1):
            if rnd.random() < 0.05:
                at = NOW - timedelta(minutes=rnd.randint(0, 400 * 1440))
                yield (rnd.randint(1, cid - 1), cid, "abcdefgh", "telegram", "deep_link",
                       _ts(at, sqlite))  # fmt: skip

    def surveys():
        for cid in range(1, n + 1):
            if rnd.random() < 0.1:
                at = NOW - timedelta(minutes=rnd.randint(0, 120 * 1440))
                staff = rnd.choice((None, "alice", "bob"))
                yield ("nps", "nps", cid, "telegram", "bench", staff, rnd.randint(0, 10), None,
                       _ts(at, sqlite), False)  # fmt: skip

    return {"interactions": interactions(), "referrals": referrals(), "survey_responses": surveys()}


def load_extra(db: Database, n: int, seed: int) -> float:
    started = time.perf_counter()
    sqlite = not db.is_postgres
    sources = extra_rows(n, sqlite, random.Random(seed + 1))
    raw = db.engine.raw_connection()
    try:
        cur = raw.cursor()
        for table, columns in EXTRA.items():
            if sqlite:
                marks = ", ".join("?" * len(columns.split(",")))
                chunk: list[tuple] = []
                for row in sources[table]:
                    chunk.append(row)
                    if len(chunk) == CHUNK:
                        cur.executemany(f"INSERT INTO {table} ({columns}) VALUES ({marks})", chunk)
                        chunk.clear()
                cur.executemany(f"INSERT INTO {table} ({columns}) VALUES ({marks})", chunk)
            else:
                with cur.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                    for row in sources[table]:
                        copy.write_row(row)
            print(f"  loaded {table} ({time.perf_counter() - started:.1f} s)", flush=True)
        cur.execute("ANALYZE")
        raw.commit()
    finally:
        raw.close()
    return time.perf_counter() - started


def timed(label: str, fn) -> float:
    started = time.perf_counter()
    fn()
    elapsed = time.perf_counter() - started
    print(f"  {label:<40} {elapsed:7.3f} s", flush=True)
    return elapsed


def run(url: str, n: int, m: int, seed: int, *, reuse: bool = False) -> dict[str, float]:
    config = load_config(None, environ={})
    db = Database(url)
    db.migrate()
    if reuse:
        print(f"{db.engine.dialect.name}: reusing the loaded database {url}")
    else:
        print(f"{db.engine.dialect.name}: {n:,} customers, {m:,} orders")
        print(f"  base load {load(db, n, m, seed):.1f} s; extras {load_extra(db, n, seed):.1f} s")
        with db.transaction() as session:
            recompute_scores(session, config, NOW)
    zone = config.general.timezone
    last90 = parse_period("2026-03-03", "2026-06-01", zone=zone, now=NOW, default_days=90)
    year = parse_period("2025-06-01", "2026-06-01", zone=zone, now=NOW, default_days=365)
    figures: dict[str, float] = {}
    with db.sessions() as s:
        kw = {"config": config, "now": NOW}
        for seg in (None, "city:杭州"):
            suffix = f" [{seg}]" if seg else ""
            figures[f"loyalty 90d{suffix}"] = timed(
                f"loyalty 90 days{suffix}", lambda seg=seg: loyalty(s, last90, segment=seg, **kw)
            )
            figures[f"cohorts 12m{suffix}"] = timed(
                f"cohorts 12 months{suffix}",
                lambda seg=seg: cohorts(s, year, segment=seg, months=12, **kw),
            )
            figures[f"aarrr 90d{suffix}"] = timed(
                f"aarrr 90 days{suffix}", lambda seg=seg: aarrr(s, last90, segment=seg, **kw)
            )
            figures[f"survey 90d{suffix}"] = timed(
                f"survey nps 90 days{suffix}",
                lambda seg=seg: results(s, "nps", last90, segment=seg, **kw),
            )
    db.close()
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--orders", type=int, default=5_000_000)
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="postgresql")
    parser.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--keep", action="store_true", help="keep the loaded database")
    parser.add_argument("--reuse", metavar="URL", help="time the reports on a kept database")
    args = parser.parse_args()
    if args.reuse:
        run(args.reuse, 0, 0, args.seed, reuse=True)
        print(f"peak RSS of this process: {peak_rss_mb():.0f} MB")
        return 0
    if args.customers < 2 or args.orders < 0:
        parser.error("--customers must be ≥ 2 and --orders ≥ 0")
    if args.backend == "sqlite":
        path = Path("var/bench") / f"measures-{uuid.uuid4().hex[:8]}.db"
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            run(f"sqlite:///{path}", args.customers, args.orders, args.seed)
        finally:
            for suffix in ("", "-wal", "-shm") if not args.keep else ():
                Path(f"{path}{suffix}").unlink(missing_ok=True)
        if args.keep:
            print(f"kept: --reuse sqlite:///{path}")
    else:
        with throwaway_database(args.pg_url, keep=args.keep) as url:  # reuse with --reuse URL
            run(url, args.customers, args.orders, args.seed)
    print(f"peak RSS of this process: {peak_rss_mb():.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
