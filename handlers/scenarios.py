"""Scenario funnels for managers and clicks on scenario buttons (funnel tracking).

``/scenario stats NAME`` answers with the scenario's funnel per local date (the same steps as
``/campaign stats``, plus dropped reasons and missed runs). A press of a scenario button
(``s:<name>:<variant>:<action>``) is recorded against the latest scenario message the
customer got, by that message's outbox key.
"""

from __future__ import annotations

from bot.core.context import Context
from bot.core.events import EventKind
from bot.core.filters import Filter
from bot.marketing.campaigns.funnel import format_scenario_funnel, scenario_funnel
from bot.marketing.scenarios import find_scenario, record_button

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
    scenario = find_scenario(ctx.session, args[1])
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
    scenario = find_scenario(ctx.session, parts[1])
    if scenario is None:
        return
    if record_button(ctx.session, scenario, ctx.customer.id, parts[3], ctx.now):
        ctx.reply("campaign_clicked", action=parts[3], campaign=scenario.name)
