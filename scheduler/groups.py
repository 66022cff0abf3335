"""The groups' job on the one scheduler: post due SOP slots, remove newcomers who did not
confirm in time (bot/groups/)."""

from __future__ import annotations

import logging

__all__ = ["JOB_ID", "groups_due"]

log = logging.getLogger(__name__)

JOB_ID = "groups:due"


def groups_due() -> None:
    """Post every plan's due slots, then expire newcomer checks (jobs take ids only: this
    one takes none and reads what is due from the database)."""
    from bot.groups.moderation import expire_newcomers
    from bot.groups.sop import run_due
    from scheduler.jobs import _bound

    services = _bound()
    posted = run_due(services)
    if posted:
        log.info("sop: posted %s", ", ".join(f"{k} → {v} group(s)" for k, v in posted.items()))
    removed = expire_newcomers(services)
    if removed:
        log.info("moderation: %d newcomer(s) removed for not confirming in time", removed)
