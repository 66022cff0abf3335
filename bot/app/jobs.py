"""The batch-job kinds this code knows, each with the function a worker runs for it.

A worker claims only jobs of the kinds listed here (bot/jobs/worker.py); the kinds' own
modules say what a job of theirs does and how it is queued.
"""

from __future__ import annotations

from bot.customers import imports
from bot.jobs.worker import Runner
from bot.marketing.campaigns import jobs as campaign_jobs
from bot.marketing.campaigns import manage

__all__ = ["job_runners"]


def job_runners() -> dict[str, Runner]:
    """Kind → runner: campaign preparation and console imports."""
    return {
        campaign_jobs.KIND: manage.prepare,
        imports.KIND: imports.run_import,
    }
