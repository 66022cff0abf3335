"""Crash safety of the real process: SIGKILL mid-delivery, SIGTERM mid-delivery, restart.

Replies are queued first; then ``siyu run`` processes deliver them. The first is killed
with SIGKILL while delivering, the second is stopped with SIGTERM while delivering, the
third finishes. Every queued reply must reach the sandbox transcript exactly once.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from bot.core.clock import SystemClock
from storage.db import Database
from storage.models import OutboxMessage, SandboxMessage
from tests.support import SandboxHarness, free_port

pytestmark = pytest.mark.slow

N = 600  # far more than go out before the SIGKILL and the SIGTERM (some 50 after each start)
SIYU = [sys.executable, "-m", "bot.app.cli"]


def counts(db: Database) -> tuple[int, dict[str, int]]:
    with db.sessions() as s:
        delivered = s.scalar(
            select(func.count())
            .select_from(SandboxMessage)
            .where(SandboxMessage.direction == "out")
        )
        statuses = dict(
            s.execute(
                select(OutboxMessage.status, func.count()).group_by(OutboxMessage.status)
            ).all()
        )
    return delivered, statuses


def start(cfg: Path, port: int, cwd: Path) -> subprocess.Popen:
    proc = subprocess.Popen(
        [*SIYU, "--config", str(cfg), "run"],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise AssertionError(proc.stdout.read().decode())
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("siyu run did not come up")


def wait_delivered(db: Database, more_than: int, timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        delivered, _ = counts(db)
        if delivered > more_than:
            return delivered
        time.sleep(0.005)
    raise AssertionError(f"nothing more than {more_than} delivered in {timeout}s")


async def test_sigkill_and_sigterm_mid_delivery_lose_and_duplicate_nothing(tmp_path, config):
    url = f"sqlite:///{tmp_path / 'siyu.db'}"
    port = free_port()
    cfg = tmp_path / "siyu.toml"
    cfg.write_text(
        f'[database]\nurl = "{url}"\n[web]\nport = {port}\n'
        "[delivery]\nbatch_size = 10\npoll_interval_seconds = 0.2\nshutdown_grace_seconds = 5\n"
        '[logging]\nlevel = "WARNING"\n',
        encoding="utf-8",
    )
    db = Database(url)
    db.migrate()
    harness = SandboxHarness(config, db, SystemClock())
    for first in range(0, N, 50):  # fifty customers at a time, as concurrent chats arrive
        await asyncio.gather(
            *(harness.say(f"u{i}", "/start", name=f"客户{i}") for i in range(first, first + 50))
        )
    assert counts(db) == (0, {"pending": N})

    first = start(cfg, port, tmp_path)
    killed_at = wait_delivered(db, 50)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    delivered, statuses = counts(db)
    assert delivered < N, "the kill came too late to test anything"

    second = start(cfg, port, tmp_path)
    wait_delivered(db, delivered + 50)
    second.send_signal(signal.SIGTERM)
    output = second.communicate(timeout=60)[0].decode()
    assert second.returncode == 0, output
    assert "Traceback" not in output, output
    delivered, statuses = counts(db)
    assert "sending" not in statuses, statuses  # in-flight finished or went back to the queue
    assert delivered < N, "SIGTERM came too late to test anything"

    third = start(cfg, port, tmp_path)
    deadline = time.monotonic() + 120
    while counts(db)[1] != {"sent": N} and time.monotonic() < deadline:
        time.sleep(0.1)
    third.send_signal(signal.SIGTERM)
    third.communicate(timeout=60)

    delivered, statuses = counts(db)
    assert statuses == {"sent": N}
    assert delivered == N
    with db.sessions() as s:
        per_key = s.execute(
            select(SandboxMessage.outbox_key, func.count())
            .where(SandboxMessage.direction == "out")
            .group_by(SandboxMessage.outbox_key)
        ).all()
        keys = set(s.scalars(select(OutboxMessage.idempotency_key)))
    assert {k for k, _ in per_key} == keys and all(n == 1 for _, n in per_key)
    assert killed_at > 0
    db.close()
