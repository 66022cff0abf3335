"""Run the scheduler in the one process that holds the lock; stand by in the others.

A standby thread tries the lock every ``standby_seconds``; the holder checks it is still
held and, if not, shuts its scheduler down. On taking the lock the holder syncs scenarios
from config and (re)writes their jobs in the SQLAlchemy job store: one interval job per
scenario (``scenario:<name>``), ``campaigns:due`` (queues campaign preparation and pilot
verdicts for worker processes), ``conversations:due`` (flow
follow-ups and handoff SLA escalation), and ``nightly`` (RFM, lifecycle and
tier recompute plus expired-tag purge at 03:00 in the brand's default time zone), and
``groups:due`` (group SOP posts and newcomer checks, scheduler/groups.py). Missed runs are coalesced into one
and always run (``misfire_grace_time=None``): whether a late run may still send is the
scenario's own window rule (bot/marketing/scenarios.py), which records the rest as missed.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime

from apscheduler.events import (
    EVENT_JOB_ERROR,
    EVENT_JOB_EXECUTED,
    EVENT_JOB_MISSED,
    EVENT_JOB_SUBMITTED,
    JobEvent,
)
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy import select

from bot.app.services import Services
from bot.core.metrics import job_kind
from scheduler import jobs
from scheduler.customer_jobs import NIGHTLY_CRON
from scheduler.lock import SchedulerLock
from storage.campaigns import Scenario

__all__ = ["SchedulerService"]

log = logging.getLogger(__name__)


class SchedulerService:
    """The scheduler of this process, if it wins the lock (see the module docstring)."""

    def __init__(self, services: Services, *, standby_seconds: float = 5.0) -> None:
        self.services = services
        self.standby_seconds = standby_seconds
        self.lock = SchedulerLock(services.db.url)
        self.scheduler: BackgroundScheduler | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def leading(self) -> bool:
        return self.scheduler is not None

    async def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="siyu-scheduler", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self._shutdown()
        self.lock.release()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                if self.scheduler is None and self.lock.acquire():
                    self._lead()
                elif self.scheduler is not None and not self.lock.alive():
                    self._shutdown()
            except Exception:
                log.exception("scheduler: lock or start-up failed; retrying")
                self._shutdown()
                self.lock.release()
            self._stop.wait(self.standby_seconds)

    def _lead(self) -> None:
        from bot.marketing.coupons import sync_definitions
        from bot.marketing.scenarios import sync_scenarios

        services = self.services
        now = services.clock.now()
        with services.db.transaction() as session:
            sync_definitions(session, services.config.coupons, now)
            scenario_ids = sync_scenarios(session, services.config.scenarios.definitions, now)
            names = dict(session.execute(select(Scenario.id, Scenario.name)).all())
        jobs.bind(services)
        tick = services.config.scenarios.tick_seconds
        scheduler = BackgroundScheduler(
            jobstores={"default": SQLAlchemyJobStore(engine=services.db.engine)},
            executors={"default": ThreadPoolExecutor(2)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
            timezone="UTC",
        )
        scheduler.start(paused=True)
        wanted = {f"scenario:{names[sid]}" for sid in scenario_ids}
        wanted |= {"campaigns:due", "nightly", "conversations:due", "measures:due", "groups:due"}
        for job in scheduler.get_jobs():
            if job.id not in wanted:
                job.remove()
        first = datetime.now(UTC)  # a new leader catches up at once (inside windows only)
        for sid in scenario_ids:
            scheduler.add_job(
                "scheduler.jobs:scenario_tick",
                "interval",
                seconds=tick,
                args=[sid],
                id=f"scenario:{names[sid]}",
                replace_existing=True,
                next_run_time=first,
            )
        scheduler.add_job(
            "scheduler.jobs:campaigns_due",
            "interval",
            seconds=tick,
            id="campaigns:due",
            replace_existing=True,
            next_run_time=first,
        )
        scheduler.add_job(  # flow follow-ups and the handoff SLA
            "scheduler.jobs:conversations_due",
            "interval",
            seconds=services.config.conversations.followup_interval_seconds,
            id="conversations:due",
            replace_existing=True,
            next_run_time=first,
        )
        scheduler.add_job(  # referral rewards after first orders, surveys after orders
            "scheduler.jobs:measures_due",
            "interval",
            seconds=tick,
            id="measures:due",
            replace_existing=True,
            next_run_time=first,
        )
        scheduler.add_job(
            "scheduler.jobs:nightly_customers",
            "cron",
            **NIGHTLY_CRON,
            timezone=services.config.general.timezone,
            id="nightly",
            replace_existing=True,
        )
        scheduler.add_job(  # group SOP posts and newcomer checks (scheduler/groups.py)
            "scheduler.groups:groups_due",
            "interval",
            seconds=services.config.groups.tick_seconds,
            id="groups:due",
            replace_existing=True,
            next_run_time=first,
        )
        scheduler.add_listener(
            self._observe,
            EVENT_JOB_SUBMITTED | EVENT_JOB_EXECUTED | EVENT_JOB_ERROR | EVENT_JOB_MISSED,
        )
        scheduler.resume()
        self.scheduler = scheduler
        log.info("scheduler: this process runs the scheduler (%d scenario(s))", len(scenario_ids))

    def _observe(self, event: JobEvent) -> None:
        """Feed the metrics: lateness when a job is handed to the executor, then its outcome."""
        metrics, kind = self.services.metrics, job_kind(event.job_id)
        if event.code == EVENT_JOB_SUBMITTED:
            planned = min(event.scheduled_run_times, default=None)
            if planned is not None:
                late = (datetime.now(UTC) - planned).total_seconds()
                metrics.scheduler_lateness.labels(kind).observe(max(late, 0.0))
            return
        outcome = {EVENT_JOB_EXECUTED: "ok", EVENT_JOB_ERROR: "error"}.get(event.code, "missed")
        metrics.scheduler_runs.labels(kind, outcome).inc()

    def _shutdown(self) -> None:
        if self.scheduler is not None:
            try:
                self.scheduler.shutdown(wait=True)
            except Exception:
                log.exception("scheduler: shutdown failed")
            self.scheduler = None
            jobs.bind(None)
