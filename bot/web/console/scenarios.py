"""Scenarios in the console: each timed push's funnel per local day (targeted, sent,
delivered, clicked, redeemed; dropped by reason; missed time zones) — ``scenario_funnel``,
the numbers ``/scenario stats`` and ``siyu report scenario`` give."""

from __future__ import annotations

from sqlalchemy import select
from starlette.requests import Request
from starlette.responses import Response

from bot.core.i18n import t
from bot.marketing.campaigns.funnel import scenario_funnel
from bot.web.console import charts
from bot.web.console.campaigns import FUNNEL_STEPS
from bot.web.console.common import endpoint, locale_of, manager_of, page, run, runtime_of
from storage.campaigns import Scenario

__all__ = ["scenario_page"]

#: days shown (the newest)
MAX_DAYS = 90


@endpoint
async def scenario_page(request: Request) -> Response:
    user = await manager_of(request)
    name = request.path_params["name"][:64]
    runtime = runtime_of(request)

    def load():
        with runtime.db.sessions() as session:
            scenario = session.scalars(select(Scenario).where(Scenario.name == name)).one_or_none()
            return (scenario, scenario_funnel(session, scenario)) if scenario else (None, [])

    scenario, rows = await run(request, load)
    if scenario is None:
        return page(request, "console/not_found.html", user, status=404, section="campaigns")
    locale = locale_of(request, user)
    days, total = rows[:-1][-MAX_DAYS:], rows[-1]
    chart = charts.lines(
        [r.variant for r in days],
        {t(f"console.step.{s}", locale): [getattr(r, s) for r in days] for s in FUNNEL_STEPS},
    )
    return page(
        request,
        "console/scenario.html",
        user,
        section="campaigns",
        scenario=scenario,
        days=list(reversed(days)),
        total=total,
        steps=FUNNEL_STEPS,
        charts={"chart-scenario": chart},
    )
