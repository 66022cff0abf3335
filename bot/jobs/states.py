"""A batch job's status: what may happen to a queued job.

``queued`` → ``running`` (claimed with a lease) → ``done`` | ``failed``. A running job goes
back to ``queued`` when its worker stops cleanly or an attempt fails and may be retried;
a running job whose lease ran out (its worker died) is taken over in place (``running``
stays ``running``, with the new worker's lease) or, out of attempts, ``failed``. A queued
job may be ``cancelled`` before it runs. ``done``, ``failed`` and ``cancelled`` are final.
"""

from __future__ import annotations

from enum import StrEnum

from bot.core.states import IllegalTransition, Machine

__all__ = ["FINAL", "OPEN", "IllegalJobTransition", "JobStatus", "transition"]


class JobStatus(StrEnum):
    """Where a batch job is."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


class IllegalJobTransition(IllegalTransition):
    """A job status change the table below does not allow."""


_S = JobStatus
TRANSITIONS = {
    _S.QUEUED: (_S.RUNNING, _S.CANCELLED, _S.FAILED),
    _S.RUNNING: (_S.QUEUED, _S.DONE, _S.FAILED),
    _S.DONE: (),
    _S.FAILED: (),
    _S.CANCELLED: (),
}
MACHINE = Machine("batch job status", JobStatus, TRANSITIONS, error=IllegalJobTransition)

#: Jobs still to run or running.
OPEN = (JobStatus.QUEUED, JobStatus.RUNNING)
#: Jobs that will not run again.
FINAL = (JobStatus.DONE, JobStatus.FAILED, JobStatus.CANCELLED)


def transition(old: str, new: str) -> JobStatus:
    """Check one job's move; raises :class:`IllegalJobTransition`."""
    return MACHINE.check(old, new)
