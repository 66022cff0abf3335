"""WeChat burst benchmark: signed Official Account callbacks against a running ``siyu run``.

S concurrent senders (one OpenID each) post N safe-mode (AES) callbacks — half ``/start``
(answered with a reply), half free text — to a real ``siyu run`` process on SQLite or
PostgreSQL, with the fake WeChat API standing in for api.weixin.qq.com. The callbacks are
signed before the burst starts. Reports the answer time of the callbacks (p50/p99/max;
WeChat retries what is not answered within 5 s), how long after the burst the last one was
routed, then checks that each callback was stored exactly once and that the replies were
queued exactly once.

    .venv/bin/python bench/burst_wechat.py [--n 10000] [--senders 100] [--backend sqlite|postgresql]

Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
from sqlalchemy import func, select

from bench.pipeline import pg_database
from storage.db import Database
from storage.models import Interaction, OutboxMessage, ProcessedInbound
from storage.wechat_inbound import InboundCallback
from tests.fakes.wechat import CallbackSigner, FakeWechatApi, random_aes_key
from tests.support import free_port

ROOT = Path(__file__).resolve().parent.parent
APP_ID = "wx0123456789abcdef"
TOKEN = "bench-token"


def start_siyu(cfg: Path, port: int, cwd: Path) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-m", "bot.app.cli", "--config", str(cfg), "run"],
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise SystemExit("siyu run did not come up")


def signed_callbacks(signer: CallbackSigner, n: int, senders: int) -> list[tuple[str, bytes]]:
    """The burst's callbacks, signed and encrypted before it starts (so the senders' own
    AES work does not count in the answer times); callback i comes from sender i % senders."""
    out = []
    for i in range(n):
        fields = {
            "ToUserName": "gh_bench",
            "FromUserName": f"oBENCH{i % senders:022d}",
            "CreateTime": int(time.time()),
            "MsgType": "text",
            "Content": "/start" if i % 2 else f"周末去哪玩？第{i}条",
            "MsgId": 10_000_000 + i,
        }
        out.append(signer.oa_callback(fields))
    return out


async def burst(port: int, callbacks: list[tuple[str, bytes]], senders: int) -> dict:
    url = f"http://127.0.0.1:{port}/wechat/callback"
    latencies: list[float] = []
    statuses: dict[int | str, int] = {}
    n = len(callbacks)

    async def sender(s: int, client: httpx.AsyncClient) -> None:
        for query, body in callbacks[s::senders]:  # one sender's callbacks in their order
            t0 = time.perf_counter()
            try:
                r = await client.post(f"{url}?{query}", content=body)
                statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
            except httpx.HTTPError as exc:  # counted by kind: no answer at all
                kind = type(exc).__name__
                statuses[kind] = statuses.get(kind, 0) + 1
            latencies.append(time.perf_counter() - t0)
            await asyncio.sleep(0)

    limits = httpx.Limits(max_connections=senders)
    started = time.perf_counter()
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        await asyncio.gather(*(sender(s, client) for s in range(senders)))
    elapsed = time.perf_counter() - started
    q = statistics.quantiles(latencies, n=100)
    return {
        "per_s": n / elapsed,
        "p50": q[49] * 1000,
        "p99": q[98] * 1000,
        "max": max(latencies) * 1000,
        "over_5s": sum(x > 5 for x in latencies),
        "statuses": statuses,
    }


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stored(url: str, n: int) -> dict:
    db = Database(url)
    started = time.monotonic()
    deadline = started + 900
    try:
        while True:  # until every journaled callback is routed (the sweeper redoes failures)
            with db.sessions() as s:
                interactions = s.scalar(select(func.count()).select_from(Interaction))
                pending = s.scalar(
                    select(func.count())
                    .select_from(InboundCallback)
                    .where(InboundCallback.status == "pending")
                )
            if interactions >= n or pending == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        with db.sessions() as s:
            return {
                "routed_after_s": round(time.monotonic() - started, 1),
                "journaled": s.scalar(select(func.count()).select_from(InboundCallback)),
                "claimed": s.scalar(select(func.count()).select_from(ProcessedInbound)),
                "interactions": interactions,
                "distinct_msgids": s.scalar(
                    select(func.count(func.distinct(ProcessedInbound.key)))
                ),
                "replies": s.scalar(select(func.count()).select_from(OutboxMessage)),
                "reply_keys": s.scalar(
                    select(func.count(func.distinct(OutboxMessage.idempotency_key)))
                ),
            }
    finally:
        db.close()


async def run(backend: str, n: int, senders: int, pg_admin: str) -> None:
    fake = FakeWechatApi(free_port()).start()
    drop = None
    with tempfile.TemporaryDirectory() as tmp:
        if backend == "sqlite":
            url = f"sqlite:///{tmp}/bench.db"
        else:
            url, drop = pg_database(pg_admin)
        Database(url).migrate()
        aes = random_aes_key()
        port = free_port()
        cfg = Path(tmp) / "siyu.toml"
        cfg.write_text(
            f'[database]\nurl = "{url}"\n[web]\nport = {port}\n[logging]\nlevel = "WARNING"\n'
            f'[wechat]\napp_id = "{APP_ID}"\napp_secret = "bench-secret"\ntoken = "{TOKEN}"\n'
            f'encoding_aes_key = "{aes}"\napi_base_url = "{fake.base_url}"\n'
            # the callbacks are signed before the burst, which may outlast the default
            "replay_window_seconds = 3600\n",
            encoding="utf-8",
        )
        proc = start_siyu(cfg, port, Path(tmp))
        try:
            signer = CallbackSigner(TOKEN, aes, APP_ID, now=time.time)
            callbacks = signed_callbacks(signer, n, senders)
            cpu_before = process_cpu(proc.pid)
            figures = await burst(port, callbacks, senders)
            figures["server_cpu_ms"] = (process_cpu(proc.pid) - cpu_before) * 1000 / n
            rows = stored(url, n)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
            fake.stop()
            if drop:
                drop()
    print(
        f"{backend:<11}{n:>7}{senders:>8}{figures['per_s']:>9.0f}{figures['p50']:>9.1f}"
        f"{figures['p99']:>9.1f}{figures['max']:>9.1f}{figures['over_5s']:>8}"
        f"  server CPU {figures['server_cpu_ms']:.1f} ms/callback"
        f"  answers={figures['statuses']} stored={rows}"
        f" load average {os.getloadavg()[0]:.1f}"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--senders", type=int, default=100)
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--pg", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(
        f"{'backend':<11}{'n':>7}{'senders':>8}{'per s':>9}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'max ms':>9}{'>5 s':>8}"
    )
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    for backend in backends:
        await run(backend, args.n, args.senders, args.pg)


if __name__ == "__main__":
    asyncio.run(main())
