"""The console's Measures page: loyalty figures, monthly cohorts, the AARRR chain and the
satisfaction surveys, for a chosen period and an optional segment.

Every number comes from bot/measures/loyalty.py and bot/measures/surveys.py — the
functions ``siyu measures loyalty|cohorts|aarrr|survey`` print — so the page and the CLI
always agree. For the whole community the page reads the loyalty figures, cohorts and
AARRR chain through bot/measures/rollup.py: the period's finished days counted once
(nightly), plus today's delta.
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from starlette.requests import Request
from starlette.responses import Response

from bot.core.i18n import t
from bot.customers.segment_language import SegmentError
from bot.measures import loyalty, rollup, surveys
from bot.measures.periods import Period, parse_period
from bot.web.console import charts, queries
from bot.web.console.common import endpoint, locale_of, manager_of, page, run, runtime_of
from storage.segments import list_segments

__all__ = ["MAX_SEGMENT", "PERIODS", "measures_page", "period_of", "summary"]

#: the periods the page covers, in days
PERIODS = (7, 30, 90, 365)
#: the longest segment expression the page takes (as the segment editor)
MAX_SEGMENT = 2000
#: months after the first order the cohort table shows
COHORT_MONTHS = 12


def period_of(request: Request, default: int = 30) -> Period:
    """The ``?days=7|30|90|365`` period (``default`` otherwise): the last N local days
    including today."""
    runtime = runtime_of(request)
    raw = request.query_params.get("days", "")
    days = int(raw) if raw.isdigit() and int(raw) in PERIODS else default
    return parse_period(
        None,
        None,
        zone=runtime.config.general.timezone,
        now=runtime.clock.now(),
        default_days=days,
    )


def _month_index(label: str) -> int:
    year, month = label.split("-")
    return int(year) * 12 + int(month) - 1


def _cohort_chart(report: loyalty.CohortReport, now: datetime, zone: str, locale: str) -> dict:
    """The cohort table as a heatmap: one row per first-order month, one column per month
    after it; months still to come are left empty rather than shown as 0%."""
    local = now.astimezone(ZoneInfo(zone))
    current = local.year * 12 + local.month - 1
    columns = [t("console.measures.month_n", locale, n=k) for k in range(report.months + 1)]
    rows, cells = [], []
    for y, row in enumerate(report.cohorts):
        rows.append(f"{row['cohort']} ({row['size']})")
        start = _month_index(row["cohort"])
        for k, rate in enumerate(row["retention"]):
            if start + k <= current and rate is not None:
                cells.append([k, y, round(rate * 100, 1)])
    return charts.heatmap(columns, rows, cells, t("console.measures.cohorts", locale))


def _survey_view(result: surveys.SurveyResults) -> dict:
    """The figure each survey is read by (NPS in points, CSAT as a percentage)."""
    key = "nps" if result.kind == "nps" else "csat"

    def score(figures: dict) -> float | None:
        value = figures.get(key)
        if value is None:
            return None
        return value if key == "nps" else round(value * 100, 1)

    groups = {
        "by_channel": result.by_channel,
        "by_staff": result.by_staff,
        "by_month": result.by_month,
    }
    return {
        "name": result.survey,
        "kind": result.kind,
        "overall": result.overall,
        "score": score(result.overall),
        "flagged": result.flagged,
        "groups": {
            name: [
                {"label": label, "responses": f["responses"], "average": f["average"],
                 "score": score(f)}
                for label, f in rows.items()
            ]
            for name, rows in groups.items()
        },
    }  # fmt: skip


def _survey_chart(view: dict, locale: str) -> dict:
    months = view["groups"]["by_month"]
    name = t(f"console.measures.score.{view['kind']}", locale)
    return charts.bars([m["label"] for m in months], {name: [m["score"] for m in months]})


def summary(session, config, now: datetime) -> dict:
    """The dashboard tile: repeat-purchase rate and NPS of the last 30 days (counted once
    per few minutes, as the dashboard's other whole-table figures)."""
    period = parse_period(None, None, zone=config.general.timezone, now=now, default_days=30)

    def compute() -> dict:
        report = rollup.loyalty(session, period, now=now)
        nps = None
        names = [d.name for d in config.surveys.definitions if d.kind == "nps"]
        if names:
            result = surveys.results(session, names[0], period, config=config, now=now)
            nps = result.overall["nps"]
        return {"repeat_rate": report.repeat_rate, "nps": nps}

    return queries.snapshot(session, "measures:tile", now, compute)[1]


def load_measures(session, config, period: Period, now: datetime, segment: str | None) -> dict:
    """Every report the page shows, from bot/measures (what the bench times): for the whole
    community from the rollup (finished days counted once, plus today), for a segment
    directly, its members looked up once."""
    members = loyalty.segment_members(session, config, segment, now)  # None: everyone
    if segment:
        reports = loyalty.segment_reports(
            session, period, segment=segment, members=members, months=COHORT_MONTHS
        )
    else:
        reports = {
            "loyalty": rollup.loyalty(session, period, now=now),
            "cohorts": rollup.cohorts(session, period, now=now, months=COHORT_MONTHS),
            "aarrr": rollup.aarrr(session, period, now=now),
        }
    return {
        **reports,
        "surveys": [
            surveys.results(
                session, d.name, period, config=config, now=now, segment=segment, members=members
            )
            for d in config.surveys.definitions
        ],
    }


@endpoint
async def measures_page(request: Request) -> Response:
    user = await manager_of(request)
    runtime = runtime_of(request)
    locale = locale_of(request, user)
    period = period_of(request)
    segment = request.query_params.get("segment", "").strip()
    config, now = runtime.config, runtime.clock.now()
    error = None
    if len(segment) > MAX_SEGMENT:
        error, segment = t("console.measures.segment_too_long", locale, limit=MAX_SEGMENT), ""

    def saved() -> list[str]:
        with runtime.db.sessions() as session:
            return [s.name for s in list_segments(session)]

    def load() -> tuple[datetime, dict]:
        # a transaction: the first visit of a day without the nightly count stores it
        with runtime.db.transaction() as session:
            if segment:
                return now, load_measures(session, config, period, now, segment)
            # The whole community's reports scan every order: counted once per few minutes.
            return queries.snapshot(
                session,
                f"measures:{period.days}",
                now,
                lambda: load_measures(session, config, period, now, None),
            )

    segments = await run(request, saved)
    data, counted_at = None, now
    if error is None:
        try:
            counted_at, data = await run(request, load)
        except SegmentError as exc:
            error = exc.text(locale)
    chart_options: dict = {}
    views: list[dict] = []
    if data is not None:
        steps = data["aarrr"].steps
        chart_options["chart-aarrr"] = charts.funnel(
            [
                [t(f"console.measures.aarrr_step.{s['step']}", locale), s["customers"]]
                for s in steps
            ],
            t("console.measures.aarrr", locale),
        )
        chart_options["chart-cohorts"] = _cohort_chart(
            data["cohorts"], now, config.general.timezone, locale
        )
        stages = data["loyalty"].stages
        chart_options["chart-stages"] = charts.pie(
            [[t(f"console.lifecycle.{k}", locale), n] for k, n in stages.items()],
            t("console.measures.stages", locale),
        )
        views = [_survey_view(r) for r in data["surveys"]]
        for i, view in enumerate(views):
            chart_options[f"chart-survey-{i}"] = _survey_chart(view, locale)
    return page(
        request,
        "console/measures.html",
        user,
        status=400 if error else 200,
        section="measures",
        period=period,
        days=period.days,
        periods=PERIODS,
        segment=segment,
        segments=segments,
        error=error,
        data=data,
        counted_at=counted_at,
        minutes=int(queries.SNAPSHOT_SECONDS // 60),
        surveys=views,
        charts=chart_options,
    )
