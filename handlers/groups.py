"""Chat surfaces of running the groups (bot/groups/): SOP plans, FAQ answers, moderation.

Managers (``[roles] managers``): ``/sop add|list|show|pause|resume|del|tag`` and
``/faq add|list|del``. A group's admins and managers, in that group: ``/mod`` (settings,
``/mod log``), and as replies to a member's message (or with ``@<user id>`` last)
``/warn [reason]``, ``/mute [minutes]``, ``/ban``, ``/unban``. Members' messages in groups
pass the group's rules first (a deleted message ends the dispatch); newcomers may have to
press a button; presses on a post's coupon button give a code in 1:1; FAQ questions are
answered where their rules allow, with a cool-down per chat.
"""

from __future__ import annotations

from bot.core import filters as f
from bot.core.context import Context
from bot.core.events import ChatType, ConversationRef, EventKind
from bot.core.i18n import t
from bot.core.routing import StopPropagation
from bot.groups import faq, moderation, sop
from bot.groups.errors import GroupsError
from handlers.manage import command_target
from storage import repos
from storage.groups import FaqEntry
from storage.models import Group

__all__ = [
    "FaqAnswers",
    "ban_command",
    "confirm_button",
    "faq_command",
    "is_confirm_button",
    "is_member_message",
    "is_sop_button",
    "mod_command",
    "moderate",
    "mute_command",
    "newcomer",
    "sop_button",
    "sop_command",
    "unban_command",
    "warn_command",
]

DEFAULT_MUTE_MINUTES = 60
MAX_REASON = 100

is_member_message = (
    f.is_group & f.kind(EventKind.MESSAGE, EventKind.EDITED) & f.has_role("customer")
)
is_confirm_button = f.button(moderation.CONFIRM_PREFIX)
is_sop_button = f.button(sop.BUTTON_PREFIX)


def _say(ctx: Context, key: str, **values) -> None:
    ctx.send_text(t(key, ctx.locale, **values))


def _body(ctx: Context) -> str:
    parts = ctx.event.text.strip().split(maxsplit=1)
    return parts[1].strip() if len(parts) > 1 else ""


def _action(ctx: Context) -> tuple[str, str]:
    """The sub-command word and the rest (line breaks in the rest kept)."""
    parts = _body(ctx).split(maxsplit=1)
    return (parts[0].lower() if parts else ""), (parts[1].strip() if len(parts) > 1 else "")


def _actor(ctx: Context) -> str:
    return f"{ctx.event.channel}:{ctx.event.actor.user_id}"


def _group(ctx: Context) -> Group:
    ref = ctx.event.ref
    return repos.ensure_group(ctx.session, ref.channel, ref.chat_id, ctx.event.chat_title)


def _fail(ctx: Context, exc: GroupsError) -> None:
    ctx.send_text(exc.text(ctx.locale))


# -- /sop ------------------------------------------------------------------------------


def sop_command(ctx: Context) -> None:
    """``/sop add|list|show|pause|resume|del|tag`` (see bot/groups/sop.py)."""
    action, rest = _action(ctx)
    try:
        if action == "add":
            spec = sop.parse_plan(rest, ctx.renderer)
            plan = sop.create_plan(
                ctx.session, spec, config=ctx.config, now=ctx.now, created_by=_actor(ctx)
            )
            groups = sop.resolve_groups(ctx.session, plan)
            _say(ctx, "groups.sop.created", name=plan.name, when=plan.schedule, groups=len(groups))
        elif action in ("list", ""):
            ctx.reply("groups_sop_list", plans=_plan_rows(ctx))
        elif action == "show" and rest:
            found = sop.find_plan(ctx.session, rest)
            if found is None:
                raise GroupsError("groups.sop.error.no_plan", name=rest)
            ctx.reply(
                "groups_sop_show",
                plan=_plan_row(ctx, found),
                groups=sop.plan_report(ctx.session, found),
                runs=[
                    {"slot": _local(ctx, r.slot_at), "status": r.status, "groups": r.groups}
                    for r in sop.runs_of(ctx.session, found)
                ],
            )
        elif action in ("pause", "resume") and rest:
            plan = sop.set_status(
                ctx.session, rest, "paused" if action == "pause" else "active", ctx.now
            )
            _say(ctx, f"groups.sop.{action}d", name=plan.name)
        elif action in ("del", "delete") and rest:
            sop.delete_plan(ctx.session, rest)
            _say(ctx, "groups.sop.deleted", name=rest)
        elif action == "tag" and rest and ctx.event.chat_type is ChatType.GROUP:
            words = rest.split()
            remove = words[0].lower() in ("del", "remove") and len(words) > 1
            tag = " ".join(words[1:] if remove else words)
            _group(ctx)
            changed = sop.tag_group(
                ctx.session, ctx.event.channel, ctx.event.ref.chat_id, tag, remove=remove, now=ctx.now
            )  # fmt: skip
            key = "groups.sop.untagged" if remove else "groups.sop.tagged"
            _say(ctx, key, tag=tag, changed=changed)
        else:
            _say(ctx, "groups.sop.usage")
    except GroupsError as exc:
        _fail(ctx, exc)


def _local(ctx: Context, moment) -> str:
    from zoneinfo import ZoneInfo

    if moment is None:
        return "-"
    return moment.astimezone(ZoneInfo(ctx.config.general.timezone)).strftime("%Y-%m-%d %H:%M")


def _plan_row(ctx: Context, plan) -> dict:
    from zoneinfo import ZoneInfo

    from bot.groups.schedule import parse_schedule

    nxt = None
    if plan.status == "active":
        zone = ZoneInfo(ctx.config.general.timezone)
        nxt = parse_schedule(plan.schedule).next_after(ctx.now, zone)
    return {
        "name": plan.name,
        "when": plan.schedule,
        "targets": ", ".join(plan.targets),
        "status": t(f"groups.sop.status.{plan.status}", ctx.locale),
        "next": _local(ctx, nxt),
    }


def _plan_rows(ctx: Context) -> list[dict]:
    return [_plan_row(ctx, p) for p in sop.list_plans(ctx.session)]


def sop_button(ctx: Context) -> None:
    """A press on a post's button: counted; the plan's coupon goes to the presser in 1:1."""
    assert ctx.customer is not None
    key = (ctx.event.button_data or "")[:200]
    pressed = sop.post_clicked(ctx.session, key, ctx.customer.id, ctx.now)
    if pressed is None or pressed.coupon is None:
        return
    user = ctx.event.actor.user_id
    private = ConversationRef(ctx.event.channel, user, user)
    if pressed.code is None:
        ctx.send_text(t("groups.sop.coupon_gone", ctx.locale), to=private)
    else:
        ctx.reply("groups_sop_coupon", to=private, code=pressed.code, plan=pressed.plan)


# -- /faq ------------------------------------------------------------------------------


def faq_command(ctx: Context) -> None:
    """``/faq add|list|del`` (see bot/groups/faq.py)."""
    action, rest = _action(ctx)
    here = (ctx.event.channel, ctx.event.ref.chat_id)
    try:
        if action == "add":
            spec = faq.parse_faq(rest, ctx.renderer, ctx.config, here=here)
            entry = faq.add_entry(
                ctx.session, spec, config=ctx.config, now=ctx.now, created_by=_actor(ctx)
            )
            _say(ctx, "groups.faq.added", id=entry.id, question=entry.question)
        elif action in ("list", ""):
            ctx.reply(
                "groups_faq_list", entries=[_faq_row(e) for e in faq.list_entries(ctx.session)]
            )
        elif action in ("del", "delete") and rest:
            try:
                entry_id = int(rest.lstrip("#"))
            except ValueError:
                raise GroupsError("groups.faq.usage") from None
            entry = faq.delete_entry(ctx.session, entry_id)
            _say(ctx, "groups.faq.deleted", id=entry_id, question=entry.question)
        else:
            _say(ctx, "groups.faq.usage")
    except GroupsError as exc:
        _fail(ctx, exc)


def _faq_row(entry: FaqEntry) -> dict:
    where = ", ".join(entry.chats) if entry.scope == "chats" else entry.scope
    return {
        "id": entry.id,
        "question": entry.question,
        "keywords": ", ".join(entry.keywords or []),
        "where": where,
        "groups": entry.group_mode,
        "cooldown": entry.cooldown_seconds,
        "hits": entry.hits,
    }


class FaqAnswers:
    """The FAQ handler and its filter (the filter's match is kept for the handler)."""

    def __init__(self) -> None:
        self._last: tuple[str, faq.Match | None] = ("", None)

    def _match(self, ctx: Context) -> faq.Match | None:
        if self._last[0] != ctx.event.id:
            event = ctx.event
            found = faq.find_match(
                ctx.session,
                channel=event.channel,
                chat_id=event.ref.chat_id,
                in_group=event.chat_type is ChatType.GROUP,
                mentions_bot=event.mentions_bot,
                text=event.text,
                now=ctx.now,
            )
            self._last = (event.id, found)
        return self._last[1]

    def asks(self, ctx: Context) -> bool:
        """A question with an entry for here; in a group not inside its cool-down."""
        if ctx.event.kind is not EventKind.MESSAGE or not ctx.event.text:
            return False
        found = self._match(ctx)
        if found is None:
            return False
        if ctx.event.chat_type is ChatType.GROUP and found.cooling:
            entry = ctx.session.get(FaqEntry, found.entry_id)
            if entry is None:  # deleted meanwhile
                return False
            faq.record_answer(
                ctx.session, entry, ctx.event.channel, ctx.event.ref.chat_id, ctx.now,
                answered=False,
            )  # fmt: skip
            return False
        return True

    def answer(self, ctx: Context) -> None:
        found = self._match(ctx)
        assert found is not None
        entry = ctx.session.get(FaqEntry, found.entry_id)
        if entry is None:  # deleted meanwhile
            return
        channel, chat = ctx.event.channel, ctx.event.ref.chat_id
        if found.cooling:  # 1:1 only (groups stay silent): point to the answer just given
            faq.record_answer(ctx.session, entry, channel, chat, ctx.now, answered=False)
            _say(ctx, "groups.faq.just_answered", question=entry.question)
            return
        name = ctx.event.actor.display_name or ctx.event.actor.user_id
        ctx.send_text(faq.answer_text(entry, ctx.locale, ctx.renderer, name))
        faq.record_answer(ctx.session, entry, channel, chat, ctx.now, answered=True)


# -- moderation ------------------------------------------------------------------------


def _common(ctx: Context) -> dict:
    return {"now": ctx.now, "config": ctx.config, "renderer": ctx.renderer}


def moderate(ctx: Context) -> None:
    """A member's message against the group's rules; a deleted message ends the dispatch."""
    assert ctx.customer is not None
    deleted = moderation.check_message(
        ctx.session,
        group=_group(ctx),
        customer_id=ctx.customer.id,
        user_id=ctx.event.actor.user_id,
        user_name=ctx.event.actor.display_name,
        text=ctx.event.text,
        raw=ctx.event.raw,
        **_common(ctx),
    )
    if deleted:
        raise StopPropagation


def newcomer(ctx: Context) -> None:
    """A newcomer in a group that asks for confirmation: muted, with a button to press."""
    actor = ctx.event.actor
    check = moderation.newcomer_joined(
        ctx.session,
        group=_group(ctx),
        user_id=actor.user_id,
        user_name=actor.display_name,
        **_common(ctx),
    )
    if check is None:
        return
    name = actor.display_name or actor.user_id
    locale = ctx.config.general.locale
    minutes = moderation.settings_of(ctx.session, check.group_id).captcha_minutes
    ctx.send_text(
        t("groups.mod.captcha_prompt", locale, name=name, minutes=minutes),
        buttons=[
            moderation_button(t("groups.mod.captcha_button", locale), actor.user_id),
        ],
        to=ConversationRef(ctx.event.channel, ctx.event.ref.chat_id, ""),
        extra={"mentions": [{"user_id": actor.user_id, "text": name}]},
    )


def moderation_button(label: str, user_id: str):
    from bot.adapters.base import Button

    return Button(label, f"{moderation.CONFIRM_PREFIX}{user_id}")


def confirm_button(ctx: Context) -> None:
    """The newcomer's own press lifts the restriction; anyone else's press does nothing."""
    wanted = (ctx.event.button_data or "")[len(moderation.CONFIRM_PREFIX) :]
    if wanted != ctx.event.actor.user_id or ctx.event.chat_type is not ChatType.GROUP:
        return
    moderation.confirm_newcomer(ctx.session, group=_group(ctx), user_id=wanted, **_common(ctx))


def mod_command(ctx: Context) -> None:
    """``/mod`` shows the group's rules, ``/mod log`` its recent actions, else sets a rule."""
    if ctx.event.chat_type is not ChatType.GROUP:
        ctx.reply("manage_group_only", command=ctx.event.command)
        return
    group = _group(ctx)
    args = list(ctx.event.args)
    if args and args[0].lower() == "log":
        rows = moderation.recent_actions(ctx.session, group.id, limit=10)
        ctx.reply("groups_mod_log", actions=[_action_row(ctx, *r) for r in rows])
        return
    try:
        settings = moderation.configure(ctx.session, group, args, _actor(ctx), ctx.now)
    except GroupsError as exc:
        _fail(ctx, exc)
        return
    ctx.reply(
        "groups_mod_settings",
        s=settings.as_dict(),
        acts=group.channel in moderation.ACTS_ON,
        changed=bool(args),
    )


def _action_row(ctx: Context, action, group, status) -> dict:
    return {
        "when": _local(ctx, action.created_at),
        "action": t(f"groups.mod.action.{action.action}", ctx.locale),
        "name": action.user_name or action.user_id,
        "reason": t(f"groups.mod.reason.{action.reason}", ctx.locale),
        "detail": action.detail,
        "actor": action.actor,
        "status": status or "",
    }


def _target(ctx: Context):
    if ctx.event.chat_type is not ChatType.GROUP:
        ctx.reply("manage_group_only", command=ctx.event.command)
        return None
    identity, args = command_target(ctx, create=True)
    if identity is None:
        ctx.reply("manage_need_target", command=ctx.event.command)
        return None
    name = identity.customer.display_name or identity.external_id
    return identity.external_id, name, args


def warn_command(ctx: Context) -> None:
    """``/warn [reason]``: a warning; the group's limit of warnings mutes."""
    found = _target(ctx)
    if found is None:
        return
    user_id, name, args = found
    note = " ".join(args)[:MAX_REASON]
    moderation.warn(
        ctx.session,
        group=_group(ctx),
        user_id=user_id,
        user_name=name,
        reason="manual",
        actor=_actor(ctx),
        note=note,
        **_common(ctx),
    )


def mute_command(ctx: Context) -> None:
    """``/mute [minutes]`` (60 by default)."""
    found = _target(ctx)
    if found is None:
        return
    user_id, name, args = found
    minutes = DEFAULT_MUTE_MINUTES
    if args:
        try:
            minutes = int(args[0])
        except ValueError:
            minutes = 0
        if not 1 <= minutes <= moderation.MAX_MINUTES:
            what = t("groups.mod.what.minutes", ctx.locale)
            _say(ctx, "groups.mod.error.number", what=what, low=1, high=moderation.MAX_MINUTES)
            return
    _manual(ctx, user_id, name, "mute", minutes=minutes)


def ban_command(ctx: Context) -> None:
    """``/ban``: removed from the group and kept out."""
    found = _target(ctx)
    if found is not None:
        _manual(ctx, found[0], found[1], "ban")


def unban_command(ctx: Context) -> None:
    """``/unban``: may join again."""
    found = _target(ctx)
    if found is not None:
        _manual(ctx, found[0], found[1], "unban")


def _manual(ctx: Context, user_id: str, name: str, action: str, minutes: int | None = None):
    group = _group(ctx)
    moderation.act(
        ctx.session,
        group=group,
        user_id=user_id,
        user_name=name,
        action=action,
        reason="manual",
        actor=_actor(ctx),
        minutes=minutes,
        notice=True,
        **_common(ctx),
    )
    if group.channel not in moderation.ACTS_ON:
        _say(ctx, "groups.mod.reported", channel=group.channel)
