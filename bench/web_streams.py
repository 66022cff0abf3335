"""Benchmark: live-update stream churn against a real ``siyu run`` (sandbox, SQLite).

    .venv/bin/python -m bench.web_streams --streams 5000

Opens and drops N sandbox streams (25 at a time, as a crowd of closing browser tabs), then
reports: streams opened and dropped per second, the time for a customer's message to get
the bot's reply afterwards, ``/healthz`` latency, and how long SIGTERM takes to stop the
process. Also the cost of the shared JSON checks (``bot.web.api.parse_json``) on a 1,000-
order body versus plain ``json.loads``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.web.api import parse_json
from storage.db import Database
from tests.support import free_port
from tests.test_web_streams import drop_many, start


def json_checks(rounds: int = 50) -> tuple[float, float, int]:
    orders = [
        {"order_id": f"A{i}", "customer": f"telegram:{i}", "amount": "35.00", "items": ["早餐"]}
        for i in range(1000)
    ]
    body = json.dumps({"orders": orders}, ensure_ascii=False).encode()
    began = time.perf_counter()
    for _ in range(rounds):
        json.loads(body)
    plain = (time.perf_counter() - began) / rounds
    began = time.perf_counter()
    for _ in range(rounds):
        parse_json(body)
    checked = (time.perf_counter() - began) / rounds
    return plain, checked, len(body)


async def run(streams: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        url = f"sqlite:///{Path(tmp) / 'siyu.db'}"
        cfg = Path(tmp) / "siyu.toml"
        cfg.write_text(
            f'[database]\nurl = "{url}"\n[web]\nport = {port}\n'
            '[scenarios]\nscheduler = false\n[logging]\nlevel = "WARNING"\n',
            encoding="utf-8",
        )
        db = Database(url)
        db.migrate()
        db.close()
        proc = start(cfg, port, Path(tmp))
        base = f"http://127.0.0.1:{port}"
        try:
            began = time.perf_counter()
            opened = await drop_many(port, "/sandbox/api/stream?chat_id=u1", streams)
            churn = time.perf_counter() - began
            async with httpx.AsyncClient(base_url=base, timeout=30) as client:
                began = time.perf_counter()
                await client.post("/sandbox/api/messages", json={"user_id": "u1", "text": "/start"})
                while True:
                    got = (await client.get("/sandbox/api/chats/u1/messages")).json()["messages"]
                    if any(m["direction"] == "out" for m in got):
                        break
                    await asyncio.sleep(0.01)
                reply = time.perf_counter() - began
                began = time.perf_counter()
                for _ in range(20):
                    await client.get("/healthz")
                health = (time.perf_counter() - began) / 20
            began = time.perf_counter()
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=60)
            stop = time.perf_counter() - began
        finally:
            if proc.poll() is None:
                proc.kill()
    print(
        f"streams opened and dropped: {opened}/{streams} in {churn:.1f}s ({opened / churn:.0f}/s)"
    )
    print(f"first reply after the churn: {reply * 1000:.0f} ms")
    print(f"/healthz (with a write probe): {health * 1000:.1f} ms")
    print(f"SIGTERM to exit (code {code}): {stop:.2f}s")
    plain, checked, size = json_checks()
    print(
        f"JSON of 1,000 orders ({size // 1024} KiB): json.loads {plain * 1000:.1f} ms, "
        f"with bounds/depth/text checks {checked * 1000:.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=2000)
    args = parser.parse_args()
    asyncio.run(run(args.streams))


if __name__ == "__main__":
    main()
