"""Commands that show personal or business data answer in private when used in a group.

``/profile``, ``/whois``, ``/segment`` and ``/campaign`` used in a customer group would
post a member's birthday, city, phone, tier and tags — or the brand's numbers — for every
member to read. Wrapped with :func:`privately`, their answers go to the manager's own 1:1
chat on that channel (through the outbox, like every message) and the group only gets a
short notice that the answer was sent privately.
"""

from __future__ import annotations

from collections.abc import Callable

from bot.core.context import Context
from bot.core.events import ChatType

__all__ = ["PUBLIC_SUFFIXES", "privately"]

#: Templates that explain how to use a command (no data in them): they stay in the group.
PUBLIC_SUFFIXES = ("_usage", "_need_target", "_group_only", "_refused")


def privately(callback: Callable[[Context], None]) -> Callable[[Context], None]:
    """``callback``, answering in the sender's private chat when the event is in a group."""

    def run(ctx: Context) -> None:
        if ctx.event.chat_type is not ChatType.GROUP:
            callback(ctx)
            return
        reply = ctx.reply
        private = 0

        def answer(template: str, /, **values):
            nonlocal private
            if template.endswith(PUBLIC_SUFFIXES) and "to" not in values:
                return reply(template, to=ctx.event.ref, **values)  # usage: no data in it
            private += 1
            return reply(template, **values)

        ctx.redirect = ctx.private_ref()
        ctx.reply = answer  # type: ignore[method-assign]  # this one command's replies go 1:1
        try:
            callback(ctx)
        finally:
            ctx.redirect = None
            del ctx.reply  # back to the class's method
        if private:
            ctx.reply("sent_privately", command=ctx.event.command or "")

    run.__name__ = getattr(callback, "__name__", "privately")
    run.__doc__ = callback.__doc__
    return run
