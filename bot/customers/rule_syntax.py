"""The text form of a tagging rule (``/rule add ...``, the console's rule form), and adding
and removing database rules — one implementation for the chat command and the console.

``keyword <tag> <kw1,kw2> [exclude=a,b] [ttl=30] [weight=2]``
``event <tag> <join|button|scene|coupon|link>=<value> [ttl=30]``
``activity <tag> <N>/<D>d [group=<chat id>|*] [silent=30]``
"""

from __future__ import annotations

import shlex
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.app.config import EVENT_TRIGGERS
from storage.tag_rules import TagRule

__all__ = [
    "RuleSyntaxError",
    "add_rule",
    "describe_rule",
    "edit_rule",
    "parse_rule",
    "remove_rule",
    "rule_line",
]

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


def rule_line(rule: TagRule) -> str:
    """The rule as the text :func:`parse_rule` reads (what ``/rule add`` takes): the
    console's edit form starts from it."""
    spec = rule.spec or {}
    if rule.kind == "keyword":
        words = [",".join(spec.get("keywords", []))]
        if spec.get("exclude"):
            words.append("exclude=" + ",".join(spec["exclude"]))
    elif rule.kind == "event":
        words = [f"{spec.get('trigger')}={spec.get('value')}"]
    else:
        words = [f"{spec.get('min_messages')}/{spec.get('days')}d",
                 f"group={spec.get('group')}", f"silent={spec.get('silent_days')}"]  # fmt: skip
    if rule.ttl_days:
        words.append(f"ttl={rule.ttl_days}")
    if rule.kind != "activity" and rule.weight != 1:
        words.append(f"weight={rule.weight:g}")
    return " ".join(_quoted(w) for w in [rule.kind, rule.tag, *words])


def _quoted(word: str) -> str:
    """``word`` as one shell-like word (quoted only when it has to be, so 早餐 stays 早餐)."""
    needs = not word or any(c.isspace() or c in "'\"\\" for c in word)
    return shlex.quote(word) if needs else word


def edit_rule(
    session: Session, rule_id: int, fields: dict[str, Any], now: datetime
) -> TagRule | None:
    """Change active rule ``rule_id`` in place to ``fields`` (parsed by :func:`parse_rule`):
    it keeps its id, author and the source of the tags it gave; ``updated_at`` moves, so
    running processes reload their rules. None if there is no such active rule."""
    row = session.scalars(
        select(TagRule).where(TagRule.id == rule_id, TagRule.active.is_(True))
    ).one_or_none()
    if row is None:
        return None
    for name, value in fields.items():
        setattr(row, name, value)
    row.updated_at = now
    session.flush()
    return row


def add_rule(
    session: Session, fields: dict[str, Any], *, created_by: str, now: datetime
) -> TagRule:
    """Store a rule parsed by :func:`parse_rule` (processes reload rules when they change)."""
    row = TagRule(**fields, active=True, created_by=created_by, created_at=now, updated_at=now)
    session.add(row)
    session.flush()
    return row


def remove_rule(session: Session, rule_id: int, now: datetime) -> TagRule | None:
    """Deactivate an active rule (its tags keep their source); None if there is none."""
    row = session.scalars(
        select(TagRule).where(TagRule.id == rule_id, TagRule.active.is_(True))
    ).one_or_none()
    if row is not None:
        row.active, row.updated_at = False, now
    return row
