"""Scheduler jobs: importable functions that take ids only.

The job store keeps ``scheduler.jobs:scenario_tick`` and its arguments, never objects; the
process that runs the scheduler binds its services (database, config, renderer, clock)
here with :func:`bind` before starting.
"""

from __future__ import annotations

import logging
from zoneinfo import ZoneInfo

from bot.app.services import Services
from bot.conversations.followups import run_conversation_jobs
from bot.customers.rfm import recompute_scores
from bot.marketing.campaigns.manage import run_due
from bot.marketing.scenarios import tick
from bot.measures import rollup as measures_rollup
from bot.web.console.measures import COHORT_MONTHS
from bot.web.console.measures import PERIODS as MEASURES_PERIODS
from bot.web.console.queries import roll_up
from scheduler.customer_jobs import purge_expired_tags

__all__ = [
    "bind",
    "campaigns_due",
    "conversations_due",
    "measures_due",
    "nightly_customers",
    "scenario_tick",
]

log = logging.getLogger(__name__)

_services: Services | None = None


def bind(services: Services | None) -> None:
    """Give the jobs of this process the services they run with."""
    global _services
    _services = services


def _bound() -> Services:
    if _services is None:
        raise RuntimeError("scheduler jobs run only in the process holding the scheduler")
    return _services


def scenario_tick(scenario_id: int) -> None:
    """Run one scenario wherever its window is open (bot/marketing/scenarios.py)."""
    tick(_bound(), scenario_id)


def campaigns_due() -> None:
    """Queue the preparation of requested pilots and launches that have no job yet, and the
    verdict of pilots whose period is over; worker processes run them."""
    run_due(_bound())


def conversations_due() -> None:
    """Send due flow follow-ups and escalate handoffs past the SLA."""
    run_conversation_jobs(_bound())


def nightly_customers() -> None:
    """Recompute RFM scores, lifecycle stages and tiers; purge expired customer tags; count
    yesterday into the console dashboard's rollup."""
    services = _bound()
    now = services.clock.now()
    with services.db.transaction() as session:
        result = recompute_scores(session, services.config, now)
        purged = purge_expired_tags(session, now)
    log.info(
        "nightly: %d customers scored, %d tier and %d stage changes; %d expired tags purged",
        result.scored,
        result.tier_changes,
        result.stage_changes,
        purged,
    )
    # The console dashboard's daily rollup: yesterday (and any finished day still missing)
    # counted now, so the first visit of the day reads it instead of catching up.
    zone = ZoneInfo(services.config.general.timezone)
    with services.db.transaction() as session:
        days = roll_up(session, zone, services.clock.now())
    log.info("nightly: %d finished days counted into the console's rollup", days)
    # The Measures page's periods, their finished days counted once (the page adds today).
    with services.db.transaction() as session:
        reports = measures_rollup.roll_up(
            session,
            zone=services.config.general.timezone,
            now=services.clock.now(),
            days=MEASURES_PERIODS,
            months=COHORT_MONTHS,
        )
    log.info("nightly: %d measures reports counted into their rollup", reports)


def measures_due() -> None:
    """Settle referral rewards of newcomers who ordered; send surveys due after orders."""
    from bot.measures.due import run_due

    services = _bound()
    with services.db.transaction() as session:
        result = run_due(
            session, config=services.config, renderer=services.renderer, now=services.clock.now()
        )
    if result.referrals_settled or result.surveys:
        log.info(
            "measures: %d referrals settled; surveys %s", result.referrals_settled, result.surveys
        )
