"""Telegram updates → Siyu events (platform types stop here).

One update gives at most one :class:`~bot.core.events.Event`; updates Siyu does not act on
(channel posts, service messages, promotions of members, other bots' messages, unknown
update types) give None and are skipped by the adapter.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from telegram import CallbackQuery, Chat, ChatMemberUpdated, Message, Update, User

from bot.core.events import Actor, ChatType, ConversationRef, Event, EventKind, parse_command

__all__ = ["CHANNEL", "admin_change", "locale_of", "to_event"]

CHANNEL = "telegram"

_MEMBER_STATUSES = frozenset({"member", "administrator", "creator"})
_ADMIN_STATUSES = frozenset({"administrator", "creator"})
_GROUP_TYPES = frozenset({Chat.GROUP, Chat.SUPERGROUP})


def locale_of(user: User) -> str | None:
    """Siyu's locale for a Telegram language code (None if we have no templates for it)."""
    code = (user.language_code or "").lower()
    if code.startswith("zh"):
        return "zh-CN"
    if code.startswith("en"):
        return "en"
    return None


def _actor(user: User) -> Actor:
    return Actor(str(user.id), user.full_name, locale_of(user))


def _chat_type(chat: Chat) -> ChatType | None:
    if chat.type == Chat.PRIVATE:
        return ChatType.PRIVATE
    if chat.type in _GROUP_TYPES:
        return ChatType.GROUP
    return None  # channels


def _is_member(member) -> bool:
    if member.status in _MEMBER_STATUSES:
        return True
    return member.status == "restricted" and bool(getattr(member, "is_member", False))


def _base(
    update: Update, chat: Chat, user: User, when: datetime | None, raw: Mapping, now: datetime
) -> dict | None:
    chat_type = _chat_type(chat)
    if chat_type is None:
        return None
    return {
        "ref": ConversationRef(CHANNEL, str(chat.id), str(user.id)),
        "platform_id": str(update.update_id),
        "actor": _actor(user),
        "chat_type": chat_type,
        "chat_title": chat.title or "",
        "occurred_at": when or now,
        "raw": raw,
    }


def _reply_target(message: Message) -> Actor | None:
    replied = message.reply_to_message
    if replied is None or replied.from_user is None or replied.from_user.is_bot:
        return None
    if replied.forum_topic_created is not None:  # a "reply" to the topic header
        return None
    return _actor(replied.from_user)


def _mentions_bot(message: Message, text: str, bot_username: str) -> bool:
    """``@bot`` in the text, or a reply to one of the bot's messages."""
    if not bot_username:
        return False
    if f"@{bot_username}".lower() in text.lower():
        return True
    replied = message.reply_to_message
    author = replied.from_user if replied is not None else None
    return bool(
        author and author.is_bot and (author.username or "").lower() == bot_username.lower()
    )


def _message(
    update: Update, message: Message, edited: bool, bot_username: str, raw: Mapping, now: datetime
) -> Event | None:
    user = message.from_user
    if user is None or user.is_bot:
        return None
    if message.new_chat_members or message.left_chat_member or message.pinned_message:
        return None  # service messages; joins and leaves come as chat_member updates
    base = _base(update, message.chat, user, message.edit_date or message.date, raw, now)
    if base is None:
        return None
    text = message.text or message.caption or ""
    if not text and message.effective_attachment is None:
        return None  # other service messages (topic created, video chat started, ...)
    reply_to = _reply_target(message)
    base["mentions_bot"] = _mentions_bot(message, text, bot_username)
    if edited:
        return Event(kind=EventKind.EDITED, text=text, reply_to=reply_to, **base)
    parsed = parse_command(text, bot_username) if message.text else None
    if parsed:
        name, args = parsed
        return Event(
            kind=EventKind.COMMAND, text=text, command=name, args=args, reply_to=reply_to, **base
        )
    return Event(kind=EventKind.MESSAGE, text=text, reply_to=reply_to, **base)


def _button(update: Update, query: CallbackQuery, raw: Mapping, now: datetime) -> Event | None:
    if query.data is None:
        return None
    message = query.message
    chat = message.chat if message is not None else None
    if chat is None:  # a button on an inline-mode message: answer in the private chat
        chat = Chat(id=query.from_user.id, type=Chat.PRIVATE)
    base = _base(update, chat, query.from_user, None, raw, now)
    if base is None:
        return None
    return Event(kind=EventKind.BUTTON, button_data=query.data, **base)


def _member(update: Update, change: ChatMemberUpdated, raw: Mapping, now: datetime) -> Event | None:
    was, is_now = _is_member(change.old_chat_member), _is_member(change.new_chat_member)
    if was == is_now:
        return None  # promotion, restriction, ...: nothing for the customer record
    user = change.new_chat_member.user
    if user.is_bot:
        return None
    base = _base(update, change.chat, user, change.date, raw, now)
    if base is None or base["chat_type"] is not ChatType.GROUP:
        return None
    return Event(kind=EventKind.JOIN if is_now else EventKind.LEAVE, **base)


def _bot_membership(
    update: Update, change: ChatMemberUpdated, raw: Mapping, now: datetime
) -> Event | None:
    if change.chat.type not in _GROUP_TYPES:
        return None  # a private chat blocked/unblocked: seen as 403 when sending
    was, is_now = _is_member(change.old_chat_member), _is_member(change.new_chat_member)
    if was == is_now:
        return None
    base = _base(update, change.chat, change.from_user, change.date, raw, now)
    if base is None:
        return None
    return Event(kind=EventKind.BOT_ADDED if is_now else EventKind.BOT_REMOVED, **base)


def admin_change(update: Update) -> str | None:
    """The group whose admin list this update may have changed (to refresh the cache)."""
    change = update.chat_member or update.my_chat_member
    if change is None:
        return None
    statuses = {change.old_chat_member.status, change.new_chat_member.status}
    if statuses & _ADMIN_STATUSES and len(statuses) > 1:
        return str(change.chat.id)
    return None


def to_event(update: Update, raw: Mapping, *, bot_username: str, now: datetime) -> Event | None:
    """The event for one update, or None if Siyu does not act on it."""
    if update.message is not None:
        return _message(update, update.message, False, bot_username, raw, now)
    if update.edited_message is not None:
        return _message(update, update.edited_message, True, bot_username, raw, now)
    if update.callback_query is not None:
        return _button(update, update.callback_query, raw, now)
    if update.chat_member is not None:
        return _member(update, update.chat_member, raw, now)
    if update.my_chat_member is not None:
        return _bot_membership(update, update.my_chat_member, raw, now)
    return None
