"""Benchmark: what the safety checks cost — redaction of log lines, amount parsing, and
recording a callback in the journal before it is acknowledged.

    .venv/bin/python bench/safety.py [--lines 50000] [--callbacks 2000]

Prints: redact() lines/s; µs per log line with and without the redacting filter; the
slowest parse_amount() of hostile amounts; callbacks recorded per second (SQLite, one
transaction each, as the callback path does) and the median / p99 time to record one.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.adapters.wechat.inbound import CallbackJournal
from bot.core.amounts import AmountError, parse_amount
from bot.core.clock import SystemClock
from bot.core.redaction import RedactingFilter, redact, register_secrets
from storage.db import Database

SECRETS = [
    "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw",
    "wxAppSecret-7f3a9c0d1e2b4a6f",
    "wecomCorpSecret-99aa77bb55cc",
    "callback-token-xyz",
    "api-key-d41d8cd98f00b204",
    "inbox-session-key-0b1c2d3e",
]
LINES = [
    'HTTP Request: POST https://api.telegram.org/bot123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw/getUpdates "HTTP/1.1 200 OK"',
    "delivery 1234: transient failure: TransientError('WeChat API unreachable: 500 Server Error "
    "for url: https://api.weixin.qq.com/cgi-bin/token?grant_type=client_credential&appid=wx1&secret=x')",
    "wechat: text/None from oABCDEFGHIJKLMNOPQRSTUVWXYZ1 routed in 12 ms; 1 reply queued",
    "scheduler: job scenario:morning_offer ran; 5321 queued, 12 dropped (quiet hours)",
]
HOSTILE = ["1e300000", "1e9999999", "NaN", "-1", "10^30", "9" * 24, "1" * 100000]


def bench_redact(lines: int) -> None:
    register_secrets(SECRETS)
    sample = [LINES[i % len(LINES)] for i in range(lines)]
    started = time.perf_counter()
    for line in sample:
        redact(line)
    took = time.perf_counter() - started
    print(f"redact(): {lines / took:,.0f} lines/s ({took / lines * 1e6:.1f} µs a line)")
    for filtered in (False, True):
        logger = logging.getLogger(f"bench.{filtered}")
        logger.propagate = False
        handler = logging.StreamHandler(io.StringIO())
        if filtered:
            handler.addFilter(RedactingFilter())
        logger.handlers[:] = [handler]
        logger.setLevel(logging.INFO)
        started = time.perf_counter()
        for i in range(lines):
            logger.info("delivery %d: %s", i, LINES[i % len(LINES)])
        took = time.perf_counter() - started
        label = "with the redacting filter" if filtered else "without a filter      "
        print(f"log line {label}: {took / lines * 1e6:.1f} µs")


def bench_amounts() -> None:
    with contextlib.suppress(AmountError):
        parse_amount("x")  # load the catalogue of refusal texts once
    slowest = 0.0
    for raw in HOSTILE:
        started = time.perf_counter()
        with contextlib.suppress(AmountError):
            parse_amount(raw)
        slowest = max(slowest, time.perf_counter() - started)
    print(f"parse_amount(): slowest hostile amount refused in {slowest * 1e6:.1f} µs")


async def bench_journal(callbacks: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        db = Database(f"sqlite:///{tmp}/bench.db")
        db.migrate()
        journal = CallbackJournal(db, SystemClock(), "wechat", 300)
        times = []
        started = time.perf_counter()
        for i in range(callbacks):
            fields = {
                "FromUserName": f"o{i:027d}",
                "MsgType": "text",
                "Content": "你好",
                "MsgId": i,
            }
            t0 = time.perf_counter()
            await journal.record(f"wechat:{i}", fields["FromUserName"], fields, None, 5.0)
            times.append(time.perf_counter() - t0)
        took = time.perf_counter() - started
        db.close()
    times.sort()
    p99 = times[int(len(times) * 0.99) - 1]
    print(
        f"callback journal (SQLite): {callbacks / took:,.0f} callbacks/s recorded; "
        f"median {statistics.median(times) * 1e3:.2f} ms, p99 {p99 * 1e3:.2f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=50_000)
    parser.add_argument("--callbacks", type=int, default=2_000)
    args = parser.parse_args()
    logging.getLogger("alembic").setLevel(logging.WARNING)
    bench_redact(args.lines)
    bench_amounts()
    asyncio.run(bench_journal(args.callbacks))


if __name__ == "__main__":
    main()
