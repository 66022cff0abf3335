"""The chat commands people can use, by audience, for /help and the platforms' command menus.

Who may use a command is the authorization table's answer (bot/core/authz.py), never a
second list: an audience is the role /help is asked as — ``customer`` (a 1:1 chat),
``member`` (a customer in a group: only /help there), ``group_admin`` (a group's own
admins) and ``manager``. Each command's one-line description is in the catalogue
(``commands.<name>`` in templates/i18n/commands.toml), and the Telegram adapter registers
the same rows as command menus per scope (private chats, groups, group admins).
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.core import authz
from bot.core.i18n import t

__all__ = ["COMMANDS", "Command", "commands_for", "describe"]

_ROLE = {
    "customer": authz.Role.CUSTOMER,
    "group_admin": authz.Role.GROUP_ADMIN,
    "staff": authz.Role.STAFF,
    "manager": authz.Role.MANAGER,
}


@dataclass(frozen=True)
class Command:
    """One chat command and the audiences that may use it."""

    name: str
    audiences: frozenset[str]


def commands_for(audience: str) -> list[Command]:
    """The commands of one audience, in the authorization table's order."""
    if audience == "member":
        return [Command("help", frozenset({"member"}))]
    role = _ROLE.get(audience)
    if role is None:
        return []
    return [Command(name, frozenset({audience})) for name in authz.commands_for(role)]


#: Every command some audience may use (for menus and tests), in table order.
COMMANDS: tuple[Command, ...] = tuple(
    Command(name, frozenset(a for a in _ROLE if name in authz.commands_for(_ROLE[a])))
    for name in authz.COMMANDS
    if name != authz.FLOW_COMMAND
)


def describe(command: Command | str, locale: str | None) -> str:
    """The command's one line in the reader's locale."""
    name = command.name if isinstance(command, Command) else command
    return t(f"commands.{name}", locale)
