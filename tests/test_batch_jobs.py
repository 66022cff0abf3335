"""The batch-job queue and worker on SQLite and PostgreSQL: a key queues once, a status
move outside the table is refused, a failing job is retried with backoff and then failed
with a redacted error, a job whose worker died is taken over when its lease runs out (and
failed once its attempts are spent), jobs of one lock never run together, a clean stop
gives a job back without counting it, a campaign's preparation is queued once."""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from bot.app.services import Services
from bot.core.redaction import register_secrets
from bot.core.templating import Renderer
from bot.jobs import queue
from bot.jobs.states import IllegalJobTransition, JobStatus, transition
from bot.jobs.worker import JobRefused, JobWorker
from bot.marketing.campaigns import manage
from bot.marketing.campaigns.spec import parse_spec
from storage.campaigns import Campaign
from storage.jobs import BatchJob
from storage.models import OutboxMessage
from tests.campaign_support import make_customer
from tests.support import run_jobs

LEASE = timedelta(seconds=60)


def _job(db, job_id: int) -> BatchJob:
    with db.sessions() as s:
        return s.get_one(BatchJob, job_id)


def _enqueue(db, clock, key: str, *, kind: str = "test", lock: str | None = None, **kw) -> int:
    with db.transaction() as s:
        return queue.enqueue(
            s, kind=kind, key=key, payload={"n": key}, now=clock.now(), lock=lock, **kw
        ).job_id


def _claim(db, clock, worker: str, job_id: int | None = None) -> BatchJob | None:
    with db.transaction() as s:
        job = queue.claim(
            s, worker=worker, now=clock.now(), lease=LEASE, kinds=["test"], job_id=job_id
        )
        if job is not None:
            s.flush()
            s.expunge(job)
        return job


def test_a_key_queues_one_job(db, clock):
    with db.transaction() as s:
        first = queue.enqueue(s, kind="test", key="k", payload={"a": 1}, now=clock.now())
        again = queue.enqueue(s, kind="test", key="k", payload={"a": 2}, now=clock.now())
    assert first.created and not again.created and first.job_id == again.job_id
    assert _job(db, first.job_id).payload == {"a": 1}
    with db.sessions() as s:
        assert s.scalar(select(func.count()).select_from(BatchJob)) == 1


def test_a_payload_over_the_bound_is_refused(db, clock):
    with pytest.raises(queue.JobPayloadTooLarge), db.transaction() as s:
        queue.enqueue(
            s, kind="t", key="big", payload={"x": "字" * queue.MAX_PAYLOAD_BYTES}, now=clock.now()
        )
    with db.sessions() as s:
        assert s.scalar(select(func.count()).select_from(BatchJob)) == 0


def test_a_status_move_outside_the_table_is_refused(db, clock):
    for old, new in (("done", "running"), ("queued", "done"), ("failed", "queued")):
        with pytest.raises(IllegalJobTransition):
            transition(old, new)
    assert transition("running", "queued") is JobStatus.QUEUED
    job_id = _enqueue(db, clock, "a")
    claimed = _claim(db, clock, "w1")
    with db.transaction() as s:
        assert queue.finish(s, job_id, "w1", {"ok": True}, clock.now())
    with db.transaction() as s:  # a finished job cannot be finished, failed or renewed again
        assert not queue.finish(s, job_id, "w1", {"ok": False}, clock.now())
        assert not queue.fail(s, job_id, "w1", "late", clock.now())
        assert not queue.renew(s, job_id, "w1", clock.now() + LEASE)
    job = _job(db, job_id)
    assert claimed is not None and (job.status, job.result) == ("done", {"ok": True})


def test_a_failing_job_is_retried_then_failed_with_a_redacted_error(db, config, clock):
    secret = "sk-live-0123456789abcdef"
    register_secrets([secret])
    calls = []

    def flaky(services, job):
        calls.append(job.attempt)
        raise RuntimeError(f"upstream refused token {secret}")

    worker = JobWorker(Services(db, config, Renderer(), clock), {"test": flaky}, config.jobs)
    job_id = _enqueue(db, clock, "flaky", max_attempts=3)
    assert worker.run_one() is not None
    job = _job(db, job_id)
    assert job.status == "queued" and job.not_before > clock.now()
    assert worker.run_one() is None  # backing off
    for _ in range(2):
        clock.advance(timedelta(seconds=config.jobs.retry_max_seconds))
        assert worker.run_one() is not None
    job = _job(db, job_id)
    assert (job.status, job.attempts, calls) == ("failed", 3, [1, 2, 3])
    assert "upstream refused token" in job.error and secret not in job.error
    assert job.finished_at == clock.now()


def test_a_refused_job_fails_at_once_with_its_message(db, config, clock):
    def refuse(services, job):
        raise JobRefused("the file has no header", {"rejected": 0})

    worker = JobWorker(Services(db, config, Renderer(), clock), {"test": refuse}, config.jobs)
    job_id = _enqueue(db, clock, "bad")
    worker.run_one()
    job = _job(db, job_id)
    assert (job.status, job.attempts, job.error) == ("failed", 1, "the file has no header")
    assert job.result == {"rejected": 0}


def test_a_job_whose_lease_ran_out_is_taken_over_and_counted(db, clock):
    job_id = _enqueue(db, clock, "long", max_attempts=2)
    assert _claim(db, clock, "dead-worker") is not None
    assert _claim(db, clock, "other") is None  # leased
    clock.advance(LEASE + timedelta(seconds=1))
    taken = _claim(db, clock, "other")
    assert taken is not None and (taken.id, taken.attempts) == (job_id, 2)
    with db.transaction() as s:  # the stalled worker comes back: it changes nothing
        assert not queue.record_progress(s, job_id, "dead-worker", {"done": 9}, clock.now())
        assert not queue.finish(s, job_id, "dead-worker", {}, clock.now())
    clock.advance(LEASE + timedelta(seconds=1))  # the second worker dies too: no attempts left
    assert _claim(db, clock, "third") is None
    job = _job(db, job_id)
    assert (job.status, job.attempts) == ("failed", 2)
    assert "stopped 2 time(s)" in job.error


def test_jobs_of_one_lock_never_run_together(db, clock):
    first = _enqueue(db, clock, "c1-pilot", lock="campaign:1")
    second = _enqueue(db, clock, "c1-launch", lock="campaign:1")
    other = _enqueue(db, clock, "c2-launch", lock="campaign:2")
    assert _claim(db, clock, "w1").id == first
    assert _claim(db, clock, "w2").id == other  # campaign 1 is busy: its second job waits
    assert _claim(db, clock, "w3") is None
    with db.transaction() as s:
        queue.finish(s, first, "w1", {}, clock.now())
    assert _claim(db, clock, "w3").id == second


def test_the_lock_holds_when_a_job_is_claimed_directly(db, clock):
    """Without the lock check in the claim query, the partial unique index refuses a
    second running job of one lock."""
    first = _enqueue(db, clock, "a", lock="campaign:7")
    second = _enqueue(db, clock, "b", lock="campaign:7")
    assert _claim(db, clock, "w1", first) is not None
    from sqlalchemy.exc import IntegrityError

    with pytest.raises(IntegrityError), db.transaction() as s:
        s.execute(
            update(BatchJob)
            .where(BatchJob.id == second)
            .values(status="running", claimed_by="w2", lease_until=clock.now() + LEASE)
        )


def test_a_clean_stop_gives_the_job_back_without_counting_it(db, clock):
    job_id = _enqueue(db, clock, "x")
    _claim(db, clock, "w1")
    with db.transaction() as s:
        assert queue.release(s, "w1") == 1
    job = _job(db, job_id)
    assert (job.status, job.attempts, job.claimed_by) == ("queued", 0, None)


def _requested(services: Services, text: str, step: str) -> tuple[int, queue.Enqueued]:
    """A campaign made from ``text`` with its ``step`` requested: (its id, the job)."""
    config, now = services.config, services.clock.now()
    spec = parse_spec(text, config)
    with services.db.transaction() as s:
        campaign = manage.create_campaign(
            s, spec, config=config, renderer=services.renderer, now=now
        )
        return campaign.id, manage.request(s, campaign, step, config=config, now=now)


def test_a_campaign_request_queues_its_preparation_once_and_a_worker_runs_it(db, config, clock):
    for user in ("a", "b", "c"):
        make_customer(db, user, clock.now(), tags=("早餐",))
    services = Services(db, config, Renderer(), clock)
    cid, job = _requested(
        services, 'spring segment="tag:早餐" text="hi" pilot=0 holdout=0', "launch"
    )
    assert job.created
    assert manage.run_due(services) == []  # the scheduler sees the job: nothing more
    ran = run_jobs(services)
    assert [(j.kind, j.payload) for j in ran] == [
        ("campaign.prepare", {"campaign_id": cid, "step": "launch", "version": 2})
    ]
    done = _job(db, job.job_id)
    assert done.status == "done" and done.result["new_rows"] == 3
    assert done.progress == {"done": 3, "total": 3}
    with db.sessions() as s:
        assert s.get_one(Campaign, cid).status == "running"
        assert s.scalar(select(func.count()).select_from(OutboxMessage)) == 3
    assert run_jobs(services) == [] and manage.run_due(services) == []


def test_a_pilot_taken_over_after_a_crash_keeps_its_first_start(db, config, clock):
    config = config.replace(campaigns=replace(config.campaigns, chunk_size=1))
    for n in range(20):
        make_customer(db, f"u{n}", clock.now(), tags=("早餐",))
    services = Services(db, config, Renderer(), clock)
    cid, job = _requested(
        services, 'spring segment="tag:早餐" text="hi" pilot=50% holdout=10%', "pilot"
    )
    with db.transaction() as s:  # a worker claims the pilot and dies after a chunk
        assert queue.claim(
            s, worker="dead", now=clock.now(), lease=LEASE, kinds=["campaign.prepare"]
        )

    class Crash(Exception):
        pass

    def crash(_rows: int) -> None:
        raise Crash

    with pytest.raises(Crash):
        manage.start_pilot(services, cid, progress=crash)
    with db.sessions() as s:
        first = s.get_one(Campaign, cid).pilot_started_at
    assert first is not None
    clock.advance(timedelta(seconds=config.jobs.lease_seconds + 1))
    assert [j.id for j in run_jobs(services)] == [job.job_id]  # taken over
    done = _job(db, job.job_id)
    assert (done.status, done.attempts) == ("done", 2)
    with db.sessions() as s:
        campaign = s.get_one(Campaign, cid)
        assert campaign.status == "piloting"
        assert campaign.pilot_started_at == first  # the pilot period counts from the first start


async def test_a_stopping_worker_gives_its_running_job_back_at_the_next_chunk(db, config, clock):
    import asyncio
    import threading

    started = threading.Event()

    def endless(services, job):
        started.set()
        n = 0
        while True:  # a long preparation: one chunk after another
            n += 1
            job.progress(n, None)
            threading.Event().wait(0.01)

    fast = replace(config.jobs, poll_interval_seconds=0.05)
    worker = JobWorker(Services(db, config, Renderer(), clock), {"test": endless}, fast)
    job_id = _enqueue(db, clock, "endless")
    worker.start()
    assert await asyncio.to_thread(started.wait, 10)
    await worker.stop()
    job = _job(db, job_id)
    assert (job.status, job.attempts, job.claimed_by) == ("queued", 0, None)
    assert job.progress["done"] >= 1


def test_a_campaign_paused_while_it_is_prepared_stops_and_queues_nothing_to_send(db, config, clock):
    import threading

    from tests.campaign_support import bulk_customers

    config = config.replace(
        marketing=replace(config.marketing, quiet_hours="00:00-00:00", max_per_window=0),
        campaigns=replace(config.campaigns, chunk_size=1),
    )
    bulk_customers(db, 300, clock.now())
    services = Services(db, config, Renderer(), clock)
    cid, job = _requested(
        services, 'slow segment="opt_out:no" text="hi" pilot=0 holdout=0', "launch"
    )
    worker = threading.Thread(target=run_jobs, args=(services,))
    worker.start()
    deadline = time.monotonic() + 30
    while _campaign_rows(db, cid) < 5:
        assert time.monotonic() < deadline and worker.is_alive(), "the preparation never began"
        time.sleep(0.01)
    manage.pause(services, cid)
    worker.join(30)
    done = _job(db, job.job_id)
    assert (done.status, done.result["status"]) == ("done", "paused")
    with db.sessions() as s:
        assert s.get_one(Campaign, cid).status == "paused"
        statuses = set(
            s.scalars(select(OutboxMessage.status).where(OutboxMessage.source_id == cid))
        )
    assert statuses == {"paused"}  # nothing waits to be sent
    assert _campaign_rows(db, cid) < 300  # it stopped early


def _campaign_rows(db, cid: int) -> int:
    with db.sessions() as s:
        return s.scalar(
            select(func.count()).select_from(OutboxMessage).where(OutboxMessage.source_id == cid)
        )


async def test_an_idle_worker_on_postgresql_is_woken_by_a_job_queued_elsewhere(pg_url, config):
    """The poll is 60 s; the NOTIFY of the insert trigger wakes the worker at once."""
    import asyncio
    import threading

    from bot.core.clock import SystemClock
    from storage.db import Database

    ran = threading.Event()

    def note(services, job):
        ran.set()
        return {}

    clock = SystemClock()
    db, other = Database(pg_url), Database(pg_url)
    slow = replace(config.jobs, poll_interval_seconds=60.0)
    worker = JobWorker(Services(db, config, Renderer(), clock), {"test": note}, slow)
    worker.start()
    try:
        deadline = time.monotonic() + 20
        while worker.notifications is None or not worker.notifications.listening.is_set():
            assert time.monotonic() < deadline, "the worker never listened"
            await asyncio.sleep(0.05)
        started = time.monotonic()
        _enqueue(other, clock, "from-another-process")
        assert await asyncio.to_thread(ran.wait, 20)
        assert time.monotonic() - started < 20  # far below the 60 s poll
    finally:
        await worker.stop()
        db.close()
        other.close()
