"""The customer engine's nightly work (run by ``scheduler.jobs.nightly_customers``).

The scheduler runs it at ``NIGHTLY_CRON`` (03:00 in the brand's default time zone);
``siyu rfm recompute`` runs the recompute on demand.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete
from sqlalchemy.orm import Session

from storage.db import rowcount
from storage.models import CustomerTag

__all__ = ["NIGHTLY_CRON", "purge_expired_tags"]

#: When the nightly jobs are meant to run (APScheduler cron fields).
NIGHTLY_CRON = {"hour": 3, "minute": 0}


def purge_expired_tags(session: Session, now: datetime) -> int:
    """Delete customer tags whose expiry has passed (they are already invisible)."""
    result = session.execute(
        delete(CustomerTag).where(
            CustomerTag.expires_at.is_not(None), CustomerTag.expires_at <= now
        )
    )
    return max(rowcount(result), 0)
