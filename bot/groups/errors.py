"""The one error type of bot/groups: a catalogue key and its values, shown in the reader's
locale by whoever catches it (chat reply, CLI line)."""

from __future__ import annotations

from bot.core.i18n import t

__all__ = ["GroupsError"]


class GroupsError(ValueError):
    """Bad input or a refused action, as ``groups.*`` catalogue key + values."""

    def __init__(self, key: str, **values: object) -> None:
        self.key, self.values = key, values
        super().__init__(t(key, "en", **values))

    def text(self, locale: str | None) -> str:
        """The message for a reader of ``locale``."""
        return t(self.key, locale, **self.values)
