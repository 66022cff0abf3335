"""How a birthday is stored: a date, on year :data:`NO_YEAR` when the year is unknown."""

from __future__ import annotations

from datetime import date

__all__ = ["NO_YEAR", "format_birthday"]

#: The year a birthday without a year is stored on (a leap year, so ``02-29`` exists).
NO_YEAR = 1604


def format_birthday(value: date | None) -> str | None:
    """``1990-05-17``, or ``05-17`` for a birthday stored without its year."""
    if value is None:
        return None
    return value.strftime("%m-%d") if value.year == NO_YEAR else value.isoformat()
