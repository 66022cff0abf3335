"""The first customer-facing commands: /start, /help, and an answer to unknown commands."""

from __future__ import annotations

from bot.core.context import Context

__all__ = ["help_command", "start", "unknown_command"]

#: Commands shown by /help, by role. Later features add theirs here.
CUSTOMER_COMMANDS = ("start", "help")
MANAGER_COMMANDS = ("welcome", "announce", "stats", "whois", "tag", "untag", "segment", "rule")
#: Running the groups (handlers/groups.py).
MANAGER_COMMANDS += ("sop", "faq", "mod", "warn", "mute", "ban", "unban")


def start(ctx: Context) -> None:
    """Welcome the customer by name, in their locale."""
    ctx.reply("welcome", name=ctx.customer.display_name if ctx.customer else "")


def help_command(ctx: Context) -> None:
    commands = list(CUSTOMER_COMMANDS)
    if ctx.role in ("manager", "group_admin"):
        commands += MANAGER_COMMANDS
    ctx.reply("help", commands=commands, role=ctx.role)


def unknown_command(ctx: Context) -> None:
    """Say clearly that the command is unknown instead of staying silent."""
    ctx.reply("unknown_command", command=ctx.event.command)
