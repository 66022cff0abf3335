"""Scheduled group posts (社群 SOP): post plans, and posting their due slots.

A plan says which groups (``to=``: ``all``, ``title:会员*``, ``tag:周末`` or
``<channel>:<chat id>``, comma-separated; ``channel=`` narrows to one channel), when (a
:mod:`bot.groups.schedule` line in the brand's time zone), what (``| text`` or
``template=NAME``; ``{{ group }}``, ``{{ date }}`` and ``{{ link }}`` may be used; a
``coupon=`` batch adds a button that gives the presser a code; a ``link=`` is tracked per
group), and from when to when (``from=`` / ``until=`` local dates). The chat command
``/sop add|list|pause|resume|del|show|tag`` and ``siyu sop ...`` both call the functions
here.

:func:`run_due` is the scheduler's job (one scheduler across processes). For each active
plan it lists the slots since it last looked; each slot is claimed as one
:class:`~storage.groups.SopRun` (unique per plan and slot), so a second process or a
restart never posts it twice. A slot found later than ``[groups] catch_up_minutes`` is
recorded as missed, not posted. Each group's post is an outbox row (purpose
``group_post``, key plan × slot × group) recorded as a :class:`~storage.groups.GroupPost`:
delivery goes through the adapters' limits (Telegram: 20 a minute per group), a WeCom
customer group's post becomes a group mass-send task its owner confirms (the row shows
``awaiting_confirm`` until then). Official Accounts have no groups: a plan for them is
refused.
"""

from __future__ import annotations

import fnmatch
import logging
import re
import secrets
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import jinja2
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from bot.adapters.base import Button
from bot.app.config import Config
from bot.core.events import ConversationRef
from bot.core.i18n import t
from bot.core.templating import Renderer, TemplateRenderError
from bot.groups.errors import GroupsError, about
from bot.groups.schedule import Schedule, parse_schedule
from bot.groups.spec import split_definition
from bot.outbox import queue as outbox
from storage.db import insert_ignore, rowcount
from storage.groups import GroupPost, GroupTag, SopPlan, SopRun
from storage.models import Group, OutboxMessage

__all__ = [
    "BUTTON_PREFIX",
    "PlanSpec",
    "create_plan",
    "delete_plan",
    "find_plan",
    "link_clicked",
    "list_plans",
    "parse_plan",
    "plan_report",
    "plan_spec",
    "post_clicked",
    "resolve_groups",
    "run_due",
    "runs_of",
    "set_status",
    "tag_group",
    "update_plan",
]

log = logging.getLogger(__name__)

PURPOSE = "group_post"
BUTTON_PREFIX = "sop:"
KEYS = frozenset({"to", "channel", "template", "text", "coupon", "button", "link", "from", "until"})
#: Channels that have groups a plan can post to.
GROUP_CHANNELS = ("sandbox", "telegram", "wecom")
#: Channels whose messages carry buttons.
BUTTON_CHANNELS = frozenset({"sandbox", "telegram"})
MAX_NAME = 64
MAX_TEXT = 4000
MAX_TARGETS = 50
MAX_TAG = 64
MAX_LABEL = 32
MAX_URL = 2000
#: Slots looked at inside the catch-up time (a cron line every minute over a day).
CATCH_UP_SLOTS = 2000
_NAME = re.compile(r"^[\w\-.]+$")


@dataclass(frozen=True)
class PlanSpec:
    """A checked plan definition."""

    name: str
    schedule: Schedule
    targets: tuple[str, ...]
    channel: str = ""
    text: str | None = None
    template: str | None = None
    coupon: str | None = None
    button: str | None = None
    link: str | None = None
    starts_on: date | None = None
    ends_on: date | None = None


def parse_plan(line: str, renderer: Renderer) -> PlanSpec:
    """Read ``NAME WHEN... key=value ... | text`` (see the module docstring)."""
    d = split_definition(line, KEYS)
    if len(d.words) < 2:
        raise GroupsError("groups.sop.usage")
    return plan_spec(d.words[0], " ".join(d.words[1:]), d.options, d.text, renderer)


def plan_spec(
    name: str, when: str, options: dict[str, str], text: str, renderer: Renderer
) -> PlanSpec:
    """Check a plan given as its parts (the console's form; :func:`parse_plan` for a line):
    ``options`` are the ``key=value`` pairs of :data:`KEYS`. A :class:`GroupsError` names
    the field it is about (``name``, ``when``, ``to``, ``text``, ...)."""
    unknown = sorted(set(options) - KEYS)
    if unknown:
        raise GroupsError("groups.error.unknown_key", key=unknown[0], keys=", ".join(sorted(KEYS)))
    with about("name"):
        if len(name) > MAX_NAME or not _NAME.match(name):
            raise GroupsError("groups.sop.error.name", limit=MAX_NAME)
    with about("when"):
        schedule = parse_schedule(when)
    o = options
    channel = o.get("channel", "").lower()
    with about("channel"):
        if channel == "wechat":
            raise GroupsError("groups.sop.error.official_account")
        if channel and channel not in GROUP_CHANNELS:
            raise GroupsError("groups.sop.error.channel", channel=channel)
    with about("to"):
        targets = _targets(o.get("to", ""), channel)
    text = text or o.get("text") or ""
    template = o.get("template") or None
    with about("text"):
        if bool(text) == bool(template):
            raise GroupsError("groups.sop.error.content")
        if text:
            if len(text) > MAX_TEXT:
                raise GroupsError("groups.sop.error.too_long", field="text", limit=MAX_TEXT)
            _check_render(renderer, lambda v: renderer.render_string(text, **v))
    with about("template"):
        if template is not None:
            try:
                renderer.template_name(template, "zh-CN")
            except TemplateRenderError:
                raise GroupsError("groups.sop.error.template", name=template) from None
            _check_render(renderer, lambda v: renderer.render(template, "zh-CN", **v))
    link = o.get("link") or None
    with about("link"):
        if link is not None and (
            not link.startswith(("https://", "http://")) or len(link) > MAX_URL or " " in link
        ):
            raise GroupsError("groups.sop.error.link")
    button = o.get("button") or None
    with about("button"):
        if button is not None and len(button) > MAX_LABEL:
            raise GroupsError("groups.sop.error.too_long", field="button", limit=MAX_LABEL)
    with about("from"):
        starts_on = _date(o.get("from"))
    with about("until"):
        ends_on = _date(o.get("until"))
        if starts_on and ends_on and ends_on < starts_on:
            raise GroupsError("groups.sop.error.dates")
    return PlanSpec(
        name=name,
        schedule=schedule,
        targets=targets,
        channel=channel,
        text=text or None,
        template=template,
        coupon=o.get("coupon") or None,
        button=button,
        link=link,
        starts_on=starts_on,
        ends_on=ends_on,
    )


def _check_render(renderer: Renderer, render) -> None:
    try:
        render({"group": "…", "date": "2026-01-01", "link": "https://example.com"})
    except TemplateRenderError as exc:
        raise GroupsError("groups.sop.error.render", problem=exc.problem) from None


def _date(value: str | None) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise GroupsError("groups.sop.error.date", value=value) from None


def _targets(value: str, channel: str) -> tuple[str, ...]:
    items = [i.strip() for i in re.split(r"[,，]", value) if i.strip()]
    if not items:
        raise GroupsError("groups.sop.error.targets_missing")
    if len(items) > MAX_TARGETS:
        raise GroupsError("groups.sop.error.too_many_targets", limit=MAX_TARGETS)
    out = []
    for item in items:
        kind, sep, rest = item.partition(":")
        if item.lower() in ("all", "全部"):
            out.append("all")
        elif sep and kind.lower() in ("title", "tag") and rest and len(rest) <= MAX_TAG:
            out.append(f"{kind.lower()}:{rest}")
        elif sep and kind.lower() == "wechat":
            raise GroupsError("groups.sop.error.official_account")
        elif sep and kind.lower() in GROUP_CHANNELS and rest and len(rest) <= 128:
            if channel and kind.lower() != channel:
                raise GroupsError("groups.sop.error.target_channel", target=item, channel=channel)
            out.append(f"{kind.lower()}:{rest}")
        else:
            raise GroupsError("groups.sop.error.target", target=item)
    return tuple(dict.fromkeys(out))


# -- managing plans --------------------------------------------------------------------


def create_plan(
    session: Session, spec: PlanSpec, *, config: Config, now: datetime, created_by: str
) -> SopPlan:
    """Store a new active plan; its first slot is the first one after ``now``."""
    _check_coupon(session, spec)
    with about("name"):
        if find_plan(session, spec.name) is not None:
            raise GroupsError("groups.sop.error.exists", name=spec.name)
    count = session.scalar(select(func.count()).select_from(SopPlan))
    if (count or 0) >= config.groups.max_plans:
        raise GroupsError("groups.sop.error.too_many_plans", limit=config.groups.max_plans)
    plan = SopPlan(
        status="active",
        created_by=created_by[:128],
        created_at=now,
        updated_at=now,
        checked_until=now,
    )
    _define(plan, spec)
    session.add(plan)
    session.flush()
    return plan


def _check_coupon(session: Session, spec: PlanSpec) -> None:
    if spec.coupon is not None:
        from bot.marketing.coupons import definition

        with about("coupon"):
            if definition(session, spec.coupon) is None:
                raise GroupsError("groups.sop.error.coupon", name=spec.coupon)


def _define(plan: SopPlan, spec: PlanSpec) -> None:
    """Copy a checked definition onto a plan row."""
    plan.name = spec.name
    plan.channel = spec.channel
    plan.targets = list(spec.targets)
    plan.schedule = spec.schedule.text
    plan.text = spec.text
    plan.template = spec.template
    plan.coupon = spec.coupon
    plan.button = spec.button
    plan.link = spec.link
    plan.starts_on = spec.starts_on
    plan.ends_on = spec.ends_on


def update_plan(session: Session, name: str, spec: PlanSpec, *, now: datetime) -> SopPlan:
    """Change plan ``name`` to ``spec`` (it may be renamed), keeping its status and posts. A
    new schedule starts after ``now``: slots of the old one not yet posted are not caught up."""
    plan = _plan(session, name)
    _check_coupon(session, spec)
    with about("name"):
        if spec.name != plan.name and find_plan(session, spec.name) is not None:
            raise GroupsError("groups.sop.error.exists", name=spec.name)
    if spec.schedule.text != plan.schedule:
        plan.checked_until = now
    _define(plan, spec)
    plan.updated_at = now
    session.flush()
    return plan


def find_plan(session: Session, name: str) -> SopPlan | None:
    return session.scalars(select(SopPlan).where(SopPlan.name == name)).one_or_none()


def _plan(session: Session, name: str) -> SopPlan:
    plan = find_plan(session, name)
    if plan is None:
        raise GroupsError("groups.sop.error.no_plan", name=name)
    return plan


def set_status(session: Session, name: str, status: str, now: datetime) -> SopPlan:
    """Pause or resume a plan. A resumed plan posts from the next slot on (no catch-up of
    what fell in the pause)."""
    plan = _plan(session, name)
    if status == "active" and plan.status != "active":
        plan.checked_until = now
    plan.status = status
    plan.updated_at = now
    return plan


def delete_plan(session: Session, name: str) -> None:
    """Delete a plan with its runs and post records (outbox rows already queued stay)."""
    plan = _plan(session, name)
    runs = select(SopRun.id).where(SopRun.plan_id == plan.id)
    session.execute(delete(GroupPost).where(GroupPost.run_id.in_(runs)))
    session.execute(delete(SopRun).where(SopRun.plan_id == plan.id))
    session.delete(plan)
    session.flush()


def list_plans(session: Session) -> list[SopPlan]:
    return list(session.scalars(select(SopPlan).order_by(SopPlan.name)))


def tag_group(
    session: Session, channel: str, chat_id: str, tag: str, *, remove: bool, now: datetime
) -> bool:
    """Put a tag on a group (or take it off); True if something changed."""
    tag = tag.strip()
    if not tag or len(tag) > MAX_TAG:
        raise GroupsError("groups.sop.error.tag", limit=MAX_TAG)
    group = session.scalars(
        select(Group).where(Group.channel == channel, Group.external_id == chat_id)
    ).one_or_none()
    if group is None:
        raise GroupsError("groups.sop.error.no_group", group=f"{channel}:{chat_id}")
    if remove:
        result = session.execute(
            delete(GroupTag).where(GroupTag.group_id == group.id, GroupTag.tag == tag)
        )
        return bool(rowcount(result))
    return bool(insert_ignore(session, GroupTag, {"group_id": group.id, "tag": tag, "created_at": now}, ["group_id", "tag"]))  # fmt: skip


def resolve_groups(session: Session, plan: SopPlan) -> list[Group]:
    """The active groups a plan posts to now (tags and titles are read at each slot)."""
    query = select(Group).where(Group.active.is_(True), Group.channel.in_(GROUP_CHANNELS))
    if plan.channel:
        query = query.where(Group.channel == plan.channel)
    groups = list(session.scalars(query.order_by(Group.id)))
    wanted = set(plan.targets)
    if "all" in wanted:
        return groups
    tags: dict[int, set[str]] = {}
    if any(w.startswith("tag:") for w in wanted):
        for gid, tag in session.execute(select(GroupTag.group_id, GroupTag.tag)):
            tags.setdefault(gid, set()).add(tag)
    out = []
    for g in groups:
        for w in wanted:
            kind, _, rest = w.partition(":")
            if (
                (kind == "tag" and rest in tags.get(g.id, ()))
                or (kind == "title" and fnmatch.fnmatchcase((g.title or "").lower(), rest.lower()))
                or (kind == g.channel and rest == g.external_id)
            ):
                out.append(g)
                break
    return out


# -- posting due slots (the scheduler's job) -------------------------------------------


def run_due(services) -> dict[str, int]:
    """Post every active plan's due slots; returns plan name → groups posted to."""
    config: Config = services.config
    zone = ZoneInfo(config.general.timezone)
    now = services.clock.now()
    with services.db.sessions() as session:
        ids = list(session.scalars(select(SopPlan.id).where(SopPlan.status == "active")))
    done: dict[str, int] = {}
    for plan_id in ids:
        try:
            with services.db.transaction() as session:
                name, posted = _run_plan(session, plan_id, services, zone, now)
            if posted:
                done[name] = posted
        except Exception:
            log.exception("sop: plan %s failed; it is tried again at the next tick", plan_id)
    return done


def _run_plan(session: Session, plan_id: int, services, zone: ZoneInfo, now: datetime):
    config: Config = services.config
    plan = session.get(SopPlan, plan_id)
    if plan is None or plan.status != "active":
        return "", 0
    schedule = parse_schedule(plan.schedule)
    since = plan.checked_until or plan.created_at
    grace = now - timedelta(minutes=config.groups.catch_up_minutes)

    def in_dates(slot: datetime) -> bool:
        day = slot.astimezone(zone).date()
        return not (plan.starts_on and day < plan.starts_on) and not (
            plan.ends_on and day > plan.ends_on
        )

    due = [s for s in schedule.slots(max(since, grace), now, zone, limit=CATCH_UP_SLOTS) if in_dates(s)]  # fmt: skip
    late = [s for s in schedule.slots(since, grace, zone) if in_dates(s)] if since < grace else []
    # a group gets one post per catch-up: the newest due slot; older ones are missed
    missed = [(s, "late") for s in late] + [(s, "superseded") for s in due[:-1]]
    for slot, why in missed:
        insert_ignore(
            session,
            SopRun,
            {
                "plan_id": plan.id,
                "slot_at": slot,
                "status": "missed",
                "groups": 0,
                "reason": (
                    f"found at {now:%Y-%m-%d %H:%M}Z, past the catch-up time"
                    if why == "late"
                    else "a later slot was due at the same time"
                ),
                "created_at": now,
            },
            ["plan_id", "slot_at"],
        )
    posted = 0
    for slot in due[-1:]:
        claimed = insert_ignore(
            session,
            SopRun,
            {
                "plan_id": plan.id,
                "slot_at": slot,
                "status": "posting",
                "groups": 0,
                "created_at": now,
            },
            ["plan_id", "slot_at"],
        )
        if not claimed:
            continue
        run = session.scalars(
            select(SopRun).where(SopRun.plan_id == plan.id, SopRun.slot_at == slot)
        ).one()
        groups = resolve_groups(session, plan)
        problems = []
        try:
            content = _Content(plan, services)
        except TemplateRenderError as exc:
            groups, problems = [], [exc.problem]
        for group in groups:
            try:
                posted += _post(session, plan, run, group, slot, content, zone, now)
            except TemplateRenderError as exc:
                problems.append(f"{group.channel}:{group.external_id}: {exc.problem}")
        run.groups = session.scalar(  # type: ignore[assignment]  # a count, never None here
            select(func.count()).select_from(GroupPost).where(GroupPost.run_id == run.id)
        )
        run.status = "posted" if run.groups else ("failed" if problems else "no_groups")
        run.reason = "; ".join(problems)[:2000] or None
    if plan.ends_on and now.astimezone(zone).date() > plan.ends_on:
        plan.status = "ended"
    plan.checked_until = now
    return plan.name, posted


class _Content:
    """A plan's content prepared once per slot: the compiled text or template, the label."""

    def __init__(self, plan: SopPlan, services) -> None:
        config: Config = services.config
        self.locale = config.general.locale
        renderer: Renderer = services.renderer
        if plan.template:
            name, _ = renderer.template_name(plan.template, self.locale)
        else:
            name = None
        try:
            self.compiled = (
                renderer.env.get_template(name)
                if name
                else renderer.env.from_string(plan.text or "")
            )
        except jinja2.TemplateError as exc:
            raise TemplateRenderError(
                plan.template or "<plan text>", self.locale, str(exc)
            ) from exc
        self.link_base = ""
        if plan.link:
            from bot.marketing.links import base_url

            self.link_base = f"{base_url(config)}/g/"
        self.label = plan.button or t("groups.sop.coupon_button", self.locale)

    def render(self, **values) -> str:
        try:
            return self.compiled.render(**values).strip()
        except jinja2.TemplateError as exc:
            raise TemplateRenderError(
                "<plan text>", self.locale, f"{type(exc).__name__}: {exc}"
            ) from exc


def _post(session, plan, run, group, slot, content: _Content, zone, now) -> int:
    """Queue the plan's post to one group (once: the post record and the outbox row share
    the key plan × slot × group)."""
    key = f"sop:{plan.id}:{slot:%Y%m%d%H%M}:{group.id}"
    token = secrets.token_urlsafe(16) if plan.link else None
    link = f"{content.link_base}{token}" if token else ""
    text = content.render(
        group=group.title or group.external_id,
        date=slot.astimezone(zone).date().isoformat(),
        link=link,
    )
    if link and link not in text:
        text = f"{text}\n{link}"
    if not text:
        raise TemplateRenderError("<plan text>", content.locale, "the post is empty")
    inserted = insert_ignore(
        session,
        GroupPost,
        {
            "run_id": run.id,
            "plan_id": plan.id,
            "group_id": group.id,
            "outbox_key": key,
            "link_token": token,
            "button_clicks": 0,
            "link_clicks": 0,
            "created_at": now,
        },
        ["outbox_key"],
    )
    if not inserted:
        return 0
    buttons = []
    if plan.coupon and group.channel in BUTTON_CHANNELS:
        buttons.append(Button(content.label, key))  # the key starts with BUTTON_PREFIX
    outbox.enqueue(
        session,
        key=key,
        to=ConversationRef(group.channel, group.external_id, ""),
        text=text,
        buttons=buttons,
        purpose=PURPOSE,
        now=now,
    )
    return 1


# -- clicks and reports ------------------------------------------------------------------


def link_clicked(session: Session, token: str) -> str | None:
    """Count a click on a post's tracked link; its target, or None for an unknown token."""
    found = session.execute(
        select(GroupPost.id, SopPlan.link)
        .join(SopPlan, SopPlan.id == GroupPost.plan_id)
        .where(GroupPost.link_token == token)
    ).one_or_none()
    if found is None or not found[1]:
        return None
    session.execute(
        update(GroupPost)
        .where(GroupPost.id == found[0])
        .values(link_clicks=GroupPost.link_clicks + 1)
    )
    return found[1]


@dataclass(frozen=True)
class Pressed:
    """A press on a post's coupon button: the coupon code given (None: none left)."""

    plan: str
    code: str | None
    coupon: str | None


def post_clicked(session: Session, key: str, customer_id: int, now: datetime) -> Pressed | None:
    """Count a press on a post's button (its data is the post's key) and give the presser
    the plan's coupon (once per person and post); None for an unknown post."""
    found = session.execute(
        select(GroupPost, SopPlan).join(SopPlan, SopPlan.id == GroupPost.plan_id)
        .where(GroupPost.outbox_key == key)
    ).one_or_none()  # fmt: skip
    if found is None:
        return None
    post, plan = found
    post.button_clicks += 1
    if not plan.coupon:
        return Pressed(plan.name, None, None)
    from bot.marketing.coupons import definition, format_code, issue_one

    coupon = definition(session, plan.coupon)
    code = None
    if coupon is not None:
        issued = issue_one(session, coupon, customer_id, f"sop:{post.id}:{customer_id}", now=now)
        code = format_code(issued.code) if issued is not None else None
    return Pressed(plan.name, code, plan.coupon)


def plan_report(session: Session, plan: SopPlan) -> list[dict]:
    """Per group: posts, how they were delivered (by outbox status) and clicks."""
    rows = session.execute(
        select(
            Group.channel,
            Group.external_id,
            Group.title,
            OutboxMessage.status,
            func.count(),
            func.sum(GroupPost.button_clicks),
            func.sum(GroupPost.link_clicks),
        )
        .join(Group, Group.id == GroupPost.group_id)
        .join(OutboxMessage, OutboxMessage.idempotency_key == GroupPost.outbox_key, isouter=True)
        .where(GroupPost.plan_id == plan.id)
        .group_by(Group.channel, Group.external_id, Group.title, OutboxMessage.status)
        .order_by(Group.channel, Group.external_id)
    ).all()
    by_group: dict[tuple[str, str], dict] = {}
    for channel, chat, title, status, n, buttons, links in rows:
        entry = by_group.setdefault(
            (channel, chat),
            {"group": f"{channel}:{chat}", "title": title or "", "posts": 0, "status": {},
             "button_clicks": 0, "link_clicks": 0},
        )  # fmt: skip
        entry["posts"] += n
        entry["status"][status or "pending"] = entry["status"].get(status or "pending", 0) + n
        entry["button_clicks"] += int(buttons or 0)
        entry["link_clicks"] += int(links or 0)
    return list(by_group.values())


def runs_of(session: Session, plan: SopPlan, limit: int = 10) -> list[SopRun]:
    return list(
        session.scalars(
            select(SopRun).where(SopRun.plan_id == plan.id).order_by(SopRun.slot_at.desc()).limit(limit)
        )
    )  # fmt: skip
