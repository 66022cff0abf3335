"""Nightly jobs of issue 5 (RFM/lifecycle/tier recompute, expired-tag purge).

Plain importable functions: each ``*_job`` takes only a config path (None = the usual
lookup: ``$SIYU_CONFIG``, else ``./config.toml``, else defaults), so a persistent job store
can hold it; the work functions take a session and a time, for tests. Register them at
``NIGHTLY_CRON`` (03:00); ``siyu rfm recompute`` runs the recompute on demand.
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import delete
from sqlalchemy.orm import Session

from bot.clock import SystemClock
from bot.config import find_config_path, load_config
from bot.rfm import RecomputeResult, recompute_scores
from storage.db import Database
from storage.models import CustomerTag

__all__ = ["NIGHTLY_CRON", "nightly_rfm_job", "purge_expired_tags", "purge_expired_tags_job"]

log = logging.getLogger(__name__)

#: When the nightly jobs are meant to run (APScheduler cron fields).
NIGHTLY_CRON = {"hour": 3, "minute": 0}


def purge_expired_tags(session: Session, now: datetime) -> int:
    """Delete customer tags whose expiry has passed (they are already invisible)."""
    result = session.execute(
        delete(CustomerTag).where(
            CustomerTag.expires_at.is_not(None), CustomerTag.expires_at <= now
        )
    )
    return max(result.rowcount or 0, 0)


def nightly_rfm_job(config_path: str | None = None) -> RecomputeResult:
    """Recompute RFM scores, groups, lifecycle stages and tiers for everyone."""
    config = load_config(find_config_path(config_path))
    db = Database(config.database.url)
    try:
        with db.transaction() as session:
            result = recompute_scores(session, config, SystemClock().now())
    finally:
        db.close()
    log.info(
        "RFM recompute: %d customers scored, %d tier and %d stage changes in %.1f s",
        result.scored,
        result.tier_changes,
        result.stage_changes,
        result.seconds,
    )
    return result


def purge_expired_tags_job(config_path: str | None = None) -> int:
    """Purge expired customer tags."""
    config = load_config(find_config_path(config_path))
    db = Database(config.database.url)
    try:
        with db.transaction() as session:
            removed = purge_expired_tags(session, SystemClock().now())
    finally:
        db.close()
    log.info("purged %d expired customer tags", removed)
    return removed
