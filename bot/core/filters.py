"""Small composable filters: ``is_group & has_role("manager") & command("announce")``.

A filter is called with the handler :class:`~bot.core.context.Context` (so it can look at the
event and at the resolved role) and answers True or False. Combine with ``&``, ``|``, ``~``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from bot.core.events import ChatType, EventKind

if TYPE_CHECKING:
    from bot.core.context import Context

__all__ = [
    "Filter",
    "button",
    "command",
    "has_role",
    "is_group",
    "is_private",
    "kind",
    "text",
]


class Filter:
    """A predicate over a handler context."""

    def __init__(self, fn: Callable[[Context], bool], name: str) -> None:
        self._fn, self.name = fn, name

    def __call__(self, ctx: Context) -> bool:
        return bool(self._fn(ctx))

    def __and__(self, other: Filter) -> Filter:
        return Filter(lambda c: self(c) and other(c), f"({self.name} & {other.name})")

    def __or__(self, other: Filter) -> Filter:
        return Filter(lambda c: self(c) or other(c), f"({self.name} | {other.name})")

    def __invert__(self) -> Filter:
        return Filter(lambda c: not self(c), f"~{self.name}")

    def __repr__(self) -> str:
        return f"Filter({self.name})"


def kind(*kinds: EventKind) -> Filter:
    wanted = frozenset(kinds)
    return Filter(lambda c: c.event.kind in wanted, f"kind({','.join(kinds)})")


def command(*names: str) -> Filter:
    wanted = frozenset(n.lower() for n in names)
    return Filter(
        lambda c: c.event.kind is EventKind.COMMAND and (not wanted or c.event.command in wanted),
        f"command({','.join(names) or '*'})",
    )


def button(prefix: str = "") -> Filter:
    return Filter(
        lambda c: (
            c.event.kind is EventKind.BUTTON and (c.event.button_data or "").startswith(prefix)
        ),
        f"button({prefix!r})",
    )


def has_role(*roles: str) -> Filter:
    wanted = frozenset(roles)
    return Filter(lambda c: c.role in wanted, f"role({','.join(roles)})")


text = Filter(lambda c: c.event.kind is EventKind.MESSAGE and bool(c.event.text), "text")
is_private = Filter(lambda c: c.event.chat_type is ChatType.PRIVATE, "private")
is_group = Filter(lambda c: c.event.chat_type is ChatType.GROUP, "group")
