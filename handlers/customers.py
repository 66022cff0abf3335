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

import shlex
from datetime import date
from typing import Any, cast
from zoneinfo import ZoneInfo

from bot.app.config import EVENT_TRIGGERS
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
from storage.tag_rules import TagRule, active_rule, active_rules
from storage.tag_scores import interests_of

__all__ = ["CustomerCommands", "RuleSyntaxError", "parse_rule"]

PREVIEW = 5
MAX_KEYWORDS = 200


class RuleSyntaxError(ValueError):
    """A ``/rule add`` that cannot be understood; the message says how to write it."""


def _days(raw: str, name: str) -> int:
    text = raw[:-1] if raw.endswith("d") else raw
    if not text.isdigit() or int(text) > 3650:
        raise RuleSyntaxError(f"{name} must be a number of days (0-3650), got {raw!r}")
    return int(text)


def _options(parts: list[str], allowed: tuple[str, ...]) -> dict[str, str]:
    options = {}
    for part in parts:
        key, sep, value = part.partition("=")
        if not sep or key not in allowed:
            raise RuleSyntaxError(
                f"unexpected {part!r} (options here: {', '.join(k + '=' for k in allowed)})"
            )
        options[key] = value
    return options


def parse_rule(text: str) -> dict[str, Any]:
    """Parse the words after ``/rule add`` into a TagRule's fields."""
    try:
        words = shlex.split(text)
    except ValueError as exc:
        raise RuleSyntaxError(f"cannot read the rule: {exc}") from None
    if len(words) < 3:
        raise RuleSyntaxError("usage: /rule add keyword|event|activity <tag> <what> [options]")
    kind, tag, what, rest = words[0].lower(), words[1], words[2], words[3:]
    if not tag or len(tag) > 64:
        raise RuleSyntaxError("a tag is 1-64 characters")
    fields: dict[str, Any] = {"kind": kind, "tag": tag, "weight": 1.0, "ttl_days": 0}
    if kind == "keyword":
        opts = _options(rest, ("exclude", "ttl", "weight"))
        keywords = [k.strip() for k in what.split(",") if k.strip()]
        exclude = [k.strip() for k in opts.get("exclude", "").split(",") if k.strip()]
        if not keywords or len(keywords) + len(exclude) > MAX_KEYWORDS:
            raise RuleSyntaxError(f"give 1-{MAX_KEYWORDS} keywords separated by commas")
        fields["spec"] = {"keywords": keywords, "exclude": exclude}
    elif kind == "event":
        opts = _options(rest, ("ttl", "weight"))
        trigger, sep, value = what.partition("=")
        if not sep or trigger not in EVENT_TRIGGERS or not value:
            raise RuleSyntaxError(
                f"write the event as <trigger>=<value> with trigger one of "
                f"{', '.join(EVENT_TRIGGERS)} (value * = any), got {what!r}"
            )
        fields["spec"] = {"trigger": trigger, "value": value}
    elif kind == "activity":
        opts = _options(rest, ("group", "silent"))
        count, sep, days = what.partition("/")
        if not sep or not count.isdigit() or int(count) < 1:
            raise RuleSyntaxError(f"write activity as <messages>/<days>d, e.g. 5/7d, got {what!r}")
        window = _days(days, "the window")
        if window < 1:
            raise RuleSyntaxError("the window must be at least 1 day")
        silent = _days(opts.get("silent", "30"), "silent")
        if silent < 1:
            raise RuleSyntaxError("silent must be at least 1 day")
        fields["spec"] = {
            "min_messages": int(count),
            "days": window,
            "group": opts.get("group", "*") or "*",
            "silent_days": silent,
        }
    else:
        raise RuleSyntaxError(f"unknown rule kind {kind!r} (keyword, event or activity)")
    if "ttl" in opts:
        fields["ttl_days"] = _days(opts["ttl"], "ttl")
    if "weight" in opts:
        try:
            fields["weight"] = float(opts["weight"])
        except ValueError:
            raise RuleSyntaxError(f"weight must be a number, got {opts['weight']!r}") from None
        if not 0 < fields["weight"] <= 1000:
            raise RuleSyntaxError(
                f"weight must be greater than 0 and at most 1000, got {opts['weight']}"
            )
    return fields


def describe_rule(rule: TagRule) -> str:
    spec = rule.spec or {}
    if rule.kind == "keyword":
        what = ",".join(spec.get("keywords", []))
        if spec.get("exclude"):
            what += " exclude=" + ",".join(spec["exclude"])
    elif rule.kind == "event":
        what = f"{spec.get('trigger')}={spec.get('value')}"
    else:
        what = (
            f"{spec.get('min_messages')}/{spec.get('days')}d group={spec.get('group')} "
            f"silent={spec.get('silent_days')}"
        )
    ttl = f" ttl={rule.ttl_days}" if rule.ttl_days else ""
    weight = f" weight={rule.weight:g}" if rule.kind != "activity" and rule.weight != 1 else ""
    return f"#{rule.id} {rule.kind} {rule.tag}: {what}{ttl}{weight}"


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
            row = TagRule(
                **fields,
                active=True,
                created_by=self._who(ctx),
                created_at=ctx.now,
                updated_at=ctx.now,
            )
            session.add(row)
            session.flush()
            self.rules.invalidate()
            ctx.reply("rule_added", rule=describe_rule(row))
        elif sub == "list":
            ctx.reply("rule_list", rules=[describe_rule(r) for r in active_rules(session)])
        elif sub in ("del", "delete"):
            raw = ctx.event.args[1].lstrip("#") if len(ctx.event.args) > 1 else ""
            found = active_rule(session, int(raw)) if raw.isdigit() else None
            if found is None:
                ctx.reply("customers_error", error=f"no active rule #{raw or '?'} (see /rule list)")
                return
            found.active, found.updated_at = False, ctx.now
            self.rules.invalidate()
            ctx.reply("rule_deleted", rule=describe_rule(found))
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
