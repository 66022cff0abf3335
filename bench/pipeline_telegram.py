"""Telegram inbound benchmark: updates through the real Telegram adapter into the full pipeline,
against bare python-telegram-bot dispatch of the same updates (``bench/pipeline.py``'s
``Application.process_update`` with a no-op handler), as a ratio.

Each update (JSON, as getUpdates or the webhook delivers it) goes TelegramAdapter.process →
PTB ``Update.de_json`` → Event → router (dedupe by update_id, customer + interaction, role,
conversation lock, handoff gate) → handlers (keyword tagging; every other update is /start,
which renders and queues a reply in the outbox) → commit. Sequential (one update after
another, like the bare loop) and in getUpdates batches of 100 (chats concurrently, as the
poller runs them). Only getMe goes to a local fake Bot API at start; nothing during the run.

    .venv/bin/python bench/pipeline_telegram.py [--n 2000] [--rules 1000] [--backend sqlite|postgresql]

Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from pipeline import make_rules, messages, pg_database, run_bare_ptb, summary  # noqa: E402

from bot.adapters.telegram.adapter import TelegramAdapter  # noqa: E402
from bot.app.config import TaggingConfig, load_config  # noqa: E402
from bot.app.runtime import Runtime  # noqa: E402
from bot.core.clock import SystemClock  # noqa: E402
from storage.db import Database  # noqa: E402
from tests.fakes.telegram import TOKEN, FakeBotAPI  # noqa: E402


def payloads(msgs: list[tuple[str, str]], first_id: int = 1) -> list[dict]:
    """The messages as Telegram updates (private chats), the same shape bench/pipeline.py uses."""
    out = []
    for i, (user, body) in enumerate(msgs):
        uid = int(user[1:]) + 1000
        out.append(
            {
                "update_id": first_id + i,
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
    return out


async def run_adapter(url: str, msgs, rules, *, batch: int) -> dict:
    db = Database(url)
    db.migrate()
    async with FakeBotAPI() as api:
        base = load_config(None, environ={})
        config = base.replace(
            tagging=TaggingConfig(keywords=rules),
            telegram=replace(base.telegram, token=TOKEN, base_url=api.base_url),
        )
        runtime = Runtime(config, db=db, clock=SystemClock())
        adapter = TelegramAdapter(config.telegram, runtime)
        await adapter.bot.initialize()  # getMe, before the clock starts
        for data in payloads(msgs[:50], first_id=10_000_000):  # warm-up (not measured)
            await adapter.process(data)
        updates = payloads(msgs)
        latencies: list[float] = []
        started = time.perf_counter()
        if batch <= 1:
            for data in updates:
                t0 = time.perf_counter()
                await adapter.process(data)
                latencies.append(time.perf_counter() - t0)
        else:
            for i in range(0, len(updates), batch):
                t0 = time.perf_counter()
                await adapter.process_batch(updates[i : i + batch])
                latencies.append((time.perf_counter() - t0) / batch)
        elapsed = time.perf_counter() - started
        await adapter.bot.shutdown()
    db.close()
    return summary(len(msgs), elapsed, latencies)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--rules", type=int, default=1000)
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--pg", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()
    rng = random.Random(7)
    rules = make_rules(args.rules, rng)
    msgs = messages(args.n, rng)
    bare = await run_bare_ptb(msgs)
    print(f"bare PTB process_update (no-op):   {bare['events_per_s']:8.0f} updates/s")
    for label, batch in (("sequential", 1), ("batches of 100", 100)):
        if args.backend == "sqlite":
            with tempfile.TemporaryDirectory() as tmp:
                result = await run_adapter(f"sqlite:///{tmp}/bench.db", msgs, rules, batch=batch)
        else:
            url, drop = pg_database(args.pg)
            try:
                result = await run_adapter(url, msgs, rules, batch=batch)
            finally:
                drop()
        ratio = bare["events_per_s"] / result["events_per_s"]
        print(
            f"Siyu Telegram adapter, {label:<15} {result['events_per_s']:8.0f} updates/s  "
            f"p50 {result['p50_ms']:.2f} ms  p99 {result['p99_ms']:.2f} ms  "
            f"({args.backend}; bare PTB is {ratio:.1f}x faster)"
        )


if __name__ == "__main__":
    asyncio.run(main())
