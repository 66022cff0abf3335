"""Benchmark: the manager console's queries on a large community, on PostgreSQL.

    .venv/bin/python bench/console.py                      # 1,000,000 customers, 5,000,000 orders
    .venv/bin/python bench/console.py --customers 100000 --orders 500000   # quick run

Loads customers, tags, interest scores and orders with bench/segments.py's loader, then adds
what the console reads besides: one identity per customer on four channels, 50 groups with
memberships (30% of customers, joins and leaves over 90 days), 2 inbound messages and 2
outbox rows per customer over 90 days, one launched campaign over a fifth of the customers
(targets, its outbox rows, coupon codes, a third redeemed), conversations standing in flows
(5% of customers) and five saved segments; computes RFM scores; runs ``VACUUM ANALYZE`` (what
autovacuum keeps up in a running database: statistics and the visibility map that index-only
scans rely on); then times, for each console page, the same loader the page runs (the first
call and the median of --repeat more) and prints the figures with the load average, and for a
page taking 0.25 s or more its slowest statements. Target: every page under 1 s at 1,000,000
customers.

A throwaway database is created next to --pg-url's and dropped afterwards (``--keep`` keeps it;
``--reuse URL`` times the pages again on a kept one, migrating it first).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import event, select, text

from bench.pgdb import throwaway_database
from bench.segments import NOW, load, peak_rss_mb
from bot.app.config import load_config
from bot.app.services import Services
from bot.conversations.flows import load_flows
from bot.conversations.staff import list_staff
from bot.core.clock import FakeClock
from bot.core.templating import Renderer
from bot.customers.rfm import recompute_scores
from bot.customers.segments import save_segment
from bot.marketing.coupons import sync_definitions
from bot.measures import rollup, surveys
from bot.measures.periods import parse_period
from bot.web.console import queries
from bot.web.console.campaigns import load_campaign
from bot.web.console.customers import load_profile
from bot.web.console.flows import flow_rows
from bot.web.console.groups import load_groups
from bot.web.console.measures import COHORT_MONTHS, PERIODS, load_measures, summary
from bot.web.console.segments import load_segments
from bot.web.console.tags import load_tags
from storage.campaigns import Campaign
from storage.coupons import CouponDefinition
from storage.db import Database

CHANNELS = ("wecom", "wechat", "telegram", "sandbox")
SAVED = {
    "hz_baby": "tag:母婴 and city:杭州",
    "vip_not_black": "rfm:重要价值 and not tier:黑卡",
    "dormant_spenders": "stage:dormant and spend >= 1000",
    "recent_breakfast": "last_active < 30d and (tag:早餐 or tag:周末出游)",
    "baby_fans": "tagscore:母婴 >= 3 and city:杭州",
}


def _ts(moment) -> str:
    return moment.isoformat()


def _copy(cur, table: str, columns: str, rows: Iterator[tuple]) -> None:
    with cur.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)


def load_console(db: Database, n: int, seed: int) -> tuple[float, int]:
    """Add the console's other tables; returns (seconds, campaign id)."""
    rnd = random.Random(seed + 1)
    started = time.perf_counter()
    config = load_config(None, environ={})
    with db.transaction() as session:
        sync_definitions(session, config.coupons, NOW)
        coupon_id = session.scalar(
            select(CouponDefinition.id).where(CouponDefinition.name == "breakfast5")
        )
        campaign = Campaign(
            name="bench_breakfast", segment="tag:早餐", variants={"items": []}, buttons={},
            coupon="breakfast5", status="running", verdict={}, created_by="bench",
            created_at=NOW - timedelta(days=3), launched_at=NOW - timedelta(days=3),
        )  # fmt: skip
        session.add(campaign)
        session.flush()
        campaign_id = campaign.id
    raw = db.engine.raw_connection()
    try:
        cur = raw.cursor()

        def ago(days: int):
            return NOW - timedelta(minutes=rnd.randint(0, days * 1440))

        _copy(
            cur,
            "identities",
            "customer_id, channel, external_id, display_name, unreachable, created_at",
            ((c, CHANNELS[c % 4], f"u{c}", f"c{c}", False, _ts(NOW)) for c in range(1, n + 1)),
        )
        _copy(
            cur,
            "groups",
            "id, channel, external_id, title, active, created_at",
            ((g, CHANNELS[g % 4], f"g{g}", f"社群{g}", True, _ts(NOW)) for g in range(1, 51)),
        )

        def memberships():
            for c in range(1, n + 1):
                if rnd.random() < 0.3:
                    left = rnd.random() < 0.1
                    yield (
                        rnd.randint(1, 50),
                        c,
                        not left,
                        _ts(ago(90)),
                        _ts(ago(30)) if left else None,
                    )

        _copy(
            cur, "memberships", "group_id, customer_id, active, joined_at, left_at", memberships()
        )
        _copy(
            cur,
            "interactions",
            "customer_id, event_id, channel, chat_id, kind, text, payload, occurred_at",
            (
                (
                    c,
                    uuid.uuid4().hex[:32],
                    CHANNELS[c % 4],
                    f"u{c}",
                    "message",
                    "你好",
                    "{}",
                    _ts(ago(90)),
                )
                for c in rnd.choices(range(1, n + 1), k=2 * n)
            ),
        )
        statuses = ("sent",) * 8 + ("failed", "pending")

        def outbox():
            for i in range(2 * n):
                c = rnd.randint(1, n)
                created = ago(90)
                status = rnd.choice(statuses)
                sent = (
                    _ts(created + timedelta(seconds=rnd.randint(0, 600)))
                    if status == "sent"
                    else None
                )
                yield (
                    f"bench:{i}",
                    CHANNELS[c % 4],
                    f"u{c}",
                    f"u{c}",
                    c,
                    "reply",
                    0,
                    '{"text": "hi"}',
                    status,
                    1,
                    _ts(created),
                    _ts(created),
                    sent,
                    "m" if sent else None,
                )

        columns = (
            "idempotency_key, channel, chat_id, user_id, customer_id, purpose, priority, payload, "
            "status, attempts, next_attempt_at, created_at, sent_at, platform_message_id"
        )
        _copy(cur, "outbox", columns, outbox())
        targets = sorted(rnd.sample(range(1, n + 1), n // 5))
        launched = NOW - timedelta(days=3)
        arm = {c: ("holdout" if rnd.random() < 0.05 else "rollout") for c in targets}
        _copy(
            cur,
            "campaign_targets",
            "campaign_id, customer_id, arm, variant, status, reason, created_at",
            (
                (
                    campaign_id,
                    c,
                    arm[c],
                    "main",
                    "held_out" if arm[c] == "holdout" else "queued",
                    None,
                    _ts(launched),
                )
                for c in targets
            ),
        )
        sent_to = [c for c in targets if arm[c] != "holdout"]
        _copy(
            cur,
            "outbox",
            columns,
            (
                (
                    f"campaign:{campaign_id}:{c}:main",
                    CHANNELS[c % 4],
                    f"u{c}",
                    f"u{c}",
                    c,
                    "campaign",
                    10,
                    '{"text": "早上好"}',
                    "sent",
                    1,
                    _ts(launched),
                    _ts(launched),
                    _ts(launched + timedelta(seconds=rnd.randint(0, 7200))),
                    "m",
                )
                for c in sent_to
            ),
        )

        def codes():
            for i, c in enumerate(sent_to):
                redeemed = rnd.random() < 0.3
                yield (
                    f"B{i:09d}",
                    f"campaign:{campaign_id}:{c}",
                    coupon_id,
                    c,
                    campaign_id,
                    "redeemed" if redeemed else "issued",
                    _ts(launched),
                    _ts(launched + timedelta(days=3)),
                    _ts(ago(3)) if redeemed else None,
                )

        _copy(
            cur,
            "coupon_codes",
            "code, issue_key, definition_id, customer_id, campaign_id, status, "
            "issued_at, expires_at, redeemed_at",
            codes(),
        )
        steps = ("destination", "dates", "party_size", "offer")
        _copy(cur, "conversations", "channel, chat_id, user_id, customer_id, flow, step, state, handoff_status, "
              "updated_at",
              ((CHANNELS[c % 4], f"u{c}", f"u{c}", c, "weekend_trip_inquiry", rnd.choice(steps), "{}", "bot",
                _ts(ago(14))) for c in rnd.sample(range(1, n + 1), n // 20)))  # fmt: skip
        cur.execute("ANALYZE")
        raw.commit()
    finally:
        raw.close()
    with db.transaction() as session:
        for name, expression in SAVED.items():
            save_segment(session, name, expression, config=config, now=NOW, created_by="bench")
    return time.perf_counter() - started, campaign_id


#: a page this slow (median) also gets its slowest statements printed
BREAKDOWN_FROM = 0.25


class Statements:
    """Every statement's time on ``db``, to print a slow page's per-query breakdown."""

    def __init__(self, db: Database) -> None:
        self.taken: list[tuple[float, str]] = []

        @event.listens_for(db.engine, "before_cursor_execute")
        def before(conn, cursor, statement, params, context, executemany):
            conn.info["bench_started"] = time.perf_counter()

        @event.listens_for(db.engine, "after_cursor_execute")
        def after(conn, cursor, statement, params, context, executemany):
            spent = time.perf_counter() - conn.info.pop("bench_started", time.perf_counter())
            self.taken.append((spent, " ".join(statement.split())))

    def show(self, calls: int, top: int = 4) -> None:
        """The statements that took longest, as the average per call of the page."""
        per: dict[str, float] = {}
        for spent, sql in self.taken:
            per[sql] = per.get(sql, 0.0) + spent / calls
        for sql, spent in sorted(per.items(), key=lambda kv: -kv[1])[:top]:
            print(f"{'':14}{spent * 1000:9.1f} ms    {sql[:110]}")


def _load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def timed(fn: Callable[[], object], repeat: int) -> tuple[float, float]:
    """(the first call, the median of ``repeat`` more): the first call also plans queries,
    warms caches and, for the dashboard, rolls up the finished days of its period."""
    started = time.perf_counter()
    fn()
    first = time.perf_counter() - started
    runs = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - started)
    return first, statistics.median(runs)


def _period(config, days: int):
    return parse_period(None, None, zone=config.general.timezone, now=NOW, default_days=days)


#: always timed first when ``--only`` picks pages: the dashboard's nightly job
ROLLUP = "nightly rollup (scheduler job)"


def run(
    url: str, n: int, m: int, seed: int, repeat: int, *, reuse: bool = False, only: str = ""
) -> list[tuple[str, float]]:
    config = load_config(None, environ={})
    db = Database(url)
    db.migrate()
    if reuse:
        print(f"[{db.dialect}] reusing the loaded database {url}", flush=True)
        with db.sessions() as session:
            campaign_id = session.scalar(
                select(Campaign.id).where(Campaign.name == "bench_breakfast")
            )
    else:
        print(f"[{db.dialect}] generating {n:,} customers, {m:,} orders ...", flush=True)
        print(f"  customers, tags, orders: {load(db, n, m, seed):.1f} s", flush=True)
        seconds, campaign_id = load_console(db, n, seed)
        print(f"  console tables: {seconds:.1f} s", flush=True)
        with db.transaction() as session:
            recompute_scores(session, config, NOW)
    # What autovacuum keeps up in a running database (the test server runs without it):
    # planner statistics, and the visibility map that lets index-only scans skip the table.
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        started = time.perf_counter()
        conn.execute(text("VACUUM ANALYZE"))
        print(f"  VACUUM ANALYZE: {time.perf_counter() - started:.1f} s", flush=True)
    statements = Statements(db)
    services = Services(db=db, config=config, renderer=Renderer(), clock=FakeClock(NOW))
    zone = ZoneInfo(config.general.timezone)
    library = load_flows(config.conversations.flows_dir or None, services.renderer)

    def with_session(fn):
        def call():
            with db.transaction() as session:
                return fn(session)

        return call

    pages: dict[str, Callable[[], object]] = {
        # the scheduler's nightly job: the dashboard's first visit then has nothing to catch up
        ROLLUP: with_session(lambda s: queries.roll_up(s, zone, NOW)),
        "dashboard (90 days)": with_session(
            lambda s: queries.dashboard(s, config, queries.Period.last(90, NOW, zone))
        ),
        "dashboard (30 days)": with_session(
            lambda s: queries.dashboard(s, config, queries.Period.last(30, NOW, zone))
        ),
        "campaigns list": with_session(queries.campaign_list),
        "campaign funnel + verdict + per hour": lambda: load_campaign(services, campaign_id, False),
        "campaign preview (counts + samples)": lambda: load_campaign(services, campaign_id, True),
        "segments (5 saved, counted)": lambda: load_segments(services),
        "customer search: phone digits": with_session(
            lambda s: queries.search_customers(s, "13800001234")
        ),
        "customer search: name": with_session(lambda s: queries.search_customers(s, "c424242")),
        "customer search: tag": with_session(lambda s: queries.search_customers(s, "tag:母婴")),
        "customer profile + timeline": lambda: load_profile(services, sent_customer),
        "tags and rules": lambda: load_tags(services),
        "coupons (30 days)": with_session(
            lambda s: (
                queries.coupon_stats(s, NOW),
                queries.redemptions_by_day(s, queries.Period.last(30, NOW, zone)),
            )
        ),
        "flows": with_session(lambda s: flow_rows(library, queries.flow_positions(s), "zh-CN")),
        "staff": with_session(list_staff),
        "measures nightly rollup (scheduler job)": with_session(
            lambda s: rollup.roll_up(
                s, zone=config.general.timezone, now=NOW, days=PERIODS, months=COHORT_MONTHS
            )
        ),
        "measures (30 days)": with_session(
            lambda s: load_measures(s, config, _period(config, 30), NOW, None)
        ),
        "measures (365 days)": with_session(
            lambda s: load_measures(s, config, _period(config, 365), NOW, None)
        ),
        "  of which loyalty (365 days)": with_session(
            lambda s: rollup.loyalty(s, _period(config, 365), now=NOW)
        ),
        "  of which cohorts (365 days)": with_session(
            lambda s: rollup.cohorts(s, _period(config, 365), now=NOW, months=COHORT_MONTHS)
        ),
        "  of which AARRR (365 days)": with_session(
            lambda s: rollup.aarrr(s, _period(config, 365), now=NOW)
        ),
        "  of which surveys (365 days)": with_session(
            lambda s: [
                surveys.results(s, d.name, _period(config, 365), config=config, now=NOW)
                for d in config.surveys.definitions
            ]
        ),
        "measures (30 days, saved segment)": with_session(
            lambda s: load_measures(s, config, _period(config, 30), NOW, "segment:hz_baby")
        ),
        "dashboard tiles (repeat rate, NPS)": with_session(lambda s: summary(s, config, NOW)),
        "groups (plans, FAQ, moderation log)": with_session(lambda s: load_groups(s, zone, NOW)),
    }
    with db.sessions() as session:
        sent_customer = session.scalar(
            text("SELECT customer_id FROM campaign_targets WHERE campaign_id = :c LIMIT 1"),
            {"c": campaign_id},
        )
    results = []
    print(f"[{db.dialect}]  first call   median of {repeat}  page  (load average {_load()})")
    for name, fn in pages.items():
        if only and only not in name and name != ROLLUP:
            continue
        statements.taken.clear()
        first, seconds = timed(fn, repeat)
        results.append((name, seconds))
        flag = "" if seconds < 1 else "  (over 1 s)"
        print(
            f"[{db.dialect}] {first * 1000:9.1f} ms {seconds * 1000:9.1f} ms  {name}{flag}",
            flush=True,
        )
        if seconds >= BREAKDOWN_FROM:
            statements.show(repeat + 1)
    print(f"[{db.dialect}] load average after: {_load()}")
    db.close()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--orders", type=int, default=5_000_000)
    parser.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="keep the generated database")
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--reuse", metavar="URL", help="time the pages on a kept database")
    parser.add_argument(
        "--only", default="", metavar="TEXT", help="time only the pages whose name holds TEXT"
    )
    args = parser.parse_args()
    if args.customers < 100 or args.orders < 0 or args.repeat < 1:
        parser.error("--customers must be ≥ 100, --orders ≥ 0, --repeat ≥ 1")
    if args.reuse:
        run(args.reuse, 0, 0, args.seed, args.repeat, reuse=True, only=args.only)
        print(f"peak RSS of this process: {peak_rss_mb():.0f} MB")
        return 0
    with throwaway_database(args.pg_url, keep=args.keep) as url:
        run(url, args.customers, args.orders, args.seed, args.repeat, only=args.only)
    print(f"peak RSS of this process: {peak_rss_mb():.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
