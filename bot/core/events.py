"""The one normalized inbound event that every adapter produces.

Platform SDK types never leave ``bot/adapters/``: an adapter verifies a platform payload and
turns it into an :class:`Event`. Everything after that (router, handlers, storage) sees only
these types.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Any

__all__ = ["Actor", "Button", "ChatType", "ConversationRef", "Event", "EventKind", "parse_command"]


@dataclass(frozen=True, slots=True)
class Button:
    """An inline button: its label and the data sent back when pressed."""

    label: str
    data: str


class EventKind(StrEnum):
    """What happened."""

    MESSAGE = "message"
    COMMAND = "command"
    BUTTON = "button"
    EDITED = "edited"
    JOIN = "join"
    LEAVE = "leave"
    BOT_ADDED = "bot_added"
    BOT_REMOVED = "bot_removed"
    SUBSCRIBE = "subscribe"
    UNSUBSCRIBE = "unsubscribe"
    CONTACT_ADDED = "contact_added"
    CONTACT_REMOVED = "contact_removed"
    MENU = "menu"


class ChatType(StrEnum):
    """Where it happened: a 1:1 chat with the bot or a community group."""

    PRIVATE = "private"
    GROUP = "group"


@dataclass(frozen=True, slots=True)
class ConversationRef:
    """The one key for conversation state, locks and sending: channel, chat and user.

    In a 1:1 chat ``chat_id`` is the private chat; in a group it is the group, and each
    member of the group has a conversation of their own there.
    """

    channel: str
    chat_id: str
    user_id: str

    def __str__(self) -> str:
        return f"{self.channel}:{self.chat_id}:{self.user_id}"


@dataclass(frozen=True, slots=True)
class Actor:
    """Who did it, as far as the platform tells us."""

    user_id: str
    display_name: str = ""
    locale: str | None = None
    is_platform_admin: bool = False


def _freeze(raw: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(raw or {}))


@dataclass(frozen=True, slots=True)
class Event:
    """A platform-neutral inbound event.

    ``platform_id`` is the platform's own id for it (Telegram update_id, WeChat MsgId or
    event key, sandbox message id): inbound dedupe and reply idempotency keys use it.
    """

    kind: EventKind
    ref: ConversationRef
    platform_id: str
    actor: Actor
    chat_type: ChatType = ChatType.PRIVATE
    chat_title: str = ""
    text: str = ""
    command: str | None = None
    args: tuple[str, ...] = ()
    button_data: str | None = None
    #: The author of the message this one answers (platforms with replies; managers'
    #: /whois, /tag and /untag act on them).
    reply_to: Actor | None = None
    #: The message mentions the bot or answers one of its messages (FAQ answers in groups).
    mentions_bot: bool = False
    occurred_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    raw: Mapping[str, Any] = field(default_factory=dict)
    id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def __post_init__(self) -> None:
        object.__setattr__(self, "raw", _freeze(self.raw))
        object.__setattr__(self, "args", tuple(self.args))

    @property
    def channel(self) -> str:
        return self.ref.channel

    @property
    def is_private(self) -> bool:
        return self.chat_type is ChatType.PRIVATE

    @property
    def dedupe_key(self) -> str:
        return f"{self.ref.channel}:{self.platform_id}"


def parse_command(text: str, bot_username: str | None = None) -> tuple[str, tuple[str, ...]] | None:
    """Split ``/cmd@bot arg1 arg2`` into ``("cmd", ("arg1", "arg2"))``.

    Returns None for text that is not a command, or a command addressed to another bot.
    """
    stripped = text.strip()
    if not stripped.startswith("/") or len(stripped) < 2:
        return None
    head, *rest = stripped.split(maxsplit=1)
    name, _, target = head[1:].partition("@")
    if not name or not all(c.isalnum() or c == "_" for c in name):
        return None
    if target and bot_username and target.lower() != bot_username.lower():
        return None
    args = tuple(rest[0].split()) if rest else ()
    return name.lower(), args
