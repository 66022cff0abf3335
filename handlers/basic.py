"""The first customer-facing commands: /start, /help, and an answer to unknown commands."""

from __future__ import annotations

from bot.core.commands import commands_for, describe
from bot.core.context import Context
from bot.core.events import ChatType

__all__ = ["help_command", "start", "unknown_command"]


def start(ctx: Context) -> None:
    """Welcome the customer by name, in their locale."""
    ctx.reply("welcome", name=ctx.customer.display_name if ctx.customer else "")


def help_audience(ctx: Context) -> str:
    """Whose /help this is: ``manager``, ``group_admin``, ``staff``, ``member`` (a customer
    in a group) or ``customer``."""
    if ctx.role in ("manager", "group_admin", "staff"):
        return ctx.role
    return "member" if ctx.event.chat_type is ChatType.GROUP else "customer"


def help_command(ctx: Context) -> None:
    """Every command this person may use here, each with one line, in their locale."""
    audience = help_audience(ctx)
    commands = [{"name": c.name, "line": describe(c, ctx.locale)} for c in commands_for(audience)]
    ctx.reply("help", commands=commands, role=audience)


def unknown_command(ctx: Context) -> None:
    """Say clearly that the command is unknown instead of staying silent."""
    ctx.reply("unknown_command", command=ctx.event.command)
