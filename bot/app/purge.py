"""``siyu purge``: apply the ``[retention]`` periods, a bounded batch per transaction.

One implementation for every caller (the CLI verb, the systemd timer, a cron job).
Delivered outbox rows inside the marketing frequency window (``[marketing]
window_hours``) are kept whatever the period says: the frequency cap counts them. Deleting
interactions drops the Measures page's stored AARRR counts (in the same transaction: the
chain reads a customer's interactions of any time), so they are counted again — by the
nightly job, or the next visit — and the page stays equal to the direct report.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from bot.app.config import Config
from storage.db import Database
from storage.measures import AARRR_REPORT, forget_rollups
from storage.retention import Kind, count_older, delete_older_batch

__all__ = ["PurgeResult", "purge"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PurgeResult:
    """What one retention period removed (or would remove, in a dry run)."""

    kind: Kind
    cutoff: datetime
    deleted: int
    batches: int


def _cutoffs(config: Config, now: datetime) -> dict[Kind, datetime]:
    retention = config.retention
    periods = {
        Kind.INTERACTIONS: retention.interactions_days,
        Kind.TRANSCRIPTS: retention.transcripts_days,
        Kind.OUTBOX: retention.delivered_outbox_days,
    }
    cutoffs = {kind: now - timedelta(days=days) for kind, days in periods.items() if days}
    if Kind.OUTBOX in cutoffs:
        window = now - timedelta(hours=config.marketing.window_hours)
        cutoffs[Kind.OUTBOX] = min(cutoffs[Kind.OUTBOX], window)
    return cutoffs


def purge(
    db: Database, config: Config, now: datetime, *, dry_run: bool = False
) -> list[PurgeResult]:
    """Delete what is older than each set period (nothing for a period of 0)."""
    results = []
    batch = config.retention.batch_size
    for kind, cutoff in _cutoffs(config, now).items():
        if dry_run:
            with db.sessions() as session:
                results.append(PurgeResult(kind, cutoff, count_older(session, kind, cutoff), 0))
            continue
        deleted = batches = 0
        while True:
            with db.transaction() as session:
                n = delete_older_batch(session, kind, cutoff, batch)
                if n and kind is Kind.INTERACTIONS:
                    forget_rollups(session, report=AARRR_REPORT)
            if n:
                deleted += n
                batches += 1
            if n < batch:
                break
        log.info("purge: %d %s row(s) older than %s deleted", deleted, kind, cutoff.isoformat())
        results.append(PurgeResult(kind, cutoff, deleted, batches))
    return results
