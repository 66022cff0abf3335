"""A child process for the scheduler tests: run a SchedulerService on a database for a
while, then print how many scenario jobs this process executed (``executed=<n>``) and the
wall-clock intervals it led (``led=<start>-<end>,...``)."""

from __future__ import annotations

import asyncio
import sys
import time

from apscheduler.events import EVENT_JOB_EXECUTED

from bot.app.config import ScenarioDef, load_config
from bot.app.services import Services
from bot.core.clock import SystemClock
from bot.core.templating import Renderer
from scheduler.service import SchedulerService
from storage.db import Database


async def main(url: str, seconds: float) -> None:
    config = load_config(None, environ={})
    config = config.replace(
        scenarios=type(config.scenarios)(
            scheduler=True,
            tick_seconds=0.3,
            definitions=[
                ScenarioDef(
                    "all_day",
                    "morning_offer",
                    "daily",
                    "00:00-23:59",
                    "opt_out:no",
                    quiet_hours=False,
                )
            ],
        )
    )
    db = Database(url)
    service = SchedulerService(Services(db, config, Renderer(), SystemClock()), standby_seconds=0.2)
    executed = 0

    def count(event) -> None:
        nonlocal executed
        if event.job_id.startswith("scenario:"):
            executed += 1

    await service.start()
    deadline = time.monotonic() + seconds
    hooked = None
    intervals: list[list[float]] = []
    while time.monotonic() < deadline:
        if service.scheduler is not None and service.scheduler is not hooked:
            service.scheduler.add_listener(count, EVENT_JOB_EXECUTED)
            hooked = service.scheduler
        if service.leading and (not intervals or intervals[-1][1]):
            intervals.append([time.time(), 0.0])
        elif not service.leading and intervals and not intervals[-1][1]:
            intervals[-1][1] = time.time()
        print(f"leading={service.leading}", flush=True)
        await asyncio.sleep(0.05)
    await service.stop()
    if intervals and not intervals[-1][1]:
        intervals[-1][1] = time.time()
    print("led=" + ",".join(f"{a:.3f}-{b:.3f}" for a, b in intervals), flush=True)
    print(f"executed={executed}", flush=True)
    db.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], float(sys.argv[2])))
