"""Batch jobs across real ``siyu run`` processes on PostgreSQL: a scheduler process only
queues, two worker processes run each job exactly once (a campaign's pilot, its verdict
and launch, imports); a worker SIGKILLed in the middle of preparing a campaign is taken
over when its lease runs out and the campaign's messages are queued exactly once."""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import replace
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from bot.core.clock import SystemClock
from bot.core.templating import Renderer
from bot.customers.imports import Upload, enqueue_import
from bot.marketing.campaigns import manage
from bot.marketing.campaigns.spec import parse_spec
from storage.campaigns import Campaign, CampaignTarget
from storage.db import Database
from storage.jobs import BatchJob
from storage.models import OutboxMessage
from storage.orders import Order
from tests.campaign_support import bulk_customers
from tests.processes import SiyuProcess

pytestmark = pytest.mark.slow


def _env(pg_url: str, **extra: str) -> dict[str, str]:
    return {
        "SIYU_DATABASE_URL": pg_url,
        "SIYU_SANDBOX_ENABLED": "true",
        "SIYU_PROCESS_STANDBY_SECONDS": "0.3",
        "SIYU_SCENARIOS_TICK_SECONDS": "0.5",
        "SIYU_DELIVERY_POLL_INTERVAL_SECONDS": "0.2",
        "SIYU_JOBS_POLL_INTERVAL_SECONDS": "0.3",
        "SIYU_MARKETING_QUIET_HOURS": "00:00-00:00",
        "SIYU_MARKETING_MAX_PER_WINDOW": "0",
        "SIYU_CAMPAIGNS_MIN_PILOT_SIZE": "1",
        **extra,
    }


async def _until(predicate, timeout: float = 60.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(predicate):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


def _setup(pg_url: str, config, customers: int, spec: str):
    """Migrate, add customers and a draft campaign; the config the test process uses."""
    config = config.replace(
        marketing=replace(config.marketing, quiet_hours="00:00-00:00", max_per_window=0)
    )
    db = Database(pg_url)
    db.migrate()
    now = SystemClock().now()
    bulk_customers(db, customers, now)
    with db.transaction() as session:
        campaign = manage.create_campaign(
            session, parse_spec(spec, config), config=config, renderer=Renderer(), now=now
        )
        cid = campaign.id
    return db, config, cid


def _request(db: Database, config, cid: int, action: str) -> int:
    """What the console's button does: the campaign moves on and its job is queued."""
    with db.transaction() as session:
        campaign = session.get_one(Campaign, cid)
        return manage.request(
            session, campaign, action, config=config, now=SystemClock().now(), created_by="test"
        ).job_id


def _job(db: Database, job_id: int) -> BatchJob:
    with db.sessions() as session:
        return session.get_one(BatchJob, job_id)


def _count(db: Database, model, *where) -> int:
    with db.sessions() as session:
        return session.scalar(select(func.count()).select_from(model).where(*where)) or 0


def _started(procs: dict[str, SiyuProcess]) -> dict[int, list[str]]:
    """job id → the processes whose log says they started it."""
    runs: dict[int, list[str]] = {}
    for name, proc in procs.items():
        for job_id in re.findall(r"job (\d+) \(\S+\) started", proc.output()):
            runs.setdefault(int(job_id), []).append(name)
    return runs


async def test_workers_run_what_the_scheduler_and_the_console_queued_each_job_once(
    pg_url, config, tmp_path
):
    db, config, cid = _setup(
        pg_url, config, 300, 'spring segment="opt_out:no" text="hi" pilot=20% holdout=10% hours=1'
    )
    env = _env(pg_url)
    procs = {
        name: SiyuProcess(role, env, tmp_path, name)
        for role, name in (("scheduler", "scheduler"), ("worker", "w1"), ("worker", "w2"))
    }
    try:
        for p in procs.values():
            await asyncio.to_thread(p.wait_ready)
        pilot_job = _request(db, config, cid, "pilot")
        await _until(lambda: _job(db, pilot_job).status == "done", what="the pilot's job")
        with db.sessions() as session:
            campaign = session.get_one(Campaign, cid)
            assert campaign.status == "piloting"
            pilot = session.scalars(
                select(CampaignTarget.customer_id).where(
                    CampaignTarget.campaign_id == cid, CampaignTarget.arm == "pilot"
                )
            ).all()
        assert _count(db, OutboxMessage) == len(pilot) > 0

        # Imports queued meanwhile: each is run once, by one of the two workers.
        with db.transaction() as session:
            imports = [
                enqueue_import(
                    session,
                    Upload("tags", "csv", f"t{i}.csv", f"customer,tag\nsandbox:u{i},VIP\n"),
                    token=f"{i:032x}",
                    now=SystemClock().now(),
                    created_by="staff:test",
                ).job_id
                for i in range(12)
            ]

        # The pilot's period is over and a pilot customer bought: the scheduler queues the
        # verdict, a worker judges it and launches to the rest.
        with db.transaction() as session:
            started = SystemClock().now() - timedelta(hours=2)
            session.execute(
                update(Campaign).where(Campaign.id == cid).values(pilot_started_at=started)
            )
            session.add(
                Order(order_id="o-1", customer_id=pilot[0], amount_cents=100, ordered_at=started)
            )

        def launched() -> bool:
            with db.sessions() as session:
                return session.get_one(Campaign, cid).status == "running"

        await _until(launched, what="the verdict and the launch")
        await _until(lambda: all(_job(db, j).status == "done" for j in imports), what="the imports")
        with db.sessions() as session:
            verdict = session.scalars(
                select(BatchJob).where(BatchJob.payload["step"].as_string() == "evaluate")
            ).one()
            targets = dict(
                session.execute(
                    select(CampaignTarget.arm, func.count())
                    .where(CampaignTarget.campaign_id == cid)
                    .group_by(CampaignTarget.arm)
                ).all()
            )
        assert (verdict.created_by, verdict.status) == ("scheduler", "done")
        assert verdict.result["verdict"] == "launch"
        assert sum(targets.values()) == 300
        assert _count(db, OutboxMessage) == targets["pilot"] + targets["rollout"]
        runs = _started(procs)
        for job_id in (pilot_job, verdict.id, *imports):
            assert len(runs.get(job_id, [])) == 1, (job_id, runs.get(job_id))
            assert runs[job_id][0] in ("w1", "w2")
        assert "this process runs the scheduler" in procs["scheduler"].output()
    finally:
        codes = {name: p.stop() for name, p in procs.items()}
        db.close()
    assert codes == dict.fromkeys(procs, 0), codes


async def test_a_worker_killed_mid_preparation_is_taken_over_and_nothing_is_queued_twice(
    pg_url, config, tmp_path
):
    n = 3000
    db, config, cid = _setup(
        pg_url, config, n, 'big segment="opt_out:no" text="hi" pilot=0 holdout=0'
    )
    env = _env(
        pg_url,
        SIYU_CAMPAIGNS_CHUNK_SIZE="20",
        SIYU_JOBS_LEASE_SECONDS="3",
        SIYU_SCENARIOS_SCHEDULER="false",
    )
    first = SiyuProcess("worker", env, tmp_path, "first")
    second = None
    try:
        await asyncio.to_thread(first.wait_ready)
        job_id = _request(db, config, cid, "launch")
        await _until(lambda: _count(db, OutboxMessage) >= 200, what="the preparation to start")
        await asyncio.to_thread(first.kill)
        at_kill = _count(db, OutboxMessage)
        job = _job(db, job_id)
        assert (job.status, job.attempts) == ("running", 1) and at_kill < n, at_kill

        second = SiyuProcess("worker", env, tmp_path, "second")
        await asyncio.to_thread(second.wait_ready)
        await _until(lambda: _job(db, job_id).status == "done", what="the takeover")
        job = _job(db, job_id)
        assert job.attempts == 2
        assert job.progress == {"done": n, "total": n}
        assert _count(db, OutboxMessage) == n  # each customer's message queued once
        assert _count(db, CampaignTarget, CampaignTarget.campaign_id == cid) == n
        with db.sessions() as session:
            assert session.get_one(Campaign, cid).status == "running"
        assert f"job {job_id} (campaign.prepare) started, attempt 2" in second.output()
    finally:
        first.stop()
        if second is not None:
            assert second.stop() == 0
        db.close()
