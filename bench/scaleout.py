"""Benchmark: do 1, 2 and 4 worker processes on PostgreSQL scale delivery up to a
platform's global rate limit, never exceed it, and deliver every message exactly once,
also through a rolling restart?

    .venv/bin/python -m bench.scaleout --messages 20000 --limit 600 --latency 0.05

For each worker count a fresh PostgreSQL database gets ``--messages`` queued campaign
messages (one per chat); that many ``bench/scaleout_worker.py`` processes (Siyu's
DeliveryWorker) deliver them through a fake platform served here over HTTP. The platform
answers after ``--latency`` seconds, records every call, and enforces ``--limit`` calls
per second over a sliding second (a call over it gets 429 with retry_after); the workers
share that limit through Redis. Printed per run: messages/s and its ratio to one worker,
the busiest second seen by the platform against the limit, 429s, missing and doubled
messages. The last run SIGTERMs each worker in turn mid-run and starts a replacement (a
rolling restart). The messages are two campaigns queued one after the other, the second
``--second`` of them (0.2 by default): "2nd share" is the second campaign's share of the
first 2 × its size deliveries (0.50 when the two share the platform fairly, 0.00 first
come, first served). Needs PostgreSQL (``--pg``, default the tests' server) and Redis.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections import Counter, deque
from datetime import UTC, datetime
from pathlib import Path

import redis
import uvicorn
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from storage.bulk import insert_outbox_rows  # noqa: E402
from storage.db import Database  # noqa: E402


class FakePlatform:
    """The fake platform: a global sliding-second limit, latency, and a record of calls."""

    def __init__(self, limit: int, latency: float) -> None:
        self.limit, self.latency = limit, latency
        self.accepted: Counter[str] = Counter()
        self.order: list[str] = []  # keys in the order they were accepted
        self.times: list[float] = []
        self.rejected = 0
        self._window: deque[float] = deque()

    def reset(self) -> None:
        self.accepted.clear()
        self.order.clear()
        self.times.clear()
        self.rejected = 0
        self._window.clear()

    async def send(self, request: Request) -> JSONResponse:
        body = await request.json()
        now = time.monotonic()
        while self._window and now - self._window[0] >= 1.0:
            self._window.popleft()
        if len(self._window) >= self.limit:
            self.rejected += 1
            return JSONResponse({"retry_after": 1.0 - (now - self._window[0])}, status_code=429)
        self._window.append(now)
        self.times.append(now)
        await asyncio.sleep(self.latency)
        self.accepted[body["key"]] += 1
        self.order.append(body["key"])
        return JSONResponse({"ok": True})

    def busiest_second(self) -> int:
        best, start = 0, 0
        for end, t in enumerate(self.times):
            while t - self.times[start] >= 1.0:
                start += 1
            best = max(best, end - start + 1)
        return best


def _fresh_database(admin_url: str) -> str:
    name = f"siyu_scaleout_{uuid.uuid4().hex[:8]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    url = admin_url.rsplit("/", 1)[0] + f"/{name}"
    db = Database(url)
    db.migrate()
    db.close()
    return url


def _drop_database(admin_url: str, url: str) -> None:
    name = url.rsplit("/", 1)[1]
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _queue(url: str, n: int, second: float) -> int:
    """Two campaigns, the second (``second`` of ``n``) queued after the first; its size."""
    now = datetime.now(UTC)
    size_b = int(n * second)
    tail = ("campaign", 10, '{"text": "新品"}', now, now)
    db = Database(url)
    for campaign, count in ((1, n - size_b), (2, size_b)):
        rows = [
            (f"bench:{campaign}:{i:07d}", "fake", *(f"c{campaign}-{i}",) * 2, None, *tail)
            for i in range(count)
        ]
        with db.transaction() as session:
            insert_outbox_rows(session, rows, source=("campaign", campaign))
    db.close()
    return size_b


def _spawn(url: str, base: str, redis_url: str, limit: int, prefix: str) -> subprocess.Popen:
    proc = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "bench" / "scaleout_worker.py"),
            url,
            base,
            redis_url,
            str(limit),
            prefix,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.stdout is not None
    proc.stdout.readline()  # "ready"
    return proc


async def _run(args, platform: FakePlatform, base: str, workers: int, rolling: bool) -> dict:
    url = _fresh_database(args.pg)
    size_b = _queue(url, args.messages, args.second)
    prefix = f"siyu:bench:{uuid.uuid4().hex[:8]}:"
    platform.reset()
    spawn = lambda: _spawn(url, base, args.redis, args.limit, prefix)  # noqa: E731
    procs = await asyncio.gather(*(asyncio.to_thread(spawn) for _ in range(workers)))
    start = time.monotonic()
    restarted = 0
    try:
        while sum(platform.accepted.values()) < args.messages:
            await asyncio.sleep(0.1)
            done = sum(platform.accepted.values())
            if (
                rolling
                and restarted < workers
                and done >= args.messages * (restarted + 1) / (workers + 2)
            ):
                old = procs[restarted]
                old.terminate()  # SIGTERM: finish in-flight sends, requeue the rest
                await asyncio.to_thread(old.wait, 30)
                procs[restarted] = await asyncio.to_thread(spawn)
                restarted += 1
            if time.monotonic() - start > args.timeout:
                break
        elapsed = time.monotonic() - start
        await asyncio.sleep(1.0)  # anything still in flight would show as a double
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            await asyncio.to_thread(p.wait, 30)
        _drop_database(args.pg, url)
    delivered = len(platform.accepted)
    head = platform.order[: 2 * size_b]
    return {
        "second_share": sum(k.startswith("bench:2:") for k in head) / max(len(head), 1),
        "workers": workers,
        "rolling": rolling,
        "rate": delivered / elapsed,
        "elapsed": elapsed,
        "busiest": platform.busiest_second(),
        "rejected": platform.rejected,
        "missing": args.messages - delivered,
        "doubled": sum(1 for c in platform.accepted.values() if c > 1),
        "restarted": restarted,
    }


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--messages", type=int, default=20000)
    p.add_argument("--limit", type=int, default=600, help="the platform's calls per second")
    p.add_argument("--latency", type=float, default=0.05, help="the platform's answer time (s)")
    p.add_argument("--workers", default="1,2,4")
    p.add_argument("--second", type=float, default=0.2, help="the second campaign's share")
    p.add_argument(
        "--pg",
        default=os.environ.get("SIYU_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test"),
    )
    p.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    p.add_argument("--timeout", type=float, default=600.0)
    args = p.parse_args()
    redis.Redis.from_url(args.redis).ping()

    platform = FakePlatform(args.limit, args.latency)
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            Starlette(routes=[Route("/send", platform.send, methods=["POST"])]),
            host="127.0.0.1",
            port=port,
            log_level="warning",
            lifespan="off",
        )
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    base = f"http://127.0.0.1:{port}"
    counts = [int(x) for x in args.workers.split(",")]
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(
        f"{args.messages} messages, platform limit {args.limit}/s, latency {args.latency * 1000:.0f} ms"
    )
    print(
        f"{'workers':>8} {'restart':>8} {'msg/s':>8} {'ratio':>6} {'busiest s':>10} {'429s':>6} {'missing':>8} {'doubled':>8} {'2nd share':>9}"
    )
    base_rate = None
    runs = [(n, False) for n in counts] + [(max(counts), True)]
    for workers, rolling in runs:
        r = await _run(args, platform, base, workers, rolling)
        base_rate = base_rate or r["rate"]
        print(
            f"{r['workers']:>8} {('yes x' + str(r['restarted'])) if rolling else 'no':>8} "
            f"{r['rate']:>8.0f} {r['rate'] / base_rate:>6.2f} {r['busiest']:>6}/{args.limit:<3} "
            f"{r['rejected']:>6} {r['missing']:>8} {r['doubled']:>8} {r['second_share']:>9.2f}",
            flush=True,
        )
    server.should_exit = True
    await task


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


if __name__ == "__main__":
    asyncio.run(main())
