"""Scenario funnels for managers and clicks on scenario buttons (issue 6, funnel tracking).

``/scenario stats NAME`` answers with the scenario's funnel per local date (the same steps as
``/campaign stats``, plus dropped reasons and missed runs). A press of a scenario button
(``s:<name>:<variant>:<action>``) is recorded against the latest scenario message the
customer got, by that message's outbox key.
"""

from __future__ import annotations

from sqlalchemy import select

from bot.core.context import Context
from bot.core.events import EventKind
from bot.core.filters import Filter
from bot.marketing.campaigns.funnel import format_scenario_funnel, scenario_funnel
from storage.campaigns import Scenario
from storage.db import insert_ignore
from storage.models import OutboxMessage
from storage.scenario_events import ScenarioEvent

__all__ = ["is_scenario_button", "scenario_button", "scenario_command"]

is_scenario_button = Filter(
    lambda c: c.event.kind is EventKind.BUTTON and (c.event.button_data or "").startswith("s:"),
    "scenario_button",
)


def scenario_command(ctx: Context) -> None:
    """``/scenario stats NAME`` (managers)."""
    args = ctx.event.args
    if len(args) != 2 or args[0].lower() != "stats":
        ctx.reply("scenario_usage")
        return
    scenario = ctx.session.scalars(select(Scenario).where(Scenario.name == args[1])).one_or_none()
    if scenario is None:
        ctx.reply("campaign_error", problem=f"no scenario named {args[1]!r}")
        return
    table = format_scenario_funnel(scenario, scenario_funnel(ctx.session, scenario))
    ctx.reply("scenario_stats", table=table)


def scenario_button(ctx: Context) -> None:
    """``s:<scenario>:<variant>:<action>``: record the click, acknowledge it."""
    assert ctx.customer is not None
    parts = (ctx.event.button_data or "").split(":", 3)
    if len(parts) != 4:
        return
    scenario = ctx.session.scalars(select(Scenario).where(Scenario.name == parts[1])).one_or_none()
    if scenario is None:
        return
    key = ctx.session.scalars(
        select(OutboxMessage.idempotency_key)
        .where(
            OutboxMessage.customer_id == ctx.customer.id,
            OutboxMessage.idempotency_key.startswith(f"scenario:{scenario.name}:", autoescape=True),
        )
        .order_by(OutboxMessage.id.desc())
        .limit(1)
    ).first()
    if key is None:
        return
    insert_ignore(
        ctx.session,
        ScenarioEvent,
        {
            "scenario_id": scenario.id,
            "customer_id": ctx.customer.id,
            "outbox_key": key,
            "kind": "click",
            "detail": parts[3][:64],
            "occurred_at": ctx.now,
        },
        ["outbox_key", "kind", "detail"],
    )
    ctx.reply("campaign_clicked", action=parts[3], campaign=scenario.name)
