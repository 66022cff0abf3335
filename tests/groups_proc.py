"""A child process for the groups tests: run a SchedulerService (the groups job ticking
every 0.3 s) on a database for a while, then print how many ``groups:due`` runs this
process executed (``executed=<n>``)."""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import replace

from apscheduler.events import EVENT_JOB_EXECUTED

from bot.app.config import load_config
from bot.app.services import Services
from bot.core.clock import SystemClock
from bot.core.templating import Renderer
from scheduler.service import SchedulerService
from storage.db import Database


async def main(url: str, seconds: float) -> None:
    config = load_config(None, environ={})
    config = config.replace(
        scenarios=replace(config.scenarios, scheduler=True, tick_seconds=30, definitions=[]),
        groups=replace(config.groups, tick_seconds=0.3),
    )
    db = Database(url)
    service = SchedulerService(Services(db, config, Renderer(), SystemClock()), standby_seconds=0.2)
    executed = 0

    def count(event) -> None:
        nonlocal executed
        if event.job_id == "groups:due":
            executed += 1

    await service.start()
    deadline = time.monotonic() + seconds
    hooked = None
    while time.monotonic() < deadline:
        if service.scheduler is not None and service.scheduler is not hooked:
            service.scheduler.add_listener(count, EVENT_JOB_EXECUTED)
            hooked = service.scheduler
        await asyncio.sleep(0.05)
    await service.stop()
    print(f"executed={executed}", flush=True)
    db.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], float(sys.argv[2])))
