"""Scenario-timed pushes: the right content at each customer's own right time.

A scenario (``[[scenarios.definitions]]``, synced into the ``scenarios`` table) has a
schedule (``daily``, weekdays such as ``fri``, or ``birthday``), a send window in the
customer's local time (``07:00-09:00``), a segment, a template, optional buttons and
coupon. The scheduler calls :func:`tick` every ``tick_seconds``; for every time zone its
customers live in, a tick inside today's window runs the push once (claimed in
``scenario_runs`` by scenario, zone and local date, so a re-run or a second tick queues
nothing twice). A tick after the window closed, for a day that never ran, records the run
as ``missed`` — so a process down at 07:00 and up at 08:10 still sends the morning offer,
one up only at 11:00 does not.
"""

from __future__ import annotations

import calendar
import dataclasses
import logging
from collections import defaultdict
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import extract, select
from sqlalchemy.orm import Session

from bot.app.config import ScenarioDef
from bot.customers.segments import compile_segment
from bot.marketing import policy
from bot.marketing.campaigns.push import ChunkResult, Push, Variant
from bot.marketing.coupons import definition
from bot.measures.surveys import BUTTON_PREFIX as SURVEY_BUTTON
from bot.measures.surveys import question_template, scale_buttons, survey_def
from bot.outbox.states import OutboxPurpose, SourceKind
from storage.campaigns import Scenario, ScenarioRun
from storage.db import insert_ignore
from storage.models import Customer, OutboxMessage
from storage.scenario_events import ScenarioEvent

if TYPE_CHECKING:
    from bot.app.services import Services

__all__ = [
    "applies_on",
    "find_scenario",
    "record_button",
    "scenario_names",
    "sync_scenarios",
    "tick",
]

log = logging.getLogger(__name__)
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def sync_scenarios(session: Session, definitions: list[ScenarioDef], now: datetime) -> list[int]:
    """Upsert scenario definitions from config; returns the ids of the enabled ones."""
    existing = {s.name: s for s in session.scalars(select(Scenario))}
    ids = []
    for item in definitions:
        row = existing.get(item.name)
        if row is None:
            row = Scenario(name=item.name)
            session.add(row)
        row.definition = dataclasses.asdict(item)
        row.enabled = item.enabled
        row.updated_at = now
        session.flush()
        if item.enabled:
            ids.append(row.id)
    return ids


def applies_on(schedule: str, day: date) -> bool:
    """Whether a schedule has a run on a local date (birthday runs daily for that day's)."""
    if schedule in ("daily", "birthday"):
        return True
    return WEEKDAYS[day.weekday()] in [d.strip() for d in schedule.split(",")]


def _zones(session: Session, default: str) -> dict[str, list[str]]:
    """Effective zone → the raw ``Customer.timezone`` values that mean it."""
    groups: dict[str, list[str]] = defaultdict(list)
    for (raw,) in session.execute(select(Customer.timezone).distinct()):
        try:
            name = str(ZoneInfo(raw)) if raw else default
        except (ZoneInfoNotFoundError, ValueError):
            name = default
        groups[name].append(raw)
    return groups


def tick(services: Services, scenario_id: int) -> dict[str, str]:
    """Run a scenario wherever its window is open now; returns zone → what happened."""
    now = services.clock.now()
    with services.db.transaction() as session:
        scenario = session.get(Scenario, scenario_id)
        if scenario is None or not scenario.enabled:
            return {}
        item = ScenarioDef(**scenario.definition)
        zones = _zones(session, services.config.general.timezone)
    start, end = policy.parse_range(item.window)
    outcome: dict[str, str] = {}
    for zone_name, raw_values in sorted(zones.items()):
        zone = ZoneInfo(zone_name)
        local = now.astimezone(zone)
        if not applies_on(item.schedule, local.date()) or local.time() < start:
            continue
        day = local.date().isoformat()
        with services.db.transaction() as session:
            run = session.scalars(
                select(ScenarioRun).where(
                    ScenarioRun.scenario_id == scenario_id,
                    ScenarioRun.timezone == zone_name,
                    ScenarioRun.local_date == day,
                )
            ).one_or_none()
            if run is not None and run.status != "running":
                continue
            if local.time() >= end:
                if run is None:
                    insert_ignore(
                        session,
                        ScenarioRun,
                        {
                            "scenario_id": scenario_id,
                            "timezone": zone_name,
                            "local_date": day,
                            "status": "missed",
                            "queued": 0,
                            "dropped": 0,
                            "started_at": now,
                            "finished_at": now,
                            "reason": f"not run inside {item.window} (first chance at "
                            f"{local.strftime('%H:%M')} local)",
                        },
                        ["scenario_id", "timezone", "local_date"],
                    )
                    log.warning("scenario %s missed in %s on %s", item.name, zone_name, day)
                    outcome[zone_name] = "missed"
                continue
            if run is None:
                insert_ignore(
                    session,
                    ScenarioRun,
                    {
                        "scenario_id": scenario_id,
                        "timezone": zone_name,
                        "local_date": day,
                        "status": "running",
                        "queued": 0,
                        "dropped": 0,
                        "started_at": now,
                    },
                    ["scenario_id", "timezone", "local_date"],
                )
        result = _push(services, scenario, item, raw_values, local.date(), now)
        with services.db.transaction() as session:
            run = session.scalars(
                select(ScenarioRun).where(
                    ScenarioRun.scenario_id == scenario_id,
                    ScenarioRun.timezone == zone_name,
                    ScenarioRun.local_date == day,
                )
            ).one()
            run.status, run.finished_at = "sent", now
            run.queued = result.queued
            run.dropped = sum(result.dropped.values())
            run.reason = ", ".join(f"{k}={v}" for k, v in sorted(result.dropped.items())) or None
        log.info("scenario %s in %s on %s: %s", item.name, zone_name, day, result.as_dict())
        outcome[zone_name] = "sent"
    return outcome


def _push(
    services: Services,
    scenario: Scenario,
    item: ScenarioDef,
    raw_zones: list[str],
    day: date,
    now: datetime,
) -> ChunkResult:
    config = services.config
    prefix = f"scenario:{item.name}:{day.isoformat()}"
    with services.db.transaction() as session:
        coupon = definition(session, item.coupon) if item.coupon else None
        compiled = compile_segment(item.segment, config=config, now=now, session=session)
    query = compiled.select_ids().where(Customer.timezone.in_(raw_zones))
    if item.schedule == "birthday":
        days = [day.day]
        if (day.month, day.day) == (2, 28) and not calendar.isleap(day.year):
            days.append(29)  # 29 February birthdays are kept on the 28th in common years
        query = query.where(
            extract("month", Customer.birthday) == day.month,
            extract("day", Customer.birthday).in_(days),
        )
    if item.once_per_days:
        earlier = select(OutboxMessage.customer_id).where(
            OutboxMessage.source_kind == SourceKind.SCENARIO,
            OutboxMessage.source_id == scenario.id,
            OutboxMessage.idempotency_key.not_like(f"{prefix}:%"),
            OutboxMessage.created_at > now - timedelta(days=item.once_per_days),
            OutboxMessage.status.not_in(policy.NOT_COUNTED),
            OutboxMessage.customer_id.is_not(None),
        )
        query = query.where(Customer.id.not_in(earlier))
    template, buttons, button_prefix = (
        item.template,
        [(label, action) for label, _, action in (b.partition("=") for b in item.buttons)],
        f"s:{item.name}",
    )
    if item.survey:  # the survey's question and scale; answers go to the survey
        survey = survey_def(config, item.survey)
        template, buttons = question_template(survey), scale_buttons(survey)
        button_prefix = f"{SURVEY_BUTTON}:{survey.name}:scenario:{item.name}"
    push = Push(
        config=config,
        renderer=services.renderer,
        key_prefix=prefix,
        variants=[Variant("main", template=template)],
        purpose=OutboxPurpose.SCENARIO,
        source=(SourceKind.SCENARIO, scenario.id),
        priority=item.priority,
        buttons=buttons,
        button_prefix=button_prefix,
        coupon=coupon,
        quiet_hours=item.quiet_hours,
        extra_vars={"scenario": item.name},
    )
    return push.stream(services.db, query, now, config.campaigns.chunk_size)


def find_scenario(session: Session, name: str) -> Scenario | None:
    """The scenario named ``name`` (chat ``/scenario stats`` and ``siyu report scenario``)."""
    return session.scalars(select(Scenario).where(Scenario.name == name)).one_or_none()


def scenario_names(session: Session) -> list[str]:
    """Every scenario's name, sorted."""
    return list(session.scalars(select(Scenario.name).order_by(Scenario.name)))


def record_button(
    session: Session, scenario: Scenario, customer_id: int, action: str, now: datetime
) -> bool:
    """A scenario button was pressed: count it against the customer's latest message of
    that scenario; False if the scenario never messaged them."""
    key = session.scalars(
        select(OutboxMessage.idempotency_key)
        .where(
            OutboxMessage.customer_id == customer_id,
            OutboxMessage.source_kind == SourceKind.SCENARIO,
            OutboxMessage.source_id == scenario.id,
        )
        .order_by(OutboxMessage.id.desc())
        .limit(1)
    ).first()
    if key is None:
        return False
    insert_ignore(
        session,
        ScenarioEvent,
        {
            "scenario_id": scenario.id,
            "customer_id": customer_id,
            "outbox_key": key,
            "kind": "click",
            "detail": action[:64],
            "occurred_at": now,
        },
        ["outbox_key", "kind", "detail"],
    )
    return True
