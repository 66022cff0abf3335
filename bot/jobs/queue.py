"""The batch-job queue: enqueue once, claim with a lease, renew, record progress and outcome.

A job's idempotency key makes it unique, so a request repeated (a scheduler tick, a second
click, a retried command) queues it once. Workers claim one job at a time: a queued job
whose time has come, or a running one whose lease ran out (its worker died) — taken over
and counted as another attempt, and failed once its attempts are spent. On PostgreSQL the
candidates are read ``FOR UPDATE SKIP LOCKED`` so two workers never claim one job; jobs
sharing a ``lock_key`` never run together (a partial unique index allows one running job
per lock; the claim skips a job whose lock another running job holds). On SQLite the claim
runs in a write transaction, so two processes are serialized.

Every write after the claim names the worker: a worker that lost its lease (it stalled and
another took the job over) changes nothing. A payload's :data:`INPUT` (an uploaded file)
is the job's raw material: it is dropped when the job ends (done or failed), so personal
data in it does not outlive the work; the result keeps what people need to see.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, exists, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased

from bot.core.redaction import redact
from bot.jobs.states import OPEN, JobStatus, transition
from storage.db import insert_ignore_returning, rowcount
from storage.jobs import BatchJob

__all__ = [
    "INPUT",
    "MAX_ERROR",
    "MAX_PAYLOAD_BYTES",
    "Enqueued",
    "JobPayloadTooLarge",
    "any_claimable",
    "claim",
    "enqueue",
    "expire_leases",
    "fail",
    "finish",
    "has_open",
    "record_progress",
    "release",
    "renew",
    "retry",
]

#: The largest payload a job carries, JSON-encoded (an import's file is the biggest).
MAX_PAYLOAD_BYTES = 2 * 1024 * 1024
#: The longest error text stored on a job.
MAX_ERROR = 2000
#: The payload key of a job's raw input (a file's text), dropped when the job ends.
INPUT = "input"
#: Candidates one claim looks at (jobs whose lock is busy are passed over).
_CANDIDATES = 8


class JobPayloadTooLarge(ValueError):
    """A payload over :data:`MAX_PAYLOAD_BYTES`; nothing was queued."""


@dataclass(frozen=True)
class Enqueued:
    """The job for a key: its id, and whether this call queued it (False: it existed)."""

    job_id: int
    created: bool


def enqueue(
    session: Session,
    *,
    kind: str,
    key: str,
    payload: dict[str, Any],
    now: datetime,
    lock: str | None = None,
    created_by: str = "",
    max_attempts: int = 3,
) -> Enqueued:
    """Queue a job unless one with ``key`` exists (in the caller's transaction)."""
    size = len(json.dumps(payload, ensure_ascii=False).encode())
    if size > MAX_PAYLOAD_BYTES:
        raise JobPayloadTooLarge(f"a job payload is at most {MAX_PAYLOAD_BYTES} bytes, got {size}")
    inserted = insert_ignore_returning(
        session,
        BatchJob,
        {
            "kind": kind[:32],
            "idempotency_key": key[:200],
            "lock_key": lock[:64] if lock else None,
            "payload": payload,
            "status": JobStatus.QUEUED.value,
            "attempts": 0,
            "max_attempts": max(1, max_attempts),
            "not_before": now,
            "progress": {},
            "created_by": created_by[:128],
            "created_at": now,
        },
        ["idempotency_key"],
        returning="id",
    )
    if inserted:
        return Enqueued(int(inserted[0]), True)
    existing = session.scalar(select(BatchJob.id).where(BatchJob.idempotency_key == key[:200]))
    assert existing is not None  # the insert conflicted with it
    return Enqueued(int(existing), False)


def has_open(session: Session, lock: str) -> bool:
    """Whether a job of ``lock`` is queued or running."""
    return bool(
        session.scalar(select(exists().where(BatchJob.lock_key == lock, BatchJob.status.in_(OPEN))))
    )


def _without_input(payload: dict[str, Any] | None) -> dict[str, Any]:
    return {k: v for k, v in (payload or {}).items() if k != INPUT}


def _claimable(now: datetime):
    """Queued and due, or running with a lease that ran out."""
    return or_(
        and_(BatchJob.status == JobStatus.QUEUED, BatchJob.not_before <= now),
        and_(BatchJob.status == JobStatus.RUNNING, BatchJob.lease_until < now),
    )


def any_claimable(session: Session, *, now: datetime, kinds: Sequence[str]) -> bool:
    """Whether a job of ``kinds`` may be claimed now (a cheap read before the claim)."""
    return bool(
        session.scalar(select(exists().where(BatchJob.kind.in_(list(kinds)), _claimable(now))))
    )


def claim(
    session: Session,
    *,
    worker: str,
    now: datetime,
    lease: timedelta,
    kinds: Sequence[str],
    job_id: int | None = None,
) -> BatchJob | None:
    """Claim one job of ``kinds`` for ``worker`` (only ``job_id`` if given); None if none.

    Taken-over jobs come first (they were started), then the oldest queued. A taken-over
    job out of attempts is failed instead, with the reason stored."""
    other = aliased(BatchJob)
    lock_busy = exists().where(
        other.lock_key == BatchJob.lock_key,
        other.status == JobStatus.RUNNING,
        other.lease_until >= now,
        other.id != BatchJob.id,
    )
    query = (
        select(BatchJob)
        .where(BatchJob.kind.in_(list(kinds)), _claimable(now))
        .where(or_(BatchJob.lock_key.is_(None), ~lock_busy))
        .order_by((BatchJob.status == JobStatus.RUNNING).desc(), BatchJob.id)
        .limit(_CANDIDATES)
        .with_for_update(skip_locked=True, of=BatchJob)
    )
    if job_id is not None:
        query = query.where(BatchJob.id == job_id)
    for job in session.scalars(query).all():
        taken_over = job.status == JobStatus.RUNNING
        if taken_over and job.attempts >= job.max_attempts:
            job.status = transition(job.status, JobStatus.FAILED).value
            job.error = (
                f"the worker running it stopped {job.attempts} time(s) before it finished "
                "(its lease ran out each time); not retried"
            )
            job.claimed_by = job.lease_until = None
            job.finished_at = now
            job.payload = _without_input(job.payload)
            continue
        try:
            with session.begin_nested():  # a lock another worker just took: skip this one
                job.status = transition(job.status, JobStatus.RUNNING).value
                job.claimed_by = worker[:64]
                job.lease_until = now + lease
                job.attempts += 1
                job.started_at = job.started_at or now
                session.flush()
        except IntegrityError:
            session.expire(job)
            continue
        return job
    return None


def _mine(job_id: int, worker: str):
    return update(BatchJob).where(
        BatchJob.id == job_id,
        BatchJob.claimed_by == worker,
        BatchJob.status == JobStatus.RUNNING,
    )


def renew(session: Session, job_id: int, worker: str, lease_until: datetime) -> bool:
    """Extend ``worker``'s lease on the job; False if it lost the job meanwhile."""
    return rowcount(session.execute(_mine(job_id, worker).values(lease_until=lease_until))) == 1


def record_progress(
    session: Session, job_id: int, worker: str, progress: dict[str, Any], lease_until: datetime
) -> bool:
    """Store how far the job got (and renew the lease); False if the worker lost the job."""
    return (
        rowcount(
            session.execute(
                _mine(job_id, worker).values(progress=progress, lease_until=lease_until)
            )
        )
        == 1
    )


def finish(session: Session, job_id: int, worker: str, result: dict[str, Any], now: datetime):
    """The job is done with ``result``; False if the worker lost the job meanwhile."""
    done = transition(JobStatus.RUNNING, JobStatus.DONE).value
    return _end(session, job_id, worker, status=done, result=result, error=None, finished_at=now)


def _end(session: Session, job_id: int, worker: str, **values: Any) -> bool:
    """Move ``worker``'s running job to a final state, dropping its input."""
    job = session.get(BatchJob, job_id, with_for_update=True)
    if job is None or job.claimed_by != worker or job.status != JobStatus.RUNNING:
        return False
    for name, value in values.items():
        setattr(job, name, value)
    job.claimed_by = job.lease_until = None
    job.payload = _without_input(job.payload)
    return True


def _error_text(error: object) -> str:
    return redact(error)[:MAX_ERROR]


def fail(
    session: Session, job_id: int, worker: str, error: object, now: datetime, result=None
) -> bool:
    """The job failed for good with ``error`` (redacted, bounded)."""
    failed = transition(JobStatus.RUNNING, JobStatus.FAILED).value
    values: dict[str, Any] = {"status": failed, "error": _error_text(error), "finished_at": now}
    if result is not None:
        values["result"] = result
    return _end(session, job_id, worker, **values)


def retry(
    session: Session, job_id: int, worker: str, error: object, now: datetime, delay: float
) -> JobStatus | None:
    """An attempt failed: queue the job again after ``delay`` seconds, or fail it once its
    attempts are spent. Returns the job's new status (None if the worker lost the job)."""
    job = session.get(BatchJob, job_id, with_for_update=True)
    if job is None or job.claimed_by != worker or job.status != JobStatus.RUNNING:
        return None
    job.error = _error_text(error)
    job.claimed_by = job.lease_until = None
    if job.attempts >= job.max_attempts:
        job.status = transition(job.status, JobStatus.FAILED).value
        job.finished_at = now
        job.payload = _without_input(job.payload)
    else:
        job.status = transition(job.status, JobStatus.QUEUED).value
        job.not_before = now + timedelta(seconds=delay)
    return JobStatus(job.status)


def release(session: Session, worker: str) -> int:
    """Put ``worker``'s running jobs back in the queue (a clean stop: not an attempt)."""
    queued = transition(JobStatus.RUNNING, JobStatus.QUEUED).value
    result = session.execute(
        update(BatchJob)
        .where(BatchJob.claimed_by == worker, BatchJob.status == JobStatus.RUNNING)
        .values(
            status=queued,
            claimed_by=None,
            lease_until=None,
            attempts=BatchJob.attempts - 1,
        )
    )
    return rowcount(result)


def expire_leases(session: Session, now: datetime) -> int:
    """End every running job's lease now (single-process SQLite start-up: whatever runs was
    left by a crash), so the first claim takes them over."""
    result = session.execute(
        update(BatchJob).where(BatchJob.status == JobStatus.RUNNING).values(lease_until=now)
    )
    return rowcount(result)
