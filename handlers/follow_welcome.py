"""Welcome a new follower (Official Account subscribe) or a new WeCom external contact."""

from __future__ import annotations

from bot.core.context import Context

__all__ = ["welcome_follower"]


def welcome_follower(ctx: Context) -> None:
    """Greet someone who just followed the account or added a staff member as a contact.

    On WeCom the reply goes out as the welcome message (send_welcome_msg) while the
    event's welcome code is valid.
    """
    ctx.reply("welcome", name=ctx.customer.display_name if ctx.customer else "")
