"""Managers' commands in community groups, on any channel.

``/welcome <text|off>``, ``/announce [pin] <text>``, ``/stats``, ``/whois``, ``/tag <tag>``
and ``/untag <tag>``. They are for the group's admins on the platform and the managers named
in config (role ``group_admin`` or ``manager``); anyone else gets a short refusal and
nothing happens. ``/whois``, ``/tag`` and ``/untag`` act on the author of the message they
answer, or on ``@<user id>`` given as the last argument (the sandbox has no replies).
A member who joins a group with a welcome set is greeted by name, with a mention.
"""

from __future__ import annotations

from datetime import timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import func, select

from bot.core.context import Context
from bot.core.events import ChatType, ConversationRef
from bot.core.templating import TemplateRenderError
from storage import repos
from storage.models import Customer, CustomerTag, Group, Identity, Interaction, Membership, Tag
from storage.scores import score_of

__all__ = [
    "GROUP_ONLY",
    "announce",
    "command_target",
    "group_welcome",
    "refuse",
    "stats",
    "tag_member",
    "untag_member",
    "welcome",
    "whois",
]

GROUP_ONLY = frozenset({"welcome", "announce", "stats"})
PIN_WORDS = frozenset({"pin", "置顶"})
MAX_TAG = 64
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


def refuse(ctx: Context) -> None:
    """A customer tried a managers' command: say no, do nothing."""
    ctx.reply("manage_refused", command=ctx.event.command)


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
    try:
        preview = ctx.renderer.render_string(body, name=ctx.event.actor.display_name or "…")
    except TemplateRenderError as exc:
        ctx.reply("manage_welcome_invalid", problem=exc.problem)
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
    session, ref = ctx.session, ctx.event.ref
    since = ctx.now - timedelta(days=STATS_DAYS)
    in_chat = (
        (Interaction.channel == ref.channel)
        & (Interaction.chat_id == ref.chat_id)
        & (Interaction.occurred_at >= since)
    )

    def count(kind: str) -> int:
        return session.execute(
            select(func.count()).select_from(Interaction).where(in_chat, Interaction.kind == kind)
        ).scalar_one()

    members = session.scalar(
        select(func.count())
        .select_from(Membership)
        .where(Membership.group_id == group.id, Membership.active.is_(True))
    )
    active = session.execute(
        select(Customer.display_name, func.count().label("n"))
        .join(Interaction, Interaction.customer_id == Customer.id)
        .where(in_chat, Interaction.kind == "message")
        .group_by(Customer.id, Customer.display_name)
        .order_by(func.count().desc(), Customer.id)
        .limit(5)
    ).all()
    tags = session.execute(
        select(Tag.name, func.count().label("n"))
        .join(CustomerTag, CustomerTag.tag_id == Tag.id)
        .join(Membership, Membership.customer_id == CustomerTag.customer_id)
        .where(Membership.group_id == group.id, Membership.active.is_(True))
        .where((CustomerTag.expires_at.is_(None)) | (CustomerTag.expires_at > ctx.now))
        .group_by(Tag.id, Tag.name)
        .order_by(func.count().desc(), Tag.name)
        .limit(5)
    ).all()
    ctx.reply(
        "manage_stats",
        title=group.title or ref.chat_id,
        days=STATS_DAYS,
        members=members,
        joins=count("join"),
        leaves=count("leave"),
        messages=count("message"),
        active=[{"name": name or "?", "count": n} for name, n in active],
        tags=[{"tag": name, "count": n} for name, n in tags],
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
