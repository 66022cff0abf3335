"""Keeping groups clean: rules per group, the actions they take, and the audit of each.

Settings per group (``/mod``): delete links and invites from members who joined less than
N days ago (``/mod links 3``); a flood limit, N messages in M seconds → mute for K minutes
(``/mod flood 5 10 30``); newcomers confirm with a button within N minutes or are removed,
and may rejoin (``/mod captcha 5``); banned words, deleted with a warning (``/mod words add
代购``); warnings before a mute (``/mod warns 3 60``). Admins and managers are never
checked. ``/warn`` (the limit's warning mutes), ``/mute [minutes]``, ``/ban`` and
``/unban`` act on the member whose message they answer. The console's Groups page edits the
same settings through the same check (:func:`revised`) and store (:func:`save_settings`).

Every action is a :class:`~storage.groups.ModerationAction` (who, whom, what, why; also in
the staff audit log) made by :func:`act`, the one path. Where the bot can act (Telegram,
as an admin) the platform operation is an outbox row (purpose ``moderation``, extra
``{"moderation": {...}}``) that the delivery worker hands to the adapter like any message:
durable, retried, in order with the group's messages, and its outcome recorded. Where it
cannot (WeChat, WeCom, the sandbox), the action is recorded as a ``report`` and the managers
(``[groups] report_to``) get a message instead.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bot.app.config import Config
from bot.core.events import ConversationRef
from bot.core.i18n import t
from bot.core.templating import Renderer
from bot.groups.errors import GroupsError, Label, about
from bot.outbox import queue as outbox
from storage.db import insert_ignore
from storage.groups import GroupModeration, GroupWarning, ModerationAction, NewcomerCheck
from storage.handoff import AuditEntry
from storage.models import Group, Interaction

__all__ = [
    "ACTS_ON",
    "CONFIRM_PREFIX",
    "NUMBERS",
    "Settings",
    "act",
    "check_message",
    "configure",
    "confirm_newcomer",
    "expire_newcomers",
    "group_rules",
    "newcomer_joined",
    "recent_actions",
    "revised",
    "save_settings",
    "settings_of",
    "split_words",
    "warn",
]

#: Channels where the bot deletes, mutes and removes itself (it must be an admin there).
ACTS_ON = frozenset({"telegram"})
#: Actions that are platform operations (the rest are only recorded).
PLATFORM_OPS = frozenset({"delete", "mute", "unmute", "ban", "unban", "remove", "restrict"})
CONFIRM_PREFIX = "grp:ok:"
PURPOSE = "moderation"
MAX_WORDS = 200
MAX_WORD = 50
MAX_MINUTES = 366 * 24 * 60

LINK = re.compile(
    r"(https?://|www\.|t\.me/|telegram\.(?:me|dog)/|tg://|"
    r"\b[\w-]+\.(?:com|cn|net|org|io|me|xyz|top|vip|shop|info|cc|co|app|link|ly|ru|tk)\b)",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Settings:
    """A group's moderation rules (0 turns a rule off)."""

    links_days: int = 0
    flood_count: int = 0
    flood_seconds: int = 10
    flood_mute_minutes: int = 10
    captcha_minutes: int = 0
    banned_words: tuple[str, ...] = ()
    warn_limit: int = 3
    warn_mute_minutes: int = 60

    def as_dict(self) -> dict:
        return dataclasses.asdict(self) | {"banned_words": list(self.banned_words)}


#: Settings per (database, group), read again after CACHE_SECONDS (a change made by another
#: process shows within that time) or at once after a change in this process: members'
#: messages in groups without rules cost no query.
CACHE_SECONDS = 5.0
_cache: dict[tuple[str, int], tuple[int, float, Settings]] = {}
_generation = 0


def _stored(raw: Mapping[str, Any] | None) -> Settings:
    """The settings as stored (a JSON object; unknown keys ignored, missing ones default)."""
    if not raw:
        return Settings()
    known = {f.name for f in dataclasses.fields(Settings)}
    values = {k: v for k, v in raw.items() if k in known}
    values["banned_words"] = tuple(values.get("banned_words") or ())
    return Settings(**values)


def settings_of(session: Session, group_id: int) -> Settings:
    """A group's rules (the defaults, every rule off, if none were set)."""
    key = (str(session.get_bind().engine.url), group_id)
    cached = _cache.get(key)
    now = time.monotonic()
    if cached is not None and cached[0] == _generation and now - cached[1] < CACHE_SECONDS:
        return cached[2]
    row = session.get(GroupModeration, group_id)
    settings = _stored(row.settings if row is not None else None)
    if len(_cache) > 10_000:
        _cache.clear()
    _cache[key] = (_generation, now, settings)
    return settings


#: The number rules: field → (lowest, highest, what it counts, whether 0 turns it off).
NUMBERS: dict[str, tuple[int, int, str, bool]] = {
    "links_days": (1, 365, "days", True),
    "flood_count": (2, 100, "messages", True),
    "flood_seconds": (1, 3600, "seconds", False),
    "flood_mute_minutes": (1, MAX_MINUTES, "minutes", False),
    "captcha_minutes": (1, 1440, "minutes", True),
    "warn_limit": (1, 10, "warnings", False),
    "warn_mute_minutes": (1, MAX_MINUTES, "minutes", False),
}
#: what turns a rule off in a chat command or a form field
OFF = ("off", "关闭", "关", "0")
#: how a list of banned words typed in one text is split (lines, commas, the 、 of Chinese)
WORD_SEPARATORS = re.compile(r"[\n\r,，、;；]+")


def _number(name: str, value: object) -> int:
    low, high, what, may_be_off = NUMBERS[name]
    text = str(value).strip().lower()
    if may_be_off and text in OFF:
        return 0
    try:
        number = int(text) if len(text) <= 12 else low - 1
    except ValueError:
        number = low - 1
    if not low <= number <= high:
        key = "groups.mod.error.number_or_off" if may_be_off else "groups.mod.error.number"
        raise GroupsError(key, what=Label(f"groups.mod.what.{what}"), low=low, high=high)
    return number


def split_words(text: str) -> list[str]:
    """The banned words of one text: one per line or between commas (、，;)."""
    return [w for w in (part.strip() for part in WORD_SEPARATORS.split(text)) if w]


def _words(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        words = split_words(value)
    elif isinstance(value, list | tuple):
        words = [str(w) for w in value]
    else:
        raise GroupsError("groups.mod.usage")
    kept: list[str] = []
    for word in (w.strip().lower() for w in words):
        if len(word) > MAX_WORD:
            raise GroupsError("groups.mod.error.word", limit=MAX_WORD)
        if word and word not in kept:
            kept.append(word)
    if len(kept) > MAX_WORDS:
        raise GroupsError("groups.mod.error.words", limit=MAX_WORDS)
    return tuple(kept)


def revised(current: Settings, changes: Mapping[str, object]) -> Settings:
    """``current`` with ``changes`` — a field of :class:`Settings` → its new value (a number
    or its text; ``off`` or 0 turns a rule off; ``banned_words`` a list, or one text of
    words) — each checked against its bounds. The one check of ``/mod`` and the console's
    form: a :class:`GroupsError` names the field it is about (``exc.field``)."""
    values: dict[str, Any] = {}
    for name, value in changes.items():
        with about(name):
            if name == "banned_words":
                values[name] = _words(value)
            elif name in NUMBERS:
                values[name] = _number(name, value)
            else:
                raise GroupsError("groups.mod.usage")
    return dataclasses.replace(current, **values)


def save_settings(
    session: Session, group: Group, settings: Settings, actor: str, now: datetime
) -> Settings:
    """Store a group's rules (checked by :func:`revised`); this process reads them at once,
    others within :data:`CACHE_SECONDS`."""
    row = session.get(GroupModeration, group.id)
    if row is None:
        row = GroupModeration(group_id=group.id)
        session.add(row)
    row.settings = settings.as_dict()
    row.updated_by = actor[:128]
    row.updated_at = now
    global _generation
    _generation += 1
    return settings


def _chat_changes(current: Settings, rule: str, rest: list[str]) -> dict[str, object]:
    """The changes of one ``/mod`` rule's arguments (see the module docstring)."""
    off = bool(rest) and rest[0].lower() in OFF
    if rule == "links" and rest:
        return {"links_days": rest[0]}
    if rule == "flood" and off:
        return {"flood_count": 0}
    if rule == "flood" and len(rest) == 3:
        return dict(zip(("flood_count", "flood_seconds", "flood_mute_minutes"), rest, strict=True))
    if rule == "captcha" and rest:
        return {"captcha_minutes": rest[0]}
    if rule == "warns" and len(rest) == 2:
        return {"warn_limit": rest[0], "warn_mute_minutes": rest[1]}
    if rule == "words" and len(rest) >= 2 and rest[0].lower() in ("add", "del"):
        words = [w.strip().lower() for w in rest[1:] if w.strip()]
        kept = list(current.banned_words)
        if rest[0].lower() == "add":
            kept += [w for w in words if w not in kept]
        else:
            kept = [w for w in kept if w not in words]
        return {"banned_words": kept}
    raise GroupsError("groups.mod.usage")


def configure(
    session: Session, group: Group, args: list[str], actor: str, now: datetime
) -> Settings:
    """Change one rule from ``/mod`` arguments; the new settings (see the module docstring)."""
    current = settings_of(session, group.id)
    if not args:
        return current
    changes = _chat_changes(current, args[0].lower(), args[1:])
    return save_settings(session, group, revised(current, changes), actor, now)


# -- the one path of every action ------------------------------------------------------


def act(
    session: Session,
    *,
    group: Group,
    user_id: str,
    user_name: str,
    action: str,
    reason: str,
    actor: str,
    now: datetime,
    config: Config,
    renderer: Renderer,
    detail: str = "",
    message_id: int | None = None,
    minutes: int | None = None,
    notice: bool = False,
) -> ModerationAction:
    """Record one moderation action and carry it out (or report it); see the module docs.

    ``notice`` also tells the group (in the brand's locale) what happened to whom.
    """
    until = now + timedelta(minutes=minutes) if minutes else None
    acts = group.channel in ACTS_ON or action not in PLATFORM_OPS
    row = ModerationAction(
        group_id=group.id,
        user_id=user_id[:128],
        user_name=(user_name or "")[:200],
        action=action if acts else "report",
        reason=reason[:32],
        detail=(detail if acts else f"{action}: {detail}".strip(": "))[:1000],
        actor=actor[:128],
        until=until,
        created_at=now,
    )
    session.add(row)
    session.flush()
    if acts and action in PLATFORM_OPS:
        op: dict = {"op": action, "user_id": user_id}
        if message_id is not None:
            op["message_id"] = message_id
        if until is not None:
            op["until"] = int(until.timestamp())
        row.outbox_key = f"mod:{row.id}"
        outbox.enqueue(
            session,
            key=row.outbox_key,
            to=ConversationRef(group.channel, group.external_id, user_id),
            text=f"{action} {user_id} ({reason})",
            purpose=PURPOSE,
            priority=10,
            extra={"moderation": op},
            now=now,
        )
    locale = config.general.locale
    name = user_name or user_id
    if not acts:
        _report(session, row, group, action, name, config, renderer, now)
    elif notice:
        text = t(
            f"groups.mod.notice.{action}",
            locale,
            name=name,
            minutes=minutes or 0,
            reason=t(f"groups.mod.reason.{reason}", locale),
        )
        outbox.enqueue(
            session,
            key=f"modnote:{row.id}",
            to=ConversationRef(group.channel, group.external_id, ""),
            text=text,
            purpose=PURPOSE,
            now=now,
        )
    session.add(
        AuditEntry(
            actor=actor[:64],
            action=f"group.{row.action}"[:32],
            detail={
                "group": f"{group.channel}:{group.external_id}",
                "user": user_id,
                "reason": reason,
                "detail": row.detail,
                "until": until.isoformat() if until else None,
            },
            created_at=now,
        )
    )
    return row


def _report(session, row, group, action, name, config, renderer, now) -> None:
    locale = config.general.locale
    text = renderer.render(
        "groups_mod_report",
        locale,
        group=group.title or group.external_id,
        channel=group.channel,
        name=name,
        user_id=row.user_id,
        action=t(f"groups.mod.action.{action}", locale),
        reason=t(f"groups.mod.reason.{row.reason}", locale),
        detail=row.detail.partition(": ")[2] if ": " in row.detail else "",
    )
    chats = config.groups.report_to or config.roles.managers
    for item in chats:
        channel, _, chat = item.partition(":")
        outbox.enqueue(
            session,
            key=f"modreport:{row.id}:{item}"[:200],
            to=ConversationRef(channel, chat, chat),
            text=text,
            purpose=PURPOSE,
            now=now,
        )


# -- rules on members' messages --------------------------------------------------------


def _has_link(text: str, raw: Mapping) -> bool:
    if LINK.search(text):
        return True
    message = raw.get("message") or raw.get("edited_message") or {}
    entities = [*(message.get("entities") or ()), *(message.get("caption_entities") or ())]
    return any(e.get("type") in ("url", "text_link") for e in entities if isinstance(e, Mapping))


def message_id_of(raw: Mapping) -> int | None:
    """The platform message id of a Telegram message update (to delete it)."""
    message = raw.get("message") or raw.get("edited_message") or {}
    value = message.get("message_id") if isinstance(message, Mapping) else None
    return value if isinstance(value, int) else None


def check_message(
    session: Session,
    *,
    group: Group,
    customer_id: int,
    user_id: str,
    user_name: str,
    text: str,
    raw: Mapping,
    now: datetime,
    config: Config,
    renderer: Renderer,
) -> bool:
    """Apply the group's rules to a member's message; True if it was deleted (or reported
    for deletion), so nothing else should answer it."""
    rules = settings_of(session, group.id)
    common: dict[str, Any] = {
        "group": group,
        "user_id": user_id,
        "user_name": user_name,
        "actor": "system",
        "now": now,
        "config": config,
        "renderer": renderer,
    }
    message_id = message_id_of(raw)
    low = text.lower()
    word = next((w for w in rules.banned_words if w and w in low), None)
    if word is not None:
        act(session, action="delete", reason="banned_word", detail=word, message_id=message_id, **common)  # fmt: skip
        warn(session, reason="banned_word", **common)
        return True
    if rules.links_days and _has_link(text, raw):
        # a newcomer is someone whose joining Siyu saw lately (members from before the bot
        # was added, or whose join it never saw, are not)
        joined = session.scalar(
            select(func.max(Interaction.occurred_at)).where(
                Interaction.customer_id == customer_id,
                Interaction.channel == group.channel,
                Interaction.chat_id == group.external_id,
                Interaction.kind == "join",
            )
        )
        if joined is not None and joined > now - timedelta(days=rules.links_days):
            act(session, action="delete", reason="newcomer_link", detail=text[:200], message_id=message_id, **common)  # fmt: skip
            return True
    if rules.flood_count:
        recent = session.scalar(
            select(func.count())
            .select_from(Interaction)
            .where(
                Interaction.customer_id == customer_id,
                Interaction.channel == group.channel,
                Interaction.chat_id == group.external_id,
                Interaction.kind == "message",
                Interaction.occurred_at > now - timedelta(seconds=rules.flood_seconds),
            )
        )
        if (recent or 0) >= rules.flood_count and not _muted(session, group.id, user_id, now):
            act(
                session,
                action="mute",
                reason="flood",
                detail=f"{recent}/{rules.flood_seconds}s",
                minutes=rules.flood_mute_minutes,
                notice=True,
                **common,
            )
    return False


def _muted(session: Session, group_id: int, user_id: str, now: datetime) -> bool:
    return bool(
        session.scalar(
            select(func.count())
            .select_from(ModerationAction)
            .where(
                ModerationAction.group_id == group_id,
                ModerationAction.user_id == user_id,
                ModerationAction.action.in_(("mute", "report")),
                ModerationAction.until > now,
            )
        )
    )


def warn(
    session: Session,
    *,
    group: Group,
    user_id: str,
    user_name: str,
    reason: str,
    actor: str,
    now: datetime,
    config: Config,
    renderer: Renderer,
    note: str = "",
) -> tuple[int, bool]:
    """Warn a member; at the group's limit they are muted and their count starts over.
    Returns (warnings now, muted)."""
    rules = settings_of(session, group.id)
    key = {"group_id": group.id, "user_id": user_id}
    insert_ignore(session, GroupWarning, key | {"count": 0, "updated_at": now}, list(key))
    row = session.get(GroupWarning, (group.id, user_id))
    assert row is not None  # inserted just above
    row.count += 1
    row.updated_at = now
    count = row.count
    common: dict[str, Any] = {"group": group, "user_id": user_id, "user_name": user_name, "actor": actor,
              "now": now, "config": config, "renderer": renderer}  # fmt: skip
    warned = act(
        session,
        action="warn",
        reason=reason,
        detail=f"{count}/{rules.warn_limit} {note}".strip(),
        **common,
    )
    name = user_name or user_id
    if count < rules.warn_limit:
        outbox.enqueue(
            session,
            key=f"modnote:{warned.id}",
            to=ConversationRef(group.channel, group.external_id, ""),
            text=t(
                "groups.mod.notice.warn",
                config.general.locale,
                name=name,
                count=count,
                limit=rules.warn_limit,
                reason=t(f"groups.mod.reason.{reason}", config.general.locale),
            ),
            purpose=PURPOSE,
            now=now,
        )
        return count, False
    row.count = 0
    act(
        session,
        action="mute",
        reason="warn_limit",
        detail=f"{count}/{rules.warn_limit}",
        minutes=rules.warn_mute_minutes,
        notice=True,
        **common,
    )
    return count, True


# -- newcomers confirm with a button ----------------------------------------------------


def newcomer_joined(
    session: Session,
    *,
    group: Group,
    user_id: str,
    user_name: str,
    now: datetime,
    config: Config,
    renderer: Renderer,
) -> NewcomerCheck | None:
    """Mute a newcomer until they press the button (if the group asks for it)."""
    rules = settings_of(session, group.id)
    if not rules.captcha_minutes or group.channel not in ACTS_ON:
        return None
    check = session.get(NewcomerCheck, (group.id, user_id))
    if check is None:
        check = NewcomerCheck(group_id=group.id, user_id=user_id)
        session.add(check)
    check.user_name = (user_name or "")[:200]
    check.status = "waiting"
    check.deadline = now + timedelta(minutes=rules.captcha_minutes)
    check.created_at = now
    act(
        session,
        group=group,
        user_id=user_id,
        user_name=user_name,
        action="restrict",
        reason="newcomer_check",
        detail=f"{rules.captcha_minutes} min",
        actor="system",
        now=now,
        config=config,
        renderer=renderer,
    )
    return check


def confirm_newcomer(
    session: Session,
    *,
    group: Group,
    user_id: str,
    now: datetime,
    config: Config,
    renderer: Renderer,
) -> bool:
    """The newcomer pressed the button in time: lift the restriction."""
    check = session.get(NewcomerCheck, (group.id, user_id))
    if check is None or check.status != "waiting" or check.deadline < now:
        return False
    check.status = "confirmed"
    act(
        session,
        group=group,
        user_id=user_id,
        user_name=check.user_name,
        action="unmute",
        reason="newcomer_confirmed",
        actor="system",
        now=now,
        config=config,
        renderer=renderer,
    )
    return True


def expire_newcomers(services) -> int:
    """Remove the newcomers whose time to confirm ran out (they may rejoin); the job."""
    now = services.clock.now()
    with services.db.transaction() as session:
        due = list(
            session.scalars(
                select(NewcomerCheck)
                .where(NewcomerCheck.status == "waiting", NewcomerCheck.deadline < now)
                .limit(500)
                .with_for_update(skip_locked=True)
            )
        )
        for check in due:
            check.status = "removed"
            act(
                session,
                group=session.get(Group, check.group_id),
                user_id=check.user_id,
                user_name=check.user_name,
                action="remove",
                reason="newcomer_timeout",
                actor="system",
                now=now,
                config=services.config,
                renderer=services.renderer,
                notice=True,
            )
        return len(due)


def group_rules(
    session: Session, *, search: str = "", limit: int = 200
) -> tuple[list[tuple[Group, Settings, GroupModeration | None]], int]:
    """The groups (by title; those whose title or platform id contains ``search``) with
    their rules and who last changed them, at most ``limit``; and how many match."""
    query = select(Group, GroupModeration).join(
        GroupModeration, GroupModeration.group_id == Group.id, isouter=True
    )
    count = select(func.count()).select_from(Group)
    if search:
        matches = Group.title.icontains(search, autoescape=True) | Group.external_id.icontains(
            search, autoescape=True
        )
        query, count = query.where(matches), count.where(matches)
    rows = session.execute(query.order_by(Group.title, Group.id).limit(limit)).all()
    return [(g, _stored(m.settings if m else None), m) for g, m in rows], int(
        session.scalar(count) or 0
    )


def recent_actions(
    session: Session, group_id: int | None = None, limit: int = 20
) -> list[tuple[ModerationAction, Group, str | None]]:
    """The newest actions (of one group, or all) with the outcome of their platform op."""
    from storage.models import OutboxMessage

    query = (
        select(ModerationAction, Group, OutboxMessage.status)
        .join(Group, Group.id == ModerationAction.group_id)
        .join(
            OutboxMessage,
            OutboxMessage.idempotency_key == ModerationAction.outbox_key,
            isouter=True,
        )
        .order_by(ModerationAction.id.desc())
        .limit(limit)
    )
    if group_id is not None:
        query = query.where(ModerationAction.group_id == group_id)
    return [(r[0], r[1], r[2]) for r in session.execute(query).all()]
