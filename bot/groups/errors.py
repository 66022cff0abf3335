"""The one error type of bot/groups: a catalogue key and its values, shown in the reader's
locale by whoever catches it (chat reply, CLI line)."""

from __future__ import annotations

from bot.core.i18n import t

__all__ = ["GroupsError", "Label"]


class Label(str):
    """A value that is itself a catalogue key (e.g. the name of a field): translated too."""

    def translated(self, locale: str | None) -> str:
        return t(str(self), locale)


class GroupsError(ValueError):
    """Bad input or a refused action, as ``groups.*`` catalogue key + values."""

    def __init__(self, key: str, /, **values: object) -> None:
        self.key, self.values = key, values
        super().__init__(self.text("en"))

    def text(self, locale: str | None) -> str:
        """The message for a reader of ``locale``."""
        values = {
            k: v.translated(locale) if isinstance(v, Label) else v for k, v in self.values.items()
        }
        return t(self.key, locale, **values)
