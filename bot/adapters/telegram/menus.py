"""Telegram command menus per scope, from the one command table (bot/core/commands.py).

Private chats get the customer's commands, groups the members' (/help), group admins the
admins' commands; each in Chinese (the default) and English (``language_code="en"``).
"""

from __future__ import annotations

import logging

from telegram import (
    Bot,
    BotCommand,
    BotCommandScopeAllChatAdministrators,
    BotCommandScopeAllGroupChats,
    BotCommandScopeAllPrivateChats,
)

from bot.core.commands import commands_for, describe

__all__ = ["SCOPES", "register_menus"]

log = logging.getLogger(__name__)

#: (scope, audience of bot/core/commands.py)
SCOPES = (
    (BotCommandScopeAllPrivateChats(), "customer"),
    (BotCommandScopeAllGroupChats(), "member"),
    (BotCommandScopeAllChatAdministrators(), "group_admin"),
)


async def register_menus(bot: Bot) -> int:
    """Set the menus (``setMyCommands``) for every scope and language; returns the calls made.
    A failure is logged and leaves the previous menus: the bot works without them."""
    calls = 0
    for scope, audience in SCOPES:
        for language in (None, "en"):
            locale = "en" if language else "zh-CN"
            commands = [
                BotCommand(c.name, describe(c, locale)[:256]) for c in commands_for(audience)
            ]
            try:
                await bot.set_my_commands(commands, scope=scope, language_code=language)
                calls += 1
            except Exception as exc:  # menus are a convenience: never stop the adapter
                log.warning("telegram: could not set the %s command menu (%s)", audience, exc)
    return calls
