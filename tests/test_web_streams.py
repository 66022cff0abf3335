"""Live-update streams cannot wedge a real ``siyu run``: 1,000 dropped streams later,
messages still flow and SIGTERM still stops the process promptly."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from bot.conversations.staff import create_staff
from bot.core.clock import SystemClock
from storage.db import Database
from tests.support import free_port

pytestmark = pytest.mark.slow

SIYU = [sys.executable, "-m", "bot.app.cli"]
ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "correct horse 42"


def start(cfg: Path, port: int, cwd: Path) -> subprocess.Popen:
    proc = subprocess.Popen(
        [*SIYU, "--config", str(cfg), "run"],
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise AssertionError(proc.stderr.read().decode())
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("siyu run did not come up")


async def open_and_drop(port: int, path: str, cookie: str = "") -> bool:
    """Open one SSE stream, wait for its first bytes, and drop the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        extra = f"Cookie: {cookie}\r\n" if cookie else ""
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{extra}"
            "Accept: text/event-stream\r\n\r\n".encode()
        )
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b": connected"), 10)
        return head.startswith(b"HTTP/1.1 200")
    finally:
        writer.transport.abort()  # the browser tab closes: no goodbye


async def drop_many(port: int, path: str, count: int, cookie: str = "", parallel: int = 25):
    opened = 0
    for start_at in range(0, count, parallel):
        batch = min(parallel, count - start_at)
        results = await asyncio.gather(*(open_and_drop(port, path, cookie) for _ in range(batch)))
        opened += sum(results)
    return opened


async def inbox_cookie(base: str) -> str:
    async with httpx.AsyncClient(base_url=base, follow_redirects=False) as client:
        page = (await client.get("/inbox/login")).text
        csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
        r = await client.post(
            "/inbox/login", data={"username": "alice", "password": PASSWORD, "csrf": csrf}
        )
        assert r.status_code == 303
        return f"siyu_inbox={client.cookies['siyu_inbox']}"


async def test_a_thousand_dropped_streams_leave_messages_and_sigterm_working(tmp_path):
    url = f"sqlite:///{tmp_path / 'siyu.db'}"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    cfg = tmp_path / "siyu.toml"
    cfg.write_text(
        f'[database]\nurl = "{url}"\n[web]\nport = {port}\n'
        '[roles]\nmanagers = ["sandbox:manager"]\n'
        '[handoff]\nsecret_key = "stream-test-secret-key-0123456789"\n'
        "[scenarios]\nscheduler = false\n"
        '[logging]\nlevel = "WARNING"\n',
        encoding="utf-8",
    )
    db = Database(url)
    db.migrate()
    with db.transaction() as s:
        create_staff(s, "alice", PASSWORD, role="manager", now=SystemClock().now())
    db.close()

    proc = start(cfg, port, tmp_path)
    try:
        cookie = await inbox_cookie(base)
        opened = await drop_many(port, "/sandbox/api/stream?chat_id=u1", 800)
        opened += await drop_many(port, "/inbox/stream", 200, cookie)
        assert opened == 1000

        # Messages still flow: a customer writes, the bot's reply reaches the transcript.
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            started = time.monotonic()
            r = await client.post("/sandbox/api/messages", json={"user_id": "u1", "text": "/start"})
            assert r.status_code == 202, r.text
            replies: list = []
            while not replies and time.monotonic() - started < 10:
                got = (await client.get("/sandbox/api/chats/u1/messages")).json()["messages"]
                replies = [m for m in got if m["direction"] == "out"]
                await asyncio.sleep(0.05)
            assert replies, "no reply after 1,000 dropped streams"
            # ... and a new stream still sees them.
            async with client.stream("GET", "/sandbox/api/stream?chat_id=u1") as stream:
                async for line in stream.aiter_lines():
                    if line.startswith("event: message"):
                        break

        stopping = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
        assert time.monotonic() - stopping < 10
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
