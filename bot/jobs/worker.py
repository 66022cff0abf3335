"""The job worker: claims batch jobs and runs them off the event loop, one thread each.

Each process that delivers (roles ``worker`` and ``all``) runs one; it runs up to
``[jobs] concurrency`` jobs at once, wakes on new jobs (on PostgreSQL a ``NOTIFY`` from any
process that queued one; else its poll), and while a job runs a thread of the job renews
its lease every third of it. A job reports progress through its :class:`JobContext`,
which is also where it learns that it must stop: when the process stops (the job goes
back to the queue, not counted as an attempt) or when its lease was lost (another worker
took it over after a stall; this one changes nothing more).

A runner returns the job's result (a small JSON-able dict); :class:`JobRefused` ends the
job failed with a message for people and no retry; any other exception is retried with
backoff until the job's attempts are spent, then the job fails with the error stored
(redacted). The same code runs one job in the calling thread (:meth:`JobWorker.run_one`)
for the CLI and for tests.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from bot.jobs import queue
from bot.jobs.states import JobStatus
from bot.outbox.queue import Backoff
from storage.jobs import NOTIFY_CHANNEL, BatchJob
from storage.outbox_notify import OutboxNotifications

if TYPE_CHECKING:
    from bot.app.config import JobsConfig
    from bot.app.services import Services

__all__ = ["JobContext", "JobLost", "JobRefused", "JobStopped", "JobWorker", "Runner"]

log = logging.getLogger(__name__)

#: Progress is written at most this often (seconds); the first and the last always.
PROGRESS_EVERY = 0.5


class JobRefused(Exception):
    """The job cannot be done as asked (bad input): failed at once, not retried.

    ``message`` is what the people who asked read; ``result`` is stored with it."""

    def __init__(self, message: str, result: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message, self.result = message, result


class JobLost(Exception):
    """This worker's lease on the job was lost (another worker took it over)."""


class JobStopped(Exception):
    """The process is stopping; the job goes back to the queue."""


@dataclass
class JobContext:
    """What a runner gets: the job's id, kind, payload and attempt, and :meth:`progress`."""

    job_id: int
    kind: str
    payload: dict[str, Any]
    attempt: int
    _report: Callable[[dict[str, Any]], None] = field(repr=False)
    _lost: threading.Event = field(repr=False)
    _stopping: threading.Event = field(repr=False)
    _last: float = field(default=0.0, repr=False)

    def progress(self, done: int, total: int | None = None, *, force: bool = False) -> None:
        """Record how far the job got; raises :class:`JobLost` or :class:`JobStopped` when
        the job must end here (call it between units of work)."""
        self.check()
        moment = time.monotonic()
        if force or moment - self._last >= PROGRESS_EVERY:
            self._last = moment
            self._report({"done": done} if total is None else {"done": done, "total": total})
        self.check()

    def check(self) -> None:
        """Raise :class:`JobLost` / :class:`JobStopped` if the job must end now."""
        if self._lost.is_set():
            raise JobLost(f"job {self.job_id}: the lease was lost")
        if self._stopping.is_set():
            raise JobStopped(f"job {self.job_id}: the process is stopping")


#: A job kind's implementation: the process's services and the job → its result.
Runner = Callable[["Services", JobContext], dict[str, Any]]


class JobWorker:
    """Claims and runs the jobs of the kinds it has runners for (module docstring)."""

    def __init__(
        self, services: Services, runners: Mapping[str, Runner], config: JobsConfig
    ) -> None:
        self.services = services
        self.db = services.db
        self.runners = dict(runners)
        self.config = config
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.backoff = Backoff(config.retry_base_seconds, config.retry_max_seconds)
        self._stopping = threading.Event()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.notifications: OutboxNotifications | None = None

    @property
    def lease(self) -> timedelta:
        return timedelta(seconds=self.config.lease_seconds)

    def wake(self) -> None:
        """Jobs were queued: look now rather than at the next poll."""
        self._wake.set()

    def start(self) -> None:
        self._stopping.clear()
        self._task = asyncio.create_task(self.run(), name="siyu-jobs")

    async def stop(self) -> None:
        """Stop claiming; running jobs end at their next progress report and are queued
        again (waited for up to ``shutdown_grace_seconds``)."""
        self._stopping.set()
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(
                    asyncio.shield(self._task), self.config.shutdown_grace_seconds
                )
            except TimeoutError:
                # still in a chunk: giving the job back now would let another worker start it
                # while this one finishes the chunk; its lease runs out instead
                log.warning("jobs: grace period over; jobs still running are left to their lease")
                return
        released = await self.db.run(self._release)
        if released:
            log.info("jobs: %d running job(s) returned to the queue", released)

    def _release(self) -> int:
        with self.db.transaction() as session:
            return queue.release(session, self.worker_id)

    async def run(self) -> None:
        log.info("job worker %s started for %s", self.worker_id, ", ".join(self.runners))
        if not self.db.is_postgres:
            await self.db.run(self._recover)
        else:  # jobs queued by other processes wake this one at once
            self.notifications = OutboxNotifications(self.db.url, self.wake, channel=NOTIFY_CHANNEL)
            self.notifications.start()
        running: set[asyncio.Task[None]] = set()
        try:
            while not self._stopping.is_set():
                self._wake.clear()
                claimed = None
                if len(running) < self.config.concurrency:
                    try:
                        claimed = await self.db.run(self._claim, None)
                    except Exception:
                        log.exception("jobs: claim failed; retrying after a pause")
                if claimed is not None:
                    task = asyncio.create_task(asyncio.to_thread(self._execute, claimed))
                    running.add(task)
                    task.add_done_callback(running.discard)
                    continue  # more may be due
                waits: list[asyncio.Task[Any]] = [asyncio.create_task(self._wake.wait())]
                if running:
                    waits.append(asyncio.create_task(asyncio.wait(set(running))))
                _, pending = await asyncio.wait(
                    waits,
                    timeout=self.config.poll_interval_seconds,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                for w in pending:
                    w.cancel()
        finally:
            if running:
                await asyncio.gather(*running, return_exceptions=True)
            if self.notifications is not None:
                await self.notifications.stop()

    def _recover(self) -> int:
        """SQLite is one process: a job still running was left by a crash; its lease ends
        now, so it is taken over (another attempt) at the first claim."""
        with self.db.transaction() as session:
            return queue.expire_leases(session, self.services.clock.now())

    def _claim(self, job_id: int | None) -> BatchJob | None:
        kinds = list(self.runners)
        with self.db.sessions() as session:  # a read first: no write lock while idle (SQLite)
            if not queue.any_claimable(session, now=self.services.clock.now(), kinds=kinds):
                return None
        with self.db.transaction() as session:
            job = queue.claim(
                session,
                worker=self.worker_id,
                now=self.services.clock.now(),
                lease=self.lease,
                kinds=kinds,
                job_id=job_id,
            )
            if job is not None:
                session.flush()
                session.expunge(job)
            return job

    def run_one(
        self,
        job_id: int | None = None,
        on_progress: Callable[[dict[str, Any]], None] | None = None,
    ) -> BatchJob | None:
        """Claim one due job (``job_id`` only, if given) and run it in this thread; the
        job as claimed, or None if there was none to claim. ``on_progress`` sees each
        progress report too (the CLI's progress bar)."""
        job = self._claim(job_id)
        if job is not None:
            self._execute(job, on_progress)
        return job

    def _execute(
        self, job: BatchJob, on_progress: Callable[[dict[str, Any]], None] | None = None
    ) -> None:
        runner = self.runners[job.kind]
        lost, done = threading.Event(), threading.Event()
        keeper = threading.Thread(
            target=self._keep_lease, args=(job.id, lost, done), name=f"siyu-job-{job.id}-lease"
        )
        keeper.daemon = True
        keeper.start()

        def report(progress: dict[str, Any]) -> None:
            self._progress(job.id, progress, lost)
            if on_progress is not None:
                on_progress(progress)

        context = JobContext(
            job.id,
            job.kind,
            dict(job.payload or {}),
            job.attempts,
            _report=report,
            _lost=lost,
            _stopping=self._stopping,
        )
        now = self.services.clock.now
        log.info("job %d (%s) started, attempt %d", job.id, job.kind, job.attempts)
        started, outcome = time.monotonic(), "lost"
        try:
            result = runner(self.services, context)
        except JobLost:
            log.warning("job %d (%s): lease lost; another worker has it", job.id, job.kind)
        except JobStopped:
            outcome = "stopped"
            log.info("job %d (%s): stopped with the process; queued again", job.id, job.kind)
        except JobRefused as refused:
            log.info("job %d (%s) refused: %s", job.id, job.kind, refused.message)
            if self._write(
                queue.fail, job.id, self.worker_id, refused.message, now(), refused.result
            ):
                outcome = "refused"
        except Exception as exc:
            log.exception("job %d (%s) failed on attempt %d", job.id, job.kind, job.attempts)
            error = f"{type(exc).__name__}: {exc}"
            delay = self.backoff.delay(job.attempts)
            status = self._write(queue.retry, job.id, self.worker_id, error, now(), delay)
            log.info("job %d (%s): now %s", job.id, job.kind, status)
            if status is not None:
                outcome = "failed" if status == JobStatus.FAILED else "retry"
        else:
            if not self._write(queue.finish, job.id, self.worker_id, result, now()):
                log.warning("job %d (%s) finished after its lease was lost", job.id, job.kind)
            else:
                outcome = "done"
                log.info("job %d (%s) done", job.id, job.kind)
        finally:
            done.set()
            metrics = self.services.metrics
            metrics.job_runs.labels(job.kind, outcome).inc()
            metrics.job_duration.labels(job.kind).observe(time.monotonic() - started)

    def _write(self, fn: Callable[..., Any], *args: Any) -> Any:
        with self.db.transaction() as session:
            return fn(session, *args)

    def _progress(self, job_id: int, progress: dict[str, Any], lost: threading.Event) -> None:
        until = self.services.clock.now() + self.lease
        if not self._write(queue.record_progress, job_id, self.worker_id, progress, until):
            lost.set()

    def _keep_lease(self, job_id: int, lost: threading.Event, done: threading.Event) -> None:
        """Renew the job's lease every third of it until the job ends."""
        while not done.wait(self.config.lease_seconds / 3):
            try:
                until = self.services.clock.now() + self.lease
                if not self._write(queue.renew, job_id, self.worker_id, until):
                    lost.set()
                    return
            except Exception:
                log.exception("jobs: could not renew the lease of job %d", job_id)
