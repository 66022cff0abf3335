"""Managers' commands for knowing customers: ``/segment`` and ``/rule``.

``/segment <expr>``                count and preview a segment (docs/segments.md)
``/segment save <name> <expr>``    save it by name (then usable as ``segment:<name>``)
``/segment list`` · ``/segment del <name>``

``/rule add keyword <tag> <kw1,kw2> [exclude=a,b] [ttl=30] [weight=2]``
``/rule add event <tag> <join|button|scene|coupon|link>=<value> [ttl=30]``
``/rule add activity <tag> <N>/<D>d [group=<chat id>|*] [silent=30]``
``/rule list`` · ``/rule del <id>``

``/profile [@<user id>]``                       a member's profile card
``/profile <attr> <value> [@<user id>]``        set name, phone, birthday, city, locale or
                                                timezone (bot/customers/attributes.py); ``-`` clears
Like ``/whois``, ``/profile`` acts on the author of the message it answers, or on
``@<user id>`` as the last word. The phone is shown in full only in a private chat.

Values with spaces are quoted (``"weekend trip"``). Every mistake gets a precise reply.
"""

from __future__ import annotations

from datetime import date
from typing import cast
from zoneinfo import ZoneInfo

from bot.core.context import Context
from bot.core.i18n import t
from bot.core.template_budget import explain
from bot.customers.attributes import (
    ALIASES,
    ATTRIBUTES,
    ProfileConflict,
    ProfileInputError,
    format_birthday,
    upsert_profile,
    validate_attributes,
)
from bot.customers.rule_syntax import (
    RuleSyntaxError,
    add_rule,
    describe_rule,
    parse_rule,
    remove_rule,
)
from bot.customers.segment_language import SegmentError
from bot.customers.segments import (
    count_segment,
    delete_segment,
    list_segments,
    preview_segment,
    save_segment,
)
from bot.customers.tagging import TaggingRules
from handlers.manage import command_target
from storage import repos
from storage.scores import score_of
from storage.tag_rules import active_rules
from storage.tag_scores import interests_of

__all__ = ["CustomerCommands", "RuleSyntaxError", "parse_rule"]

PREVIEW = 5


def _rest(ctx: Context, skip: int) -> str:
    """The command's text after the command word and ``skip`` more words."""
    parts = ctx.event.text.strip().split(maxsplit=1 + skip)
    return parts[1 + skip] if len(parts) > 1 + skip else ""


class CustomerCommands:
    """The /segment and /rule handlers (managers only; see handlers/__init__.py)."""

    def __init__(self, rules: TaggingRules) -> None:
        self.rules = rules

    def _who(self, ctx: Context) -> str:
        return f"{ctx.event.ref.channel}:{ctx.event.actor.user_id}"

    def segment(self, ctx: Context) -> None:
        sub = ctx.event.args[0].lower() if ctx.event.args else ""
        config, now, session = ctx.config, ctx.now, ctx.session
        try:
            if sub == "":
                ctx.reply("customers_error", error="/segment <expression> | save | list | del")
            elif sub == "list":
                ctx.reply(
                    "segment_list",
                    segments=[
                        {"name": s.name, "expression": s.expression} for s in list_segments(session)
                    ],
                )
            elif sub == "save":
                if len(ctx.event.args) < 3:
                    ctx.reply("customers_error", error="/segment save <name> <expression>")
                    return
                name, expression = ctx.event.args[1], _rest(ctx, 2)
                save_segment(
                    session, name, expression, config=config, now=now, created_by=self._who(ctx)
                )
                count = count_segment(session, expression, config=config, now=now)
                ctx.reply("segment_saved", name=name, expression=expression, count=count)
            elif sub in ("del", "delete"):
                name = ctx.event.args[1] if len(ctx.event.args) > 1 else ""
                if not delete_segment(session, name):
                    ctx.reply("customers_error", error=f"no saved segment named {name!r}")
                else:
                    ctx.reply("segment_deleted", name=name)
            else:
                expression = _rest(ctx, 0)
                count = count_segment(session, expression, config=config, now=now)
                # Names only in a private chat: a group must not see who is in a segment.
                shown = (
                    preview_segment(session, expression, config=config, now=now, limit=PREVIEW)
                    if ctx.event.is_private
                    else []
                )
                ctx.reply(
                    "segment_result",
                    expression=expression,
                    count=count,
                    names=[c.display_name or f"#{c.id}" for c in shown],
                )
        except SegmentError as exc:
            ctx.reply("customers_error", error=explain(exc, ctx.locale) or exc.text(ctx.locale))

    def rule(self, ctx: Context) -> None:
        sub = ctx.event.args[0].lower() if ctx.event.args else ""
        session = ctx.session
        if sub == "add":
            try:
                fields = parse_rule(_rest(ctx, 1))
            except RuleSyntaxError as exc:
                ctx.reply("customers_error", error=str(exc))
                return
            row = add_rule(session, fields, created_by=self._who(ctx), now=ctx.now)
            self.rules.invalidate()
            ctx.reply("rule_added", rule=describe_rule(row))
        elif sub == "list":
            ctx.reply("rule_list", rules=[describe_rule(r) for r in active_rules(session)])
        elif sub in ("del", "delete"):
            raw = ctx.event.args[1].lstrip("#") if len(ctx.event.args) > 1 else ""
            removed = (
                remove_rule(session, int(raw), ctx.now) if raw.isdigit() and len(raw) < 19 else None
            )
            if removed is None:
                ctx.reply("customers_error", error=f"no active rule #{raw or '?'} (see /rule list)")
                return
            self.rules.invalidate()
            ctx.reply("rule_deleted", rule=describe_rule(removed))
        else:
            ctx.reply("customers_error", error="/rule add | list | del <id>")


def profile(ctx: Context) -> None:
    """``/profile``: show a member's profile card, or set one attribute."""
    identity, args = command_target(ctx, create=bool(ctx.event.args))
    if identity is None:
        ctx.reply(
            "customers_error",
            error=t("customer.profile_usage", ctx.locale, attributes=", ".join(ATTRIBUTES)),
        )
        return
    if args:
        key = ALIASES.get(args[0].lower(), args[0].lower())
        value = " ".join(args[1:]).strip()
        if not value:
            ctx.reply(
                "customers_error",
                error=t("customer.profile_value_usage", ctx.locale, attribute=key[:40]),
            )
            return
        try:
            local = ctx.now.astimezone(ZoneInfo(ctx.config.general.timezone)).date()
            attrs = validate_attributes({key: "" if value == "-" else value}, today=local)
            result = upsert_profile(
                ctx.session,
                identity=(identity.channel, identity.external_id),
                attrs=attrs,
                now=ctx.now,
                default_locale=ctx.config.general.locale,
                default_timezone=ctx.config.general.timezone,
                create=False,
            )
        except ProfileInputError as exc:
            ctx.reply("customers_error", error=exc.text(ctx.locale))
            return
        except ProfileConflict as exc:
            ctx.reply("customers_error", error=str(exc))
            return
        shown = attrs[key]
        if key == "birthday":
            shown = format_birthday(cast("date | None", shown))  # parsed as a date
        elif key == "phone" and shown and not ctx.event.is_private:
            shown = repos.mask_phone(str(shown))
        ctx.reply(
            "profile_updated",
            name=identity.customer.display_name or identity.external_id,
            attribute=t(f"customer.attr.{key}", ctx.locale),
            value=shown or "",
            changed=bool(result.changed),
        )
        return
    customer = identity.customer
    score = score_of(ctx.session, customer.id)
    phone = customer.phone
    if phone and not ctx.event.is_private:
        phone = repos.mask_phone(phone)
    ctx.reply(
        "profile_card",
        name=customer.display_name or identity.external_id,
        user_id=identity.external_id,
        phone=phone or "",
        birthday=format_birthday(customer.birthday) or "",
        city=customer.city or "",
        locale=customer.locale,
        timezone=customer.timezone,
        tier=(score.tier if score else None) or "",
        stage=score.lifecycle if score else "new",
        tags=[t.tag.name for t in repos.tags_of(ctx.session, customer.id, ctx.now)],
        interests=[
            {"tag": i.tag, "score": round(i.score, 1)}
            for i in interests_of(ctx.session, customer.id, ctx.now, limit=5)
        ],
    )
