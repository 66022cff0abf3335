"""The console's Groups page: scheduled group posts (SOP plans) with their posts and clicks
per group, FAQ entries with their hits, the groups with their moderation rules, and the
latest moderation actions.

Pause, resume and delete call bot/groups/sop.py and bot/groups/faq.py — the functions of
the ``/sop`` and ``/faq`` chat commands and of ``siyu sop|faq``; a group's rules are
bot/groups/moderation.py's, as ``/mod`` shows and sets them; and the log is
:func:`~bot.groups.moderation.recent_actions`, as ``/mod log`` and ``siyu mod log``.
"""

from __future__ import annotations

from zoneinfo import ZoneInfo

from starlette.requests import Request
from starlette.responses import Response

from bot.conversations import handoff
from bot.core.i18n import t
from bot.groups import faq, moderation, sop
from bot.groups.errors import GroupsError
from bot.groups.schedule import parse_schedule
from bot.web.console.campaigns import content_templates
from bot.web.console.common import (
    back,
    endpoint,
    form_of,
    int_param,
    locale_of,
    manager_of,
    page,
    run,
    runtime_of,
)
from storage.groups import FaqEntry, SopPlan
from storage.models import Group

__all__ = [
    "FAQ_FIELDS",
    "MOD_FIELDS",
    "PLAN_FIELDS",
    "entry_form",
    "faq_delete",
    "groups_page",
    "load_groups",
    "plan_form",
    "render_groups",
    "rules_form",
    "sop_action",
]

HERE = "/console/groups"
#: the plan form's fields (bot/groups/sop.py's keys besides name, when and text)
PLAN_FIELDS = ("name", "when", "to", "channel", "text", "template", "coupon", "button", "link",
               "from", "until")  # fmt: skip
#: the FAQ form's fields (bot/groups/faq.py's keys and the two answers)
FAQ_FIELDS = ("question", "keywords", "answer_zh", "answer_en", "template", "where", "groups",
              "cooldown")  # fmt: skip
#: a group's moderation form: the fields of bot/groups/moderation.py's ``Settings``
MOD_FIELDS = ("links_days", "flood_count", "flood_seconds", "flood_mute_minutes",
              "captcha_minutes", "banned_words", "warn_limit", "warn_mute_minutes")  # fmt: skip
#: the moderation actions the page lists (newest first)
LOG_LIMIT = 50
#: the groups the page lists with their rules (by title; a search narrows them)
GROUP_LIMIT = 200
#: the longest group search the page takes (as a group's title)
MAX_GROUP_SEARCH = 200
#: plan action → the status it sets (``delete`` removes the plan)
SOP_ACTIONS = {"pause": "paused", "resume": "active", "delete": None}
#: a plan name is at most this long (as the ``sop_plans.name`` column)
MAX_PLAN_NAME = 64


def _next_post(plan, zone: ZoneInfo, now) -> str:
    if plan.status != "active":
        return "-"
    try:
        nxt = parse_schedule(plan.schedule).next_after(now, zone)
    except GroupsError:
        return "-"
    return nxt.astimezone(zone).strftime("%Y-%m-%d %H:%M") if nxt else "-"


def plan_form(plan: SopPlan) -> dict[str, str]:
    """A stored plan as the form's values (for editing)."""
    return {
        "editing": plan.name,
        "name": plan.name,
        "when": plan.schedule,
        "to": ",".join(plan.targets),
        "channel": plan.channel or "",
        "text": plan.text or "",
        "template": plan.template or "",
        "coupon": plan.coupon or "",
        "button": plan.button or "",
        "link": plan.link or "",
        "from": plan.starts_on.isoformat() if plan.starts_on else "",
        "until": plan.ends_on.isoformat() if plan.ends_on else "",
    }


def entry_form(entry: FaqEntry) -> dict[str, str]:
    """A stored FAQ entry as the form's values (for editing)."""
    where = ",".join(entry.chats) if entry.scope == "chats" else entry.scope
    return {
        "editing": str(entry.id),
        "question": entry.question,
        "keywords": ",".join(entry.keywords),
        "answer_zh": entry.answer_zh or "",
        "answer_en": entry.answer_en or "",
        "template": entry.template or "",
        "where": where,
        "groups": entry.group_mode,
        "cooldown": str(entry.cooldown_seconds),
    }


def rules_form(settings: moderation.Settings) -> dict[str, str]:
    """A group's rules as the moderation form's values (banned words one per line)."""
    values = settings.as_dict()
    form = {k: str(values[k]) for k in MOD_FIELDS if k != "banned_words"}
    return form | {"banned_words": "\n".join(settings.banned_words)}


def group_view(group: Group) -> dict:
    """What the page shows of a group besides its rules."""
    return {
        "id": group.id,
        "channel": group.channel,
        "external_id": group.external_id,
        "title": group.title or "",
        "active": group.active,
        "acts": group.channel in moderation.ACTS_ON,
    }


def load_groups(session, zone: ZoneInfo, now, search: str = "") -> dict:
    """The plans with their report per group, the FAQ entries, the groups (those matching
    ``search``) with their moderation rules, and the moderation log."""
    plans = []
    for plan in sop.list_plans(session):
        report = sop.plan_report(session, plan)
        plans.append(
            {
                "name": plan.name,
                "schedule": plan.schedule,
                "targets": list(plan.targets),
                "status": plan.status,
                "next": _next_post(plan, zone, now),
                "starts_on": plan.starts_on,
                "ends_on": plan.ends_on,
                "groups": report,
                "posts": sum(g["posts"] for g in report),
                "clicks": sum(g["button_clicks"] + g["link_clicks"] for g in report),
            }
        )
    entries = [
        {
            "id": e.id,
            "question": e.question,
            "keywords": list(e.keywords),
            "where": ",".join(e.chats) if e.scope == "chats" else e.scope,
            "mode": e.group_mode,
            "hits": e.hits,
            "last_hit_at": e.last_hit_at,
        }
        for e in faq.list_entries(session)
    ]
    log = [
        {
            "at": a.created_at,
            "group": f"{g.channel}:{g.external_id}",
            "title": g.title or "",
            "user": f"{a.user_name or '-'} ({a.user_id})",
            "action": a.action,
            "reason": a.reason,
            "detail": a.detail or "",
            "actor": a.actor,
            "status": status or "-",
        }
        for a, g, status in moderation.recent_actions(session, None, limit=LOG_LIMIT)
    ]
    rules, matching = moderation.group_rules(session, search=search, limit=GROUP_LIMIT)
    groups = [
        group_view(g)
        | {
            "rules": settings.as_dict(),
            "updated_by": row.updated_by if row else "",
            "updated_at": row.updated_at if row else None,
        }
        for g, settings, row in rules
    ]
    return {"plans": plans, "entries": entries, "log": log, "groups": groups,
            "group_count": matching, "group_search": search}  # fmt: skip


def _editing(session, request: Request) -> dict:
    """The forms filled in with the plan of ``?plan=NAME`` or the entry of ``?faq=ID``."""
    forms: dict = {}
    name = request.query_params.get("plan", "")
    if name and len(name) <= MAX_PLAN_NAME:
        plan = sop.find_plan(session, name)
        if plan is not None:
            forms["plan"] = {"values": plan_form(plan), "error": None}
    raw = request.query_params.get("faq", "")
    if raw.isdigit() and len(raw) < 12:
        entry = session.get(FaqEntry, int(raw))
        if entry is not None:
            forms["faq"] = {"values": entry_form(entry), "error": None}
    raw = request.query_params.get("mod", "")
    if raw.isdigit() and len(raw) < 18:
        group = session.get(Group, int(raw))
        if group is not None:
            settings = moderation.settings_of(session, group.id)
            forms["mod"] = {"values": rules_form(settings), "error": None,
                            "group": group_view(group)}  # fmt: skip
    return forms


async def render_groups(request: Request, *, status: int = 200, forms: dict | None = None):
    """The Groups page; ``forms`` (``plan``/``faq``/``mod`` → values and error) fill in its
    forms, otherwise ``?plan=NAME`` / ``?faq=ID`` / ``?mod=GROUP_ID`` open one for editing
    (``?q=`` narrows the groups listed)."""
    user = await manager_of(request)
    runtime = runtime_of(request)
    zone = ZoneInfo(runtime.config.general.timezone)
    now = runtime.clock.now()
    search = request.query_params.get("q", "").strip()[:MAX_GROUP_SEARCH]

    def load() -> dict:
        with runtime.db.sessions() as session:
            data = load_groups(session, zone, now, search)
            data["forms"] = forms if forms is not None else _editing(session, request)
            return data

    data = await run(request, load)
    blank: dict = {"values": {}, "error": None}
    data["plan"] = data["forms"].get("plan", blank)
    data["faq_form"] = data["forms"].get("faq", blank)
    data["mod_form"] = data["forms"].get("mod")
    data["template_options"] = [("", "-"), *((n, n) for n in content_templates(request))]
    return page(request, "console/groups.html", user, status=status, section="groups", **data)


@endpoint
async def groups_page(request: Request) -> Response:
    return await render_groups(request)


@endpoint
async def sop_action(request: Request) -> Response:
    user = await manager_of(request)
    await form_of(request, user)
    locale = locale_of(request, user)
    runtime = runtime_of(request)
    name, action = request.path_params["name"], request.path_params["action"]
    if action not in SOP_ACTIONS:
        return Response(status_code=404)
    if len(name) > MAX_PLAN_NAME:
        return back(request, HERE, t("groups.sop.error.no_plan", locale, name=name[:MAX_PLAN_NAME] + "…"), error=True)  # fmt: skip

    def change() -> str:
        now = runtime.clock.now()
        with runtime.db.transaction() as session:
            if action == "delete":
                sop.delete_plan(session, name)
                done = t("groups.sop.deleted", locale, name=name)
            else:
                plan = sop.set_status(session, name, SOP_ACTIONS[action] or "", now)
                done = t(f"groups.sop.{action}d", locale, name=plan.name)
            handoff.audit(session, user.username, f"sop_{action}", now, plan=name)
            return done

    try:
        done = await run(request, change)
    except GroupsError as exc:
        return back(request, HERE, exc.text(locale), error=True)
    return back(request, HERE, done)


@endpoint
async def faq_delete(request: Request) -> Response:
    user = await manager_of(request)
    await form_of(request, user)
    locale = locale_of(request, user)
    runtime = runtime_of(request)
    entry_id = int_param(request, "entry_id")

    def remove() -> str:
        now = runtime.clock.now()
        with runtime.db.transaction() as session:
            entry = faq.delete_entry(session, entry_id)
            handoff.audit(session, user.username, "faq_delete", now, entry=entry_id)
            return t("groups.faq.deleted", locale, id=entry_id, question=entry.question)

    try:
        done = await run(request, remove)
    except GroupsError as exc:
        return back(request, HERE, exc.text(locale), error=True)
    return back(request, HERE, done)
