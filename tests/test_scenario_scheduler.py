"""One scheduler across processes: two Siyu processes on one PostgreSQL fire a scenario once."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select

from scheduler.lock import SchedulerLock
from storage.campaigns import ScenarioRun
from storage.db import Database
from storage.models import OutboxMessage
from tests.campaign_support import make_customer

ROOT = Path(__file__).resolve().parent.parent


def test_lock_is_exclusive_and_released(db):
    first, second = SchedulerLock(db.url), SchedulerLock(db.url)
    assert first.acquire()
    assert not second.acquire()
    assert first.alive()
    first.release()
    assert second.acquire()
    second.release()


@pytest.mark.slow
def test_two_processes_fire_a_scenario_once(pg_url):
    db = Database(pg_url)
    db.migrate()
    make_customer(db, "someone", datetime.now(UTC))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen(
            # 8 s of ticks every 0.3 s: at least three scenario ticks between the two even
            # on a machine busy with parallel tests
            [sys.executable, "-m", "tests.scheduler_proc", pg_url, "8"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=60) for p in procs]
    try:
        for p, (_, err) in zip(procs, outputs, strict=True):
            assert p.returncode == 0, err
        executed = [int(out.strip().splitlines()[-1].split("=")[1]) for out, _ in outputs]
        assert sum(executed) >= 3
        led = []
        for out, _ in outputs:
            line = out.strip().splitlines()[-2].removeprefix("led=")
            led += [tuple(map(float, span.split("-"))) for span in line.split(",") if span]
        assert led, "no process led"
        # never two leaders at once: the other process may take over only after the first
        # stopped (when the two stop a moment apart)
        led.sort()
        for (_, end), (start, _) in itertools.pairwise(led):
            assert start >= end - 0.25, led
        with db.sessions() as session:
            assert session.scalar(select(func.count()).select_from(OutboxMessage)) == 1
            assert session.scalar(select(func.count()).select_from(ScenarioRun)) == 1
    finally:
        db.close()
