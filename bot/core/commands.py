"""The chat commands people can use, by audience, for /help and the platforms' command menus.

One row per command: the audiences that may use it (``customer`` in a 1:1 chat, ``member``
in a group, ``group_admin`` — a group's own admins, ``manager`` — Siyu's managers) and its
one-line description in the catalogue (``commands.<name>`` in templates/i18n/commands.toml).
/help lists exactly the rows of the reader's audience; the Telegram adapter registers the
same rows as command menus per scope (private chats, groups, group admins).
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.core.i18n import t

__all__ = ["COMMANDS", "Command", "commands_for", "describe"]


@dataclass(frozen=True)
class Command:
    """One chat command and the audiences that may use it."""

    name: str
    audiences: frozenset[str]


def _c(name: str, *audiences: str) -> Command:
    return Command(name, frozenset(audiences))


CUSTOMER = ("customer", "manager")
GROUP_ADMIN = ("group_admin", "manager")

COMMANDS: tuple[Command, ...] = (
    _c("start", *CUSTOMER),
    _c("help", "customer", "member", "group_admin", "manager"),
    _c("coupons", *CUSTOMER),
    _c("trip", *CUSTOMER),
    _c("human", "customer"),
    _c("welcome", *GROUP_ADMIN),
    _c("announce", *GROUP_ADMIN),
    _c("stats", *GROUP_ADMIN),
    _c("whois", *GROUP_ADMIN),
    _c("tag", *GROUP_ADMIN),
    _c("untag", *GROUP_ADMIN),
    _c("profile", *GROUP_ADMIN),
    _c("segment", *GROUP_ADMIN),
    _c("rule", *GROUP_ADMIN),
    _c("campaign", "manager"),
    _c("scenario", "manager"),
    _c("redeem", "manager"),
)


def commands_for(audience: str) -> list[Command]:
    """The commands of one audience, in the table's order."""
    return [c for c in COMMANDS if audience in c.audiences]


def describe(command: Command | str, locale: str | None) -> str:
    """The command's one line in the reader's locale."""
    name = command.name if isinstance(command, Command) else command
    return t(f"commands.{name}", locale)
