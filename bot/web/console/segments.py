"""Saved segments in the console: counts and their trend, the editor with a live count and
the error at its position, save and delete (``bot.customers.segments``, as ``/segment`` does),
and the export of a segment's members to CSV.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import timedelta
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

from sqlalchemy import select
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from bot.app.services import Services
from bot.core.csv_export import csv_writer
from bot.core.i18n import t
from bot.customers.segment_language import SegmentError
from bot.customers.segments import compile_segment, count_segment, save_segment
from bot.web.console import charts, queries
from bot.web.console.common import (
    back,
    endpoint,
    form_of,
    locale_of,
    manager_of,
    page,
    run,
    runtime_of,
)
from storage.console import SegmentCount
from storage.models import Customer, Identity
from storage.segments import SavedSegment, delete_segment, list_segments

__all__ = ["delete", "export", "live_count", "load_segments", "save", "segment_list"]

MAX_EXPRESSION = 2000
#: saved segments counted on one page load (each is one COUNT query)
MAX_LISTED = 50
TREND_DAYS = 30
#: a saved segment counted this recently (and not changed since) shows that count
FRESH_MINUTES = 15
EXPORT_BATCH = 2000


@endpoint
async def live_count(request: Request) -> Response:
    """``{count, label}`` for a segment expression, or ``{error, position}`` (0-based)."""
    user = await manager_of(request, api=True)
    data = await form_of(request, user)
    locale = locale_of(request, user)
    expression = data.get("expression", "")
    if len(expression) > MAX_EXPRESSION:
        return JSONResponse(
            {
                "error": t("console.seg.too_long", locale, limit=MAX_EXPRESSION),
                "position": MAX_EXPRESSION,
                "position_label": "",
            }
        )
    if not expression.strip():
        return JSONResponse({"count": None, "label": t("console.seg.type_one", locale)})
    runtime = runtime_of(request)

    def count() -> int:
        with runtime.db.sessions() as session:
            return count_segment(
                session, expression, config=runtime.config, now=runtime.clock.now()
            )

    try:
        n = await run(request, count)
    except SegmentError as exc:
        return JSONResponse(
            {
                "error": exc.message,
                "position": exc.position,
                "position_label": t("console.seg.at_position", locale, position=exc.position + 1),
            }
        )
    return JSONResponse({"count": n, "label": t("console.seg.count", locale, count=n)})


def load_segments(runtime: Services) -> dict:
    """Saved segments with today's counts (recorded for the trend) and the trend chart."""
    config, now = runtime.config, runtime.clock.now()
    zone = ZoneInfo(config.general.timezone)
    today = now.astimezone(zone).date()
    with runtime.db.transaction() as session:
        saved = list_segments(session)[:MAX_LISTED]
        recent = {
            c.segment_id: c
            for c in session.scalars(
                select(SegmentCount).where(
                    SegmentCount.segment_id.in_([s.id for s in saved]),
                    SegmentCount.day == today.isoformat(),
                    SegmentCount.counted_at >= now - timedelta(minutes=FRESH_MINUTES),
                )
            )
        }
        rows: list[dict[str, Any]] = []
        for segment in saved:
            fresh = recent.get(segment.id)
            error = None
            if fresh is not None and fresh.counted_at >= segment.updated_at:
                n = fresh.members  # counted a moment ago (and unchanged since): not again
            else:
                try:
                    n = count_segment(session, segment.expression, config=config, now=now)
                except SegmentError as exc:  # a saved segment it refers to was deleted
                    n, error = None, str(exc)
                if n is not None:
                    session.merge(
                        SegmentCount(
                            segment_id=segment.id, day=today.isoformat(), members=n, counted_at=now
                        )
                    )
            rows.append(
                {
                    "id": segment.id,
                    "name": segment.name,
                    "expression": segment.expression,
                    "count": n,
                    "error": error,
                    "updated_at": segment.updated_at,
                    "created_by": segment.created_by,
                }
            )
        session.flush()
        since = (today - timedelta(days=TREND_DAYS - 1)).isoformat()
        trend = queries.segment_trend(session, [r["id"] for r in rows], since)
    labels = [(today - timedelta(days=TREND_DAYS - 1 - i)).isoformat() for i in range(TREND_DAYS)]
    series: dict[str, list[Any]] = {}
    for r in rows:
        by_day = dict(trend.get(r["id"], []))
        series[r["name"]] = [by_day.get(day) for day in labels]
    return {"rows": rows, "trend": charts.lines(labels, series)}


@endpoint
async def segment_list(request: Request) -> Response:
    user = await manager_of(request)
    data = await run(request, load_segments, runtime_of(request))
    return page(
        request,
        "console/segments.html",
        user,
        section="segments",
        rows=data["rows"],
        charts={"chart-trend": data["trend"]},
        expression=request.query_params.get("expression", "")[:MAX_EXPRESSION],
    )


@endpoint
async def save(request: Request) -> Response:
    user = await manager_of(request)
    data = await form_of(request, user)
    locale = locale_of(request, user)
    name, expression = data.get("name", "").strip(), data.get("expression", "").strip()
    runtime = runtime_of(request)

    def store() -> int:
        with runtime.db.transaction() as session:
            save_segment(
                session,
                name,
                expression,
                config=runtime.config,
                now=runtime.clock.now(),
                created_by=f"staff:{user.username}",
            )
            return count_segment(
                session, expression, config=runtime.config, now=runtime.clock.now()
            )

    try:
        n = await run(request, store)
    except SegmentError as exc:
        return back(
            request,
            "/console/segments?expression=" + quote(expression[:MAX_EXPRESSION]),
            t("console.segment_error", locale, error=exc.message, position=exc.position + 1),
            error=True,
        )
    return back(request, "/console/segments", t("console.seg.saved", locale, name=name, count=n))


@endpoint
async def delete(request: Request) -> Response:
    user = await manager_of(request)
    data = await form_of(request, user)
    locale = locale_of(request, user)
    name = data.get("name", "")
    runtime = runtime_of(request)

    def remove() -> bool:
        with runtime.db.transaction() as session:
            return delete_segment(session, name)

    if not await run(request, remove):
        return back(
            request, "/console/segments", t("console.seg.no_such", locale, name=name), error=True
        )
    return back(request, "/console/segments", t("console.seg.deleted", locale, name=name))


def _rows(runtime, expression: str, locale: str) -> Iterator[str]:
    """The CSV, a batch of members at a time (keyset order, constant memory)."""
    out = io.StringIO()
    writer = csv_writer(out)
    writer.writerow([t(f"console.export.{k}", locale) for k in
                     ("id", "name", "phone", "city", "locale", "identities", "last_active")])  # fmt: skip
    yield "\ufeff" + out.getvalue()
    config, now = runtime.config, runtime.clock.now()
    last = 0
    with runtime.db.sessions() as session:
        compiled = compile_segment(expression, config=config, now=now, session=session)
        while True:
            batch = session.scalars(
                select(Customer)
                .where(Customer.id.in_(compiled.select_ids().where(Customer.id > last)))
                .order_by(Customer.id)
                .limit(EXPORT_BATCH)
            ).all()
            if not batch:
                return
            ids: dict[int, Any] = {}
            for cid, channel, external in session.execute(
                select(Identity.customer_id, Identity.channel, Identity.external_id).where(
                    Identity.customer_id.in_([c.id for c in batch])
                )
            ):
                ids.setdefault(cid, []).append(f"{channel}:{external}")
            out.seek(0)
            out.truncate()
            for c in batch:
                writer.writerow(
                    ["" if v is None else v for v in (
                        c.id, c.display_name, c.phone, c.city, c.locale,
                        " ".join(ids.get(c.id, [])),
                        c.last_active_at.isoformat() if c.last_active_at else "",
                    )]
                )  # fmt: skip
            yield out.getvalue()
            last = batch[-1].id
            session.expunge_all()


@endpoint
async def export(request: Request) -> Response:
    """The members of a saved segment as CSV (UTF-8 with BOM, for spreadsheets)."""
    user = await manager_of(request)
    name = request.path_params["name"]
    runtime = runtime_of(request)
    locale = locale_of(request, user)

    def find() -> str | None:
        with runtime.db.sessions() as session:
            return session.scalar(select(SavedSegment.expression).where(SavedSegment.name == name))

    expression = await run(request, find)
    if expression is None:
        return page(request, "console/not_found.html", user, status=404, section="segments")
    filename = quote(f"segment-{name}.csv")
    return StreamingResponse(
        _rows(runtime, expression, locale),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f"attachment; filename*=UTF-8''{filename}"},
    )
