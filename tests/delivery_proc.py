"""A delivery worker process for the crash test: drain the outbox to the fake platform."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy import func, select

from bot.app.config import DeliveryConfig
from bot.core.clock import SystemClock
from bot.outbox.worker import DeliveryWorker
from storage.db import Database
from storage.models import OutboxMessage
from tests.fakes.platform import FakePlatform

ROOT = Path(__file__).resolve().parent.parent


def spawn(url: str) -> subprocess.Popen:
    """Start one such worker process on ``url`` (stdout and stderr piped)."""
    return subprocess.Popen(
        [sys.executable, "-m", "tests.delivery_proc", url],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


async def main(url: str) -> None:
    db = Database(url)
    platform = FakePlatform(url)
    await platform.start()
    config = DeliveryConfig(batch_size=50, lease_seconds=3, poll_interval_seconds=0.2)
    worker = DeliveryWorker(db, {"sandbox": platform}, SystemClock(), config)
    print("ready", flush=True)
    idle = 0
    while idle < 3:  # nothing pending nor in flight three times in a row: all delivered
        handled = await worker.drain_once()
        if handled:
            idle = 0
            continue
        with db.sessions() as session:
            left = session.scalar(
                select(func.count())
                .select_from(OutboxMessage)
                .where(OutboxMessage.status.in_(("pending", "sending")))
            )
        idle = idle + 1 if left == 0 else 0
        await asyncio.sleep(0.2)
    await platform.stop()
    db.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
