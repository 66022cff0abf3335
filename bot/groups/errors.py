"""The one error type of bot/groups: a catalogue key and its values, shown in the reader's
locale by whoever catches it (chat reply, CLI line)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from bot.core.i18n import t

__all__ = ["GroupsError", "Label", "about"]


class Label(str):
    """A value that is itself a catalogue key (e.g. the name of a field): translated too."""

    def translated(self, locale: str | None) -> str:
        return t(str(self), locale)


class GroupsError(ValueError):
    """Bad input or a refused action, as ``groups.*`` catalogue key + values."""

    def __init__(self, key: str, /, **values: object) -> None:
        self.key, self.values = key, values
        #: the input field the error is about (a form shows it there), if known
        self.field: str | None = None
        super().__init__(self.text("en"))

    def text(self, locale: str | None) -> str:
        """The message for a reader of ``locale``."""
        values = {
            k: v.translated(locale) if isinstance(v, Label) else v for k, v in self.values.items()
        }
        return t(self.key, locale, **values)


@contextlib.contextmanager
def about(field: str) -> Iterator[None]:
    """Mark a :class:`GroupsError` raised inside as being about ``field`` (unless it is
    already marked), so a form can show it next to that field."""
    try:
        yield
    except GroupsError as exc:
        if exc.field is None:
            exc.field = field
        raise
