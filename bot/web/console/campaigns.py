"""Campaigns in the console: the list, the create form (live count and preview), a
campaign's funnel, pilot-vs-holdout verdict and actions (preview, pilot, launch, pause).

Creating goes through ``parse_spec`` and ``create_campaign``, pilot and launch through
``manage.request`` (the scheduler runs the push, as for ``/campaign launch``), pause through
``manage.pause`` — the same functions the chat command and the CLI call.
"""

from __future__ import annotations

import math
import shlex
from collections import defaultdict
from zoneinfo import ZoneInfo

from sqlalchemy import select
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bot.app.services import Services
from bot.core.i18n import LOCALES, t
from bot.core.templating import TemplateRenderError
from bot.customers.segment_language import SegmentError
from bot.marketing.campaigns import manage
from bot.marketing.campaigns.funnel import FunnelRow, funnel
from bot.marketing.campaigns.spec import KEYS, SpecError, parse_spec
from bot.marketing.campaigns.status import LAUNCHABLE
from bot.web.console import charts, queries
from bot.web.console.common import (
    Refused,
    back,
    endpoint,
    finished,
    form_of,
    int_param,
    label,
    locale_of,
    manager_of,
    page,
    render_partial,
    run,
    runtime_of,
    services_of,
)
from storage.campaigns import Campaign, Scenario
from storage.coupons import CouponDefinition

__all__ = [
    "act",
    "campaign_list",
    "create",
    "detail",
    "detail_data",
    "edit_form",
    "live_preview",
    "load_campaign",
    "new_form",
    "update",
]

#: the funnel steps drawn, in order
FUNNEL_STEPS = ("targeted", "sent", "delivered", "clicked", "redeemed")
#: message templates that are replies or notices, not campaign content
_NOT_CONTENT = (
    "campaign_", "canned_", "consent_", "customers_", "handoff_", "help", "manage_",
    "not_understood", "profile_", "redeem_", "relay_", "rule_", "scenario_usage",
    "segment_", "unknown_command", "flow_resume",
)  # fmt: skip
ACTIONS = ("pilot", "launch", "pause")
#: form fields that become ``key=value`` words of the campaign definition
_FIELDS = ("segment", "template", "text", "coupon", "pilot", "holdout", "hours", "at",
           "buttons", "variants", "priority", "weight")  # fmt: skip
assert set(_FIELDS) <= set(KEYS)


def content_templates(request: Request) -> list[str]:
    """Message templates a campaign can send (both locales exist or fall back)."""
    directory = runtime_of(request).renderer.directory
    names = {p.name.split(".")[0] for p in directory.glob("*.zh-CN.j2")}
    return sorted(n for n in names if not n.startswith(_NOT_CONTENT))


def spec_text(data: dict[str, str]) -> str:
    """The console form as a campaign definition (``NAME key=value ...``)."""
    words = [data.get("name", "").strip() or "-"]
    for key in _FIELDS:
        value = data.get(key, "").strip()
        if value:
            words.append(f"{key}={shlex.quote(value)}")
    return " ".join(words)


# -- list and create -----------------------------------------------------------------------


@endpoint
async def campaign_list(request: Request) -> Response:
    user = await manager_of(request)
    runtime = runtime_of(request)

    def load() -> tuple[list[dict], list]:
        with runtime.db.sessions() as session:
            scenarios = session.scalars(select(Scenario).order_by(Scenario.name)).all()
            session.expunge_all()
            return queries.campaign_list(session), list(scenarios)

    rows, scenarios = await run(request, load)
    return page(
        request, "console/campaigns.html", user, section="campaigns", rows=rows, scenarios=scenarios
    )


def _form_choices(request: Request) -> dict:
    runtime = runtime_of(request)

    def load() -> list[tuple[str, str]]:
        with runtime.db.sessions() as session:
            return [
                (d.name, d.title)
                for d in session.scalars(select(CouponDefinition).order_by(CouponDefinition.name))
            ]

    defaults = runtime.config.campaigns
    return {
        "templates": content_templates(request),
        "coupon_loader": load,
        "defaults": {
            "pilot": f"{defaults.pilot_share:.0%}",
            "holdout": f"{defaults.holdout_share:.0%}",
            "hours": f"{defaults.pilot_hours:g}",
            "priority": str(defaults.priority),
            "weight": "1",
        },
    }


async def _new_page(
    request: Request,
    user,
    data: dict,
    error: str | None = None,
    status=200,
    editing: int | None = None,
):
    choices = _form_choices(request)
    coupons = await run(request, choices.pop("coupon_loader"))
    return page(
        request,
        "console/campaign_new.html",
        user,
        status=status,
        section="campaigns",
        form=defaultdict(str, data),
        editing=editing,
        error=error,
        coupons=coupons,
        **choices,
    )


@endpoint
async def new_form(request: Request) -> Response:
    user = await manager_of(request)
    return await _new_page(request, user, {})


def _problem(exc: Exception, locale: str) -> str:
    """A refused definition's problem in the manager's language."""
    if isinstance(exc, SegmentError):
        return t("console.segment_error", locale, error=exc.line(locale), position=exc.position + 1)
    if isinstance(exc, (SpecError, manage.CampaignError)):
        return exc.text(locale)
    return str(exc)


def _seen_version(data: dict[str, str]) -> int | None:
    """The campaign version the form was made from (the console's forms carry it)."""
    raw = data.get("version", "")
    return int(raw) if raw.isdigit() and len(raw) < 10 else None


@endpoint
async def create(request: Request) -> Response:
    user = await manager_of(request)
    data = await form_of(request, user)
    runtime = runtime_of(request)
    locale = locale_of(request, user)

    def store() -> int:
        spec = parse_spec(spec_text(data), runtime.config)
        with runtime.db.transaction() as session:
            campaign = manage.create_campaign(
                session,
                spec,
                config=runtime.config,
                renderer=runtime.renderer,
                now=runtime.clock.now(),
                created_by=f"staff:{user.username}",
            )
            return campaign.id

    try:
        campaign_id = await run(request, store)
    except (SpecError, SegmentError, manage.CampaignError) as exc:
        return await _new_page(request, user, data, _problem(exc, locale), status=400)
    return back(request, f"/console/campaigns/{campaign_id}", t("console.camp.created", locale))


def form_of_campaign(campaign: Campaign) -> dict[str, str]:
    """A stored campaign as the console form's fields (to edit a draft)."""
    variants = (campaign.variants or {}).get("items", [])
    data = {"name": campaign.name, "segment": campaign.segment, "coupon": campaign.coupon or ""}
    if len(variants) == 1 and variants[0].get("name") == "main":
        data["template"] = variants[0].get("template", "")
        data["text"] = variants[0].get("text", "")
    else:
        data["variants"] = ",".join(
            f"{v['name']}:{v.get('template', '')}:{v.get('weight', 1):g}" for v in variants
        )
    buttons = campaign.buttons or {}
    data["buttons"] = ";".join(f"{label}={action}" for label, action in buttons.get("items", []))
    if buttons.get("local_time"):
        data["at"] = buttons["local_time"][:5]
    elif campaign.send_at is not None:
        data["at"] = campaign.send_at.isoformat()
    data["pilot"] = f"{campaign.pilot_share * 100:g}%"
    data["holdout"] = f"{campaign.holdout_share * 100:g}%"
    data["hours"] = f"{campaign.pilot_hours:g}"
    data["priority"] = str(campaign.priority)
    data["weight"] = str(campaign.weight)
    data["version"] = str(campaign.version)
    return data


@endpoint
async def edit_form(request: Request) -> Response:
    user = await manager_of(request)
    campaign_id = int_param(request, "campaign_id")
    runtime = runtime_of(request)

    def load() -> dict | None:
        with runtime.db.sessions() as session:
            campaign = session.get(Campaign, campaign_id)
            return form_of_campaign(campaign) if campaign is not None else None

    data = await run(request, load)
    if data is None:
        return page(request, "console/not_found.html", user, status=404, section="campaigns")
    return await _new_page(request, user, data, editing=campaign_id)


@endpoint
async def update(request: Request) -> Response:
    """Save the edited definition of a draft (``manage.update_draft``)."""
    user = await manager_of(request)
    campaign_id = int_param(request, "campaign_id")
    data = await form_of(request, user)
    runtime = runtime_of(request)
    locale = locale_of(request, user)

    def store() -> None:
        with runtime.db.transaction() as session:
            campaign = session.get(Campaign, campaign_id)
            if campaign is None:
                raise manage.CampaignError(t("console.camp.none", locale))
            spec = parse_spec(spec_text(data | {"name": campaign.name}), runtime.config)
            seen = _seen_version(data)
            if seen is not None:
                manage.check_version(session, campaign_id, seen)
            manage.update_draft(
                session, campaign_id, spec, config=runtime.config, renderer=runtime.renderer,
                now=runtime.clock.now(),
            )  # fmt: skip

    try:
        await run(request, store)
    except (SpecError, SegmentError, manage.CampaignError) as exc:
        return await _new_page(
            request, user, data, _problem(exc, locale), status=400, editing=campaign_id
        )
    return back(request, f"/console/campaigns/{campaign_id}", t("console.camp.updated", locale))


@endpoint
async def live_preview(request: Request) -> Response:
    """Three real sample customers rendered in both locales for the form as it stands."""
    user = await manager_of(request, api=True)
    data = await form_of(request, user)
    runtime = runtime_of(request)
    locale = locale_of(request, user)

    if not data.get("segment", "").strip():
        return JSONResponse({"error": t("console.camp.need_segment", locale)})
    if not any(data.get(k, "").strip() for k in ("template", "text", "variants")):
        return JSONResponse({"error": t("console.camp.need_content", locale)})

    def render() -> dict:
        spec = parse_spec(spec_text(data | {"name": data.get("name") or "preview"}), runtime.config)
        now = runtime.clock.now()
        draft = manage.draft_from_spec(spec, config=runtime.config, now=now)
        with runtime.db.sessions() as session:
            result = manage.preview(
                session,
                draft,
                config=runtime.config,
                renderer=runtime.renderer,
                now=now,
                locales=LOCALES,
            )
        return {
            "audience": result.audience,
            "reachable": result.reachable,
            "samples": [
                {"customer": name, "variant": variant, "locale": lc, "text": text}
                for name, variant, lc, text in result.localized
            ],
        }

    try:
        return JSONResponse(await run(request, render))
    except (SpecError, SegmentError, manage.CampaignError, TemplateRenderError) as exc:
        return JSONResponse({"error": _problem(exc, locale)})


# -- one campaign --------------------------------------------------------------------------


def wilson(successes: int, size: int, z: float = 1.96) -> tuple[float, float]:
    """The 95% Wilson interval of a conversion rate."""
    if size == 0:
        return 0.0, 0.0
    p = successes / size
    denom = 1 + z * z / size
    centre = (p + z * z / (2 * size)) / denom
    half = z * math.sqrt(p * (1 - p) / size + z * z / (4 * size * size)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def uplift_interval(pilot: dict, holdout: dict, z: float = 1.96) -> tuple[float, float, float]:
    """Pilot minus holdout conversion with its 95% (normal) interval."""
    p1, n1 = pilot["conversion"], pilot["size"]
    p2, n2 = holdout["conversion"], holdout["size"]
    diff = p1 - p2
    if not n1 or not n2:
        return diff, 0.0, 0.0
    se = math.sqrt(p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2)
    return diff, diff - z * se, diff + z * se


def _comparison(arm: str, treated: dict, holdout: dict) -> dict:
    """Conversion of the sent arm and the holdout with 95% intervals, and the uplift."""
    return {
        "arm": arm,
        "rows": [
            (arm, treated | {"ci": wilson(treated["converted"], treated["size"])}),
            ("holdout", holdout | {"ci": wilson(holdout["converted"], holdout["size"])}),
        ],
        "uplift": uplift_interval(treated, holdout),
    }


def _series_name(row: FunnelRow, locale: str) -> str:
    if row.variant == "*":
        return t("console.camp.total", locale)
    return f"{row.variant} · {label('console.arm', row.arm, locale)}"


def funnel_chart(rows: list[FunnelRow], locale: str) -> dict:
    """The funnel as grouped bars: one group per step, one bar per variant × arm and total."""
    return charts.bars(
        [t(f"console.step.{s}", locale) for s in FUNNEL_STEPS],
        {_series_name(r, locale): [getattr(r, s) for s in FUNNEL_STEPS] for r in rows},
    )


def load_campaign(runtime: Services, campaign_id: int, with_preview: bool) -> dict | None:
    """Everything the campaign page shows (its funnel, comparison, sends per hour, and
    with ``with_preview`` the preview); None if there is no such campaign."""
    zone = ZoneInfo(runtime.config.general.timezone)
    now = runtime.clock.now()
    with runtime.db.sessions() as session:
        campaign = session.get(Campaign, campaign_id)
        if campaign is None:
            return None

        def numbers() -> tuple:
            comparison = None
            if campaign.pilot_started_at is not None:  # the numbers the verdict is made from
                rates = manage.arm_rates(session, campaign, campaign.pilot_started_at)
                comparison = _comparison("pilot", rates["pilot"], rates["holdout"])
            elif campaign.launched_at is not None:
                rates = queries.treated_vs_holdout(session, campaign, campaign.launched_at)
                comparison = _comparison("treated", rates["treated"], rates["holdout"])
            hourly = queries.sends_per_hour(session, campaign, zone, now)
            return funnel(session, campaign), comparison, hourly

        rows, comparison, hourly = queries.reused_while_costly(
            session, f"campaign:{campaign.id}:{campaign.status}", numbers
        )

        preview = None
        preview_error = None
        if with_preview:
            try:
                preview = manage.preview(
                    session, campaign, config=runtime.config, renderer=runtime.renderer,
                    now=now, locales=LOCALES,
                )  # fmt: skip
            except (TemplateRenderError, SegmentError) as exc:
                preview_error = str(exc)
        session.expunge(campaign)
        return {
            "campaign": campaign,
            "rows": rows,
            "total": rows[-1],
            "comparison": comparison,
            "hourly": hourly,
            "preview": preview,
            "preview_error": preview_error,
        }


def _charts(data: dict, locale: str) -> dict:
    hourly = data["hourly"]
    return {
        "chart-funnel": funnel_chart(data["rows"], locale),
        "chart-hourly": charts.bars(
            [h for h, _ in hourly], {t("console.step.sent", locale): [n for _, n in hourly]}
        ),
    }


def _numbers(total: FunnelRow) -> dict[str, str]:
    return {f"n-{s}": str(getattr(total, s)) for s in (*FUNNEL_STEPS, "queued", "held_out")}


@endpoint
async def detail(request: Request) -> Response:
    user = await manager_of(request)
    campaign_id = int_param(request, "campaign_id")
    data = await run(
        request,
        load_campaign,
        runtime_of(request),
        campaign_id,
        request.query_params.get("preview") == "1",
    )
    if data is None:
        return page(request, "console/not_found.html", user, status=404, section="campaigns")
    locale = locale_of(request, user)
    return page(
        request,
        "console/campaign.html",
        user,
        section="campaigns",
        charts=_charts(data, locale),
        scheduler_on=runtime_of(request).config.scenarios.scheduler,
        can={
            "pilot": data["campaign"].status == "draft",
            "launch": data["campaign"].status in LAUNCHABLE
            and data["campaign"].status not in ("launch_pending", "pilot_pending"),
            "pause": data["campaign"].status in ("piloting", "running"),
            "edit": data["campaign"].status == "draft",
        },
        steps=FUNNEL_STEPS,
        **data,
    )


@endpoint
async def detail_data(request: Request) -> Response:
    """The funnel's live numbers and charts (the page refreshes from this)."""
    user = await manager_of(request, api=True)
    campaign_id = int_param(request, "campaign_id")
    data = await run(request, load_campaign, runtime_of(request), campaign_id, False)
    if data is None:
        return JSONResponse({"error": "no such campaign"}, status_code=404)
    locale = locale_of(request, user)
    return JSONResponse(
        {
            "status": data["campaign"].status,
            "charts": finished(_charts(data, locale), locale),
            "html": {
                "funnel-rows": render_partial(
                    request,
                    "console/_funnel_rows.html",
                    user,
                    rows=data["rows"],
                    steps=FUNNEL_STEPS,
                )
            },
            "numbers": _numbers(data["total"])
            | {"campaign-status": label("console.camp.status", data["campaign"].status, locale)},
        }
    )


@endpoint
async def act(request: Request) -> Response:
    """Pilot or launch (queues the preparation for a worker, as the chat command does) or
    pause."""
    user = await manager_of(request)
    campaign_id = int_param(request, "campaign_id")
    action = request.path_params["action"]
    data = await form_of(request, user)
    if action not in ACTIONS:
        raise Refused(Response(status_code=404))
    runtime = runtime_of(request)
    locale = locale_of(request, user)
    here = f"/console/campaigns/{campaign_id}"

    def requested() -> None:
        with runtime.db.transaction() as session:
            seen = _seen_version(data)
            if seen is not None:  # another manager's pilot, launch or edit wins; not both
                manage.check_version(session, campaign_id, seen)
            campaign = session.get(Campaign, campaign_id)
            if campaign is None:
                raise manage.CampaignError(t("console.camp.none", locale))
            manage.request(
                session,
                campaign,
                action,
                config=runtime.config,
                now=runtime.clock.now(),
                created_by=f"staff:{user.username}",
            )

    try:
        if action == "pause":
            held = await run(request, manage.pause, services_of(request), campaign_id)
            return back(request, here, t("console.camp.paused", locale, held=held))
        await run(request, requested)
        runtime.jobs.wake()  # a process that runs jobs itself (role all) starts at once
    except manage.CampaignError as exc:
        return back(request, here, exc.text(locale), error=True)
    return back(request, here, t(f"console.camp.requested.{action}", locale))
