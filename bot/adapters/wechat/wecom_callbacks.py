"""WeCom callbacks as Siyu events: the decrypted XML fields of one callback → ``Event``s.

wechatpy 1.8.18 parses ``change_external_contact`` / ``change_external_chat`` as
``UnknownMessage``, so the fields are read here:

* app text messages → message/command events of the staff member (chat ``app:<userid>``);
* ``add_external_contact`` / ``add_half_external_contact`` → ``contact_added`` (``State``
  is the source attribution); ``del_external_contact`` / ``del_follow_user`` →
  ``contact_removed``;
* ``change_external_chat`` ``update`` with ``add_member`` / ``del_member`` → one ``join`` /
  ``leave`` per member.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from bot.core.events import Actor, ChatType, ConversationRef, Event, EventKind, parse_command

__all__ = ["APP_PREFIX", "CHANNEL", "to_events"]

CHANNEL = "wecom"
#: Chat id prefix of a staff member's app conversation (``app:<userid>``).
APP_PREFIX = "app:"


def _items(value: object) -> list[str]:
    """Member ids from ``<MemChangeList><Item>..</Item></MemChangeList>``."""
    if isinstance(value, dict):
        value = value.get("Item", [])
    if isinstance(value, str):
        return [value] if value else []
    if not isinstance(value, list | tuple):
        return []
    return [str(v) for v in value if v]


def to_events(f: dict, now: datetime) -> list[Event]:
    """The normalized events of one callback (a member change may name several people);
    ``now`` stands in for a missing or broken ``CreateTime``."""
    sender = str(f.get("FromUserName", ""))
    try:
        created = datetime.fromtimestamp(int(f.get("CreateTime", 0) or 0), UTC)
    except (ValueError, OverflowError):
        created = now
    raw = dict(f)
    msg_type = str(f.get("MsgType", "")).lower()
    if msg_type == "text":
        text = str(f.get("Content", ""))
        ref = ConversationRef(CHANNEL, APP_PREFIX + sender, sender)
        common: dict[str, Any] = {
            "ref": ref,
            "platform_id": str(f.get("MsgId", "")),
            "actor": Actor(sender),
            "occurred_at": created,
            "raw": raw,
            "text": text,
        }
        parsed = parse_command(text)
        if parsed:
            return [Event(kind=EventKind.COMMAND, command=parsed[0], args=parsed[1], **common)]
        return [Event(kind=EventKind.MESSAGE, **common)]
    if msg_type != "event":
        return []
    name = str(f.get("Event", ""))
    change = str(f.get("ChangeType", ""))
    base = f"{sender}:{f.get('CreateTime', '')}:{name}:{change}"
    if name == "change_external_contact":
        ext = str(f.get("ExternalUserID", ""))
        if not ext:
            return []
        common = {
            "ref": ConversationRef(CHANNEL, ext, ext),
            "actor": Actor(ext),
            "occurred_at": created,
            "raw": raw,
            "platform_id": f"{base}:{ext}:{f.get('UserID', '')}",
        }
        if change in ("add_external_contact", "add_half_external_contact"):
            return [
                Event(
                    kind=EventKind.CONTACT_ADDED,
                    button_data=str(f.get("State", "")) or None,
                    **common,
                )
            ]
        if change in ("del_external_contact", "del_follow_user"):
            return [Event(kind=EventKind.CONTACT_REMOVED, **common)]
        return []
    if name == "change_external_chat" and change == "update":
        chat = str(f.get("ChatId", ""))
        detail = str(f.get("UpdateDetail", ""))
        kind = {"add_member": EventKind.JOIN, "del_member": EventKind.LEAVE}.get(detail)
        if kind is None or not chat:
            return []
        return [
            Event(
                kind=kind,
                ref=ConversationRef(CHANNEL, chat, member),
                actor=Actor(member),
                chat_type=ChatType.GROUP,
                occurred_at=created,
                raw=raw,
                platform_id=f"{base}:{chat}:{member}",
            )
            for member in _items(f.get("MemChangeList"))
        ]
    return []
