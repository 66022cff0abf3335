"""Managers' commands in community groups, on any channel.

``/welcome <text|off>``, ``/announce [pin] <text>``, ``/stats``, ``/whois``, ``/tag <tag>``
and ``/untag <tag>``. Who may run them, and on whom, is the authorization table's
(bot/core/authz.py): a group's admins in their own group and on its members, managers
anywhere; anyone else gets a short refusal and nothing happens. ``/whois``, ``/tag`` and ``/untag`` act on the author of the message they
answer, or on ``@<user id>`` given as the last argument (the sandbox has no replies).
A member who joins a group with a welcome set is greeted by name, with a mention.
"""

from __future__ import annotations

from datetime import timedelta
from zoneinfo import ZoneInfo

from bot.core.context import Context
from bot.core.events import ChatType, ConversationRef
from bot.core.template_budget import explain
from bot.core.templating import TemplateRenderError
from storage import repos
from storage.group_stats import group_stats
from storage.models import Customer, Group, Identity
from storage.scores import score_of

__all__ = [
    "GROUP_ONLY",
    "announce",
    "command_target",
    "group_welcome",
    "stats",
    "tag_member",
    "untag_member",
    "welcome",
    "whois",
]

GROUP_ONLY = frozenset({"welcome", "announce", "stats"})
PIN_WORDS = frozenset({"pin", "置顶"})
MAX_TAG = 64
MAX_NAME = 128  # a Telegram first + last name
STATS_DAYS = 7


def _body(ctx: Context) -> str:
    """The text after the command word, line breaks kept."""
    parts = ctx.event.text.strip().split(maxsplit=1)
    return parts[1].strip() if len(parts) > 1 else ""


def _group(ctx: Context) -> Group | None:
    if ctx.event.chat_type is not ChatType.GROUP:
        ctx.reply("manage_group_only", command=ctx.event.command)
        return None
    ref = ctx.event.ref
    return repos.ensure_group(ctx.session, ref.channel, ref.chat_id, ctx.event.chat_title)


def welcome(ctx: Context) -> None:
    """Set, show or turn off the group's welcome for new members."""
    group = _group(ctx)
    if group is None:
        return
    body = _body(ctx)
    if not body:
        ctx.reply("manage_welcome_current", text=group.welcome_text or "")
        return
    if body.lower() in ("off", "关闭"):
        group.welcome_text = None
        ctx.reply("manage_welcome_off")
        return
    try:  # a trial render under the typed-text budget; the longest name a platform allows
        ctx.renderer.render_string(body, name="名" * MAX_NAME)
        preview = ctx.renderer.render_string(body, name=ctx.event.actor.display_name or "…")
    except TemplateRenderError as exc:
        ctx.reply("manage_welcome_invalid", problem=explain(exc, ctx.locale) or exc.problem)
        return
    group.welcome_text = body
    ctx.reply("manage_welcome_set", preview=preview)


def group_welcome(ctx: Context) -> None:
    """Greet a newcomer with the group's welcome (if one is set), mentioning them."""
    ref = ctx.event.ref
    group = repos.ensure_group(ctx.session, ref.channel, ref.chat_id, ctx.event.chat_title)
    if not group.welcome_text:
        return
    name = ctx.event.actor.display_name or ref.user_id
    try:
        text = ctx.renderer.render_string(group.welcome_text, name=name)
    except TemplateRenderError:
        text = ctx.render("manage_welcome_fallback", name=name)
    if name not in text:
        text = f"{name} {text}"
    ctx.send_text(text, extra={"mentions": [{"user_id": ref.user_id, "text": name}]})


def announce(ctx: Context) -> None:
    """Post a manager's text to the group (``/announce pin <text>`` also pins it)."""
    if _group(ctx) is None:
        return
    body = _body(ctx)
    first, _, rest = body.partition(" ")
    pin = first.lower() in PIN_WORDS
    if pin:
        body = rest.strip()
    if not body:
        ctx.reply("manage_announce_usage")
        return
    ref = ctx.event.ref
    ctx.send_text(
        body, to=ConversationRef(ref.channel, ref.chat_id, ""), extra={"pin": True} if pin else None
    )


def stats(ctx: Context) -> None:
    """Members, joins/leaves and messages over 7 days, most active members, top tags."""
    group = _group(ctx)
    if group is None:
        return
    found = group_stats(ctx.session, group, ctx.now - timedelta(days=STATS_DAYS), ctx.now)
    ctx.reply(
        "manage_stats",
        title=group.title or ctx.event.ref.chat_id,
        days=STATS_DAYS,
        members=found.members,
        joins=found.joins,
        leaves=found.leaves,
        messages=found.messages,
        active=[{"name": name or "?", "count": n} for name, n in found.active],
        tags=[{"tag": name, "count": n} for name, n in found.tags],
    )


def command_target(ctx: Context, *, create: bool) -> tuple[Identity | None, list[str]]:
    """The member a command is about (replied-to author, or ``@<user id>``) and the rest."""
    event = ctx.event
    args = list(event.args)
    user_id, name = None, ""
    if event.reply_to is not None:
        user_id, name = event.reply_to.user_id, event.reply_to.display_name
    elif args and args[-1].startswith("@") and len(args[-1]) > 1:
        user_id = args.pop()[1:]
    if user_id is None:
        return None, args
    identity = repos.find_identity(ctx.session, event.ref.channel, user_id)
    if identity is None and create:
        _, identity = repos.upsert_customer(
            ctx.session,
            event.ref.channel,
            user_id,
            display_name=name,
            locale=(event.reply_to.locale if event.reply_to else None) or ctx.config.general.locale,
            timezone=ctx.config.general.timezone,
            now=ctx.now,
        )
    return identity, args


def _local(ctx: Context, customer: Customer) -> str:
    if customer.last_active_at is None:
        return "-"
    try:
        zone = ZoneInfo(customer.timezone)
    except Exception:
        zone = ZoneInfo(ctx.config.general.timezone)
    return customer.last_active_at.astimezone(zone).strftime("%Y-%m-%d %H:%M")


def whois(ctx: Context) -> None:
    """A member's tags, tier and last activity."""
    identity, _ = command_target(ctx, create=False)
    if identity is None:
        ctx.reply("manage_need_target", command=ctx.event.command)
        return
    customer = identity.customer
    score = score_of(ctx.session, customer.id)
    ctx.reply(
        "manage_whois",
        name=customer.display_name or identity.external_id,
        user_id=identity.external_id,
        tags=[t.tag.name for t in repos.tags_of(ctx.session, customer.id, ctx.now)],
        tier=(score.tier if score else None) or "",
        last_active=_local(ctx, customer),
        unreachable=identity.unreachable,
    )


def _tag_args(ctx: Context) -> tuple[Identity, str] | None:
    identity, args = command_target(ctx, create=ctx.event.command == "tag")
    if identity is None:
        ctx.reply("manage_need_target", command=ctx.event.command)
        return None
    tag = " ".join(args).strip()
    if not tag or len(tag) > MAX_TAG:
        ctx.reply("manage_tag_usage", command=ctx.event.command, limit=MAX_TAG)
        return None
    return identity, tag


def tag_member(ctx: Context) -> None:
    """Tag the member (source: this manager)."""
    found = _tag_args(ctx)
    if found is None:
        return
    identity, tag = found
    actor = ctx.event.actor.user_id
    new = repos.add_tag(
        ctx.session,
        identity.customer_id,
        tag,
        source=f"manager:{ctx.event.ref.channel}:{actor}",
        now=ctx.now,
    )
    name = identity.customer.display_name or identity.external_id
    ctx.reply("manage_tagged", tag=tag, name=name, new=new)


def untag_member(ctx: Context) -> None:
    """Remove a tag from the member."""
    found = _tag_args(ctx)
    if found is None:
        return
    identity, tag = found
    removed = repos.remove_tag(ctx.session, identity.customer_id, tag)
    name = identity.customer.display_name or identity.external_id
    ctx.reply("manage_untagged", tag=tag, name=name, removed=removed)
