"""The console's first page: the community at a glance over a chosen period."""

from __future__ import annotations

from zoneinfo import ZoneInfo

from starlette.requests import Request
from starlette.responses import Response

from bot.core.i18n import t
from bot.web.console import charts, measures, queries
from bot.web.console.common import (
    endpoint,
    label,
    locale_of,
    manager_of,
    page,
    run,
    runtime_of,
)

__all__ = ["dashboard"]


def period_of(request: Request) -> queries.Period:
    """The period asked for (``?days=7|30|90``; 30 otherwise), ending now."""
    runtime = runtime_of(request)
    raw = request.query_params.get("days", "")
    days = int(raw) if raw.isdigit() and int(raw) in queries.PERIODS else 30
    zone = ZoneInfo(runtime.config.general.timezone)
    return queries.Period.last(days, runtime.clock.now(), zone)


def _charts(data: dict, locale: str) -> dict:
    def tr(key: str) -> str:
        return t(f"console.dash.{key}", locale)

    outbox = data["outbox"]
    statuses = sorted({s for _, s, _ in outbox["by_status"]})
    channels = sorted({c for c, _, _ in outbox["by_status"]})
    cell = {(c, s): n for c, s, n in outbox["by_status"]}
    return {
        "chart-channels": charts.pie(data["by_channel"], tr("by_channel")),
        "chart-groups": charts.hbars([[g[0], g[2]] for g in data["by_group"]], tr("members")),
        "chart-members": charts.lines(
            data["labels"], {tr("joins"): data["joins"], tr("leaves"): data["leaves"]}
        ),
        "chart-messages": charts.lines(
            data["labels"],
            {tr("inbound"): data["inbound"], tr("outbound"): data["outbound"]},
            area=True,
        ),
        "chart-tags": charts.hbars(data["top_tags"], tr("customers")),
        "chart-lifecycle": charts.pie(
            [[label("console.lifecycle", k, locale), n] for k, n in data["lifecycle"]],
            tr("lifecycle"),
        ),
        "chart-tier": charts.pie(data["tier"], tr("tier")),
        "chart-rfm": charts.hbars(data["rfm"], tr("customers")),
        "chart-outbox": charts.bars(
            channels,
            {
                label("console.outbox_status", s, locale): [cell.get((c, s), 0) for c in channels]
                for s in statuses
            },
            stack=True,
        ),
        "chart-lateness": charts.bars(
            [t(f"console.dash.late.{b}", locale) for b, _ in outbox["lateness"]],
            {tr("sent"): [n for _, n in outbox["lateness"]]},
        ),
    }


@endpoint
async def dashboard(request: Request) -> Response:
    user = await manager_of(request)
    period = period_of(request)
    runtime = runtime_of(request)

    def load() -> dict:
        with runtime.db.transaction() as session:
            return queries.dashboard(session, runtime.config, period)

    def tile() -> dict:
        with runtime.db.sessions() as session:
            return measures.summary(session, runtime.config, runtime.clock.now())

    data = await run(request, load)
    measured = await run(request, tile)
    locale = locale_of(request, user)
    return page(
        request,
        "console/dashboard.html",
        user,
        section="dashboard",
        data=data,
        period=period,
        periods=queries.PERIODS,
        charts=_charts(data, locale),
        measured=measured,
    )
