"""Campaign preparation as a batch job: what is queued, under which key and lock.

Piloting, launching and judging a pilot (segment, render, queue into the outbox) is long
work a worker process runs (:func:`bot.marketing.campaigns.manage.prepare`). Whoever asks
for it — the chat command, the CLI, a console button (through ``manage.request``), or the
scheduler for a pilot whose period is over — only queues a job here. Its key is the
campaign, the step and the campaign's version, so one request is queued once; its lock is
the campaign, so two workers never prepare the same campaign at the same time.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from bot.jobs import queue

__all__ = ["KIND", "STEPS", "enqueue_preparation", "lock_of", "preparation_key"]

#: The job kind of a campaign's preparation.
KIND = "campaign.prepare"
#: What a preparation job does: send to the pilot arm, to everyone, or judge the pilot.
STEPS = ("pilot", "launch", "evaluate")


def lock_of(campaign_id: int) -> str:
    """The lock every preparation job of one campaign shares."""
    return f"campaign:{campaign_id}"


def preparation_key(campaign_id: int, step: str, version: int) -> str:
    """The idempotency key: one job per campaign, step and version."""
    return f"campaign:{campaign_id}:{step}:v{version}"


def enqueue_preparation(
    session: Session,
    campaign_id: int,
    step: str,
    version: int,
    *,
    now: datetime,
    created_by: str = "",
    max_attempts: int = 3,
) -> queue.Enqueued:
    """Queue ``step`` of campaign ``campaign_id`` at ``version`` (once per key)."""
    if step not in STEPS:
        raise ValueError(f"unknown campaign step {step!r} (known: {', '.join(STEPS)})")
    return queue.enqueue(
        session,
        kind=KIND,
        key=preparation_key(campaign_id, step, version),
        payload={"campaign_id": campaign_id, "step": step, "version": version},
        now=now,
        lock=lock_of(campaign_id),
        created_by=created_by,
        max_attempts=max_attempts,
    )
