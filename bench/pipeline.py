"""Inbound pipeline benchmark: N messages through the full sandbox path vs bare PTB dispatch.

Each message goes sandbox adapter → Event → router (dedupe, customer upsert + interaction,
role, conversation lock + state, handoff gate) → handlers (tagging with R keyword rules;
every other message is /start, which renders and queues a reply in the outbox) → commit.
The same messages, as Telegram update JSON, go through a bare python-telegram-bot
``Application.process_update`` with a no-op handler, for the ratio Siyu/bare.

    .venv/bin/python bench/pipeline.py [--n 2000] [--rules 1000] [--backend sqlite|postgresql|both]
                                       [--concurrency 100] [--rate 100]

Siyu runs three ways per backend: one event in flight at a time (no batching possible),
``--concurrency`` events in flight (a burst: the pipeline fills batches), and open-loop
arrivals at ``--rate`` events/s (the latency of a single event when not saturated).

``--profile`` instead runs the burst once on ``--backend`` (sqlite or postgresql) with the
batch routing (the database thread) under cProfile and prints the top lines by cumulative
time and the SQL statements per event.

Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import os
import pstats
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import create_engine, event, text

from bot.app.config import KeywordRule, TaggingConfig, load_config
from bot.core.clock import SystemClock
from storage.db import Database
from tests.support import SandboxHarness

WORDS = [
    "周末",
    "去哪",
    "早餐",
    "宝宝",
    "辅食",
    "优惠",
    "会员",
    "积分",
    "新品",
    "打折",
    "千岛湖",
    "杭州",
]


def make_rules(count: int, rng: random.Random) -> list[KeywordRule]:
    rules = [KeywordRule(tag="周末出游", keywords=["周末去哪", "weekend trip"])]
    for i in range(count - 1):
        word = "".join(chr(0x4E00 + rng.randrange(20000)) for _ in range(rng.randint(2, 4)))
        rules.append(KeywordRule(tag=f"t{i}", keywords=[word, f"kw{i}"]))
    return rules


def messages(n: int, rng: random.Random) -> list[tuple[str, str]]:
    out = []
    for i in range(n):
        user = f"u{i % 500}"
        if i % 2:
            out.append((user, "/start"))
        else:
            body = "".join(rng.choice(WORDS) for _ in range(30))
            out.append((user, f"周末去哪玩？{body}"[:200]))
    return out


async def run_siyu(
    url: str,
    msgs: list[tuple[str, str]],
    rules: list[KeywordRule],
    concurrency: int = 1,
    profiler: cProfile.Profile | None = None,
) -> dict:
    db = Database(url)
    db.migrate()
    config = load_config(None, environ={}).replace(tagging=TaggingConfig(keywords=rules))
    harness = SandboxHarness(config, db, SystemClock())
    for user, body in msgs[:50]:  # warm-up (not measured)
        await harness.say("warm" + user, body)
    statements = [0]
    event.listen(
        db.engine, "before_cursor_execute", lambda *a: statements.__setitem__(0, statements[0] + 1)
    )
    if profiler is not None:
        route = harness.runtime.pipeline._route_batch
        harness.runtime.pipeline._route_batch = lambda events: profiler.runcall(route, events)
    latencies: list[float] = []
    pending = iter(msgs)

    async def customer_stream() -> None:
        for user, body in pending:
            t0 = time.perf_counter()
            await harness.say(user, body)
            latencies.append(time.perf_counter() - t0)

    started, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(customer_stream() for _ in range(concurrency)))
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    pipeline = harness.runtime.pipeline
    db.close()
    return summary(len(msgs), elapsed, latencies) | {
        "cpu_ms": cpu * 1000 / len(msgs),
        "statements": statements[0] / len(msgs),
        "batches": pipeline.batches,
        "largest": pipeline.largest_batch,
    }


async def run_paced(
    url: str, msgs: list[tuple[str, str]], rules: list[KeywordRule], rate: float
) -> dict:
    """Open-loop arrivals at ``rate`` events/s (each starts on time, whatever the others do):
    the latency of a single event when the process is not saturated."""
    db = Database(url)
    db.migrate()
    config = load_config(None, environ={}).replace(tagging=TaggingConfig(keywords=rules))
    harness = SandboxHarness(config, db, SystemClock())
    for user, body in msgs[:50]:  # warm-up (not measured)
        await harness.say("warm" + user, body)
    latencies: list[float] = []

    async def one(user: str, body: str) -> None:
        t0 = time.perf_counter()
        await harness.say(user, body)
        latencies.append(time.perf_counter() - t0)

    started = time.perf_counter()
    tasks = []
    for i, (user, body) in enumerate(msgs):
        delay = started + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(user, body)))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - started
    db.close()
    return summary(len(msgs), elapsed, latencies)


async def run_bare_ptb(msgs: list[tuple[str, str]]) -> dict:
    from telegram import Update, User
    from telegram.ext import Application, ExtBot, MessageHandler, filters

    class OfflineBot(ExtBot):
        """A bot whose getMe answers locally, so initialize() needs no network."""

        async def get_me(self, *args, **kwargs) -> User:
            return User(id=1, is_bot=True, first_name="bench", username="bench_bot")

    app = Application.builder().bot(OfflineBot("123456:bench")).updater(None).build()
    await app.initialize()

    async def noop(update, context) -> None:
        return None

    app.add_handler(MessageHandler(filters.ALL, noop))
    payloads = []
    for i, (user, body) in enumerate(msgs):
        uid = int(user[1:]) + 1000
        payloads.append(
            {
                "update_id": i + 1,
                "message": {
                    "message_id": i + 1,
                    "date": int(time.time()),
                    "chat": {"id": uid, "type": "private", "first_name": user},
                    "from": {
                        "id": uid,
                        "is_bot": False,
                        "first_name": user,
                        "language_code": "zh-hans",
                    },
                    "text": body,
                },
            }
        )
    latencies = []
    started = time.perf_counter()
    for data in payloads:
        t0 = time.perf_counter()
        await app.process_update(Update.de_json(data, app.bot))
        latencies.append(time.perf_counter() - t0)
    elapsed = time.perf_counter() - started
    return summary(len(msgs), elapsed, latencies)


def summary(n: int, elapsed: float, latencies: list[float]) -> dict:
    q = statistics.quantiles(latencies, n=100)
    return {"events_per_s": n / elapsed, "p50_ms": q[49] * 1000, "p99_ms": q[98] * 1000}


def pg_database(admin_url: str) -> tuple[str, callable]:
    name = f"siyu_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return admin_url.rsplit("/", 1)[0] + f"/{name}", drop


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--rules", type=int, default=1000)
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument(
        "--concurrency", type=int, default=100, help="events in flight at once (a burst)"
    )
    parser.add_argument("--rate", type=float, default=100.0, help="paced arrivals per second")
    parser.add_argument("--pg", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    parser.add_argument(
        "--profile", action="store_true", help="cProfile the burst's batch routing instead"
    )
    args = parser.parse_args()
    rng = random.Random(7)
    rules = make_rules(args.rules, rng)
    msgs = messages(args.n, rng)
    if args.profile:
        await profile(args, msgs, rules)
        return

    bare = await run_bare_ptb(msgs)
    print(
        f"messages={args.n} keyword_rules={len(rules)} (half /start with a queued reply, half tagged text)"
    )
    print(f"{'path':<28}{'events/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'Siyu/bare':>11}")
    print(
        f"{'bare PTB process_update':<28}{bare['events_per_s']:>10.0f}{bare['p50_ms']:>9.2f}{bare['p99_ms']:>9.2f}{'':>11}"
    )
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    print(
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (other work shares them)"
    )
    for backend in backends:
        for label, concurrency in (
            ("1 in flight", 1),
            (f"{args.concurrency} in flight", args.concurrency),
        ):
            result = await on_backend(
                backend, args.pg, lambda url, c=concurrency: run_siyu(url, msgs, rules, c)
            )
            ratio = result["events_per_s"] / bare["events_per_s"]
            print(
                f"{backend + ', ' + label:<28}{result['events_per_s']:>10.0f}"
                f"{result['p50_ms']:>9.2f}{result['p99_ms']:>9.2f}{ratio:>10.3f}x"
                f"   cpu/event={result['cpu_ms']:.1f} ms batches={result['batches']}"
                f" largest={result['largest']}"
            )
        paced_msgs = msgs[: max(200, int(args.rate * 10))]  # about 10 s of arrivals
        paced = await on_backend(
            backend, args.pg, lambda url, m=paced_msgs: run_paced(url, m, rules, args.rate)
        )
        print(
            f"{backend + f', paced {args.rate:g}/s':<28}{paced['events_per_s']:>10.0f}"
            f"{paced['p50_ms']:>9.2f}{paced['p99_ms']:>9.2f}"
        )


async def profile(args: argparse.Namespace, msgs: list, rules: list[KeywordRule]) -> None:
    backend = "sqlite" if args.backend == "both" else args.backend
    profiler = cProfile.Profile()
    result = await on_backend(
        backend, args.pg, lambda url: run_siyu(url, msgs, rules, args.concurrency, profiler)
    )
    print(
        f"{backend}, {args.concurrency} in flight, {args.n} events: "
        f"{result['events_per_s']:.0f} events/s, {result['statements']:.1f} SQL statements/event, "
        f"batches={result['batches']} largest={result['largest']}, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(120)
    print(out.getvalue())


async def on_backend(backend: str, pg_admin: str, work) -> dict:
    """Run ``work(url)`` on a fresh database of the backend."""
    if backend == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            return await work(f"sqlite:///{tmp}/bench.db")
    url, drop = pg_database(pg_admin)
    try:
        return await work(url)
    finally:
        drop()


if __name__ == "__main__":
    asyncio.run(main())
