"""The first customer-facing commands: /start, /help, and an answer to unknown commands."""

from __future__ import annotations

from bot.core import authz
from bot.core.context import Context

__all__ = ["help_command", "start", "unknown_command"]


def start(ctx: Context) -> None:
    """Welcome the customer by name, in their locale."""
    ctx.reply("welcome", name=ctx.customer.display_name if ctx.customer else "")


def help_command(ctx: Context) -> None:
    """The commands the reader's role may run (the authorization table's list)."""
    ctx.reply("help", commands=authz.commands_for(ctx.role), role=ctx.role)


def unknown_command(ctx: Context) -> None:
    """Say clearly that the command is unknown instead of staying silent."""
    ctx.reply("unknown_command", command=ctx.event.command)
