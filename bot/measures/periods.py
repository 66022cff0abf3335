"""Report periods and calendar buckets in the brand's time zone, computed by the database.

A report period is a half-open range of the brand's local dates ``[start, end)``; it is
turned into UTC instants once, here. Month buckets (for cohorts) are computed in SQL: on
PostgreSQL in the brand's IANA zone exactly (``AT TIME ZONE``), on SQLite with the zone's
offset at the period's end (exact for zones without daylight saving, such as Asia/Shanghai).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Integer, cast, func, literal
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

__all__ = ["Period", "PeriodError", "month_index", "month_label", "parse_period"]

#: The longest period a report covers (bounds the work of one request).
MAX_DAYS = 3660


class PeriodError(ValueError):
    """A report period that cannot be used (bad date, end before start, too long)."""


@dataclass(frozen=True)
class Period:
    """Local dates ``[start, end)`` in ``zone``, with their UTC instants."""

    start: date
    end: date
    zone: str

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.zone)

    @property
    def start_utc(self) -> datetime:
        return datetime.combine(self.start, time(0), self.tz).astimezone(UTC)

    @property
    def end_utc(self) -> datetime:
        return datetime.combine(self.end, time(0), self.tz).astimezone(UTC)

    @property
    def days(self) -> int:
        return (self.end - self.start).days

    def previous(self) -> Period:
        """The period of the same length right before this one."""
        return Period(self.start - timedelta(days=self.days), self.start, self.zone)

    def as_dict(self) -> dict[str, str]:
        return {"from": self.start.isoformat(), "to": self.end.isoformat(), "zone": self.zone}


def parse_period(
    start: str | None, end: str | None, *, zone: str, now: datetime, default_days: int
) -> Period:
    """``--from``/``--to`` (ISO dates, ``to`` exclusive) into a :class:`Period`.

    Without ``--to`` the period ends after today (local); without ``--from`` it starts
    ``default_days`` before its end.
    """
    today = now.astimezone(ZoneInfo(zone)).date()
    try:
        end_d = date.fromisoformat(end) if end else today + timedelta(days=1)
        start_d = date.fromisoformat(start) if start else end_d - timedelta(days=default_days)
    except ValueError as exc:
        raise PeriodError(f"dates are YYYY-MM-DD ({exc})") from None
    if end_d <= start_d:
        raise PeriodError(f"--to {end_d} must be after --from {start_d}")
    if (end_d - start_d).days > MAX_DAYS:
        raise PeriodError(f"a report covers at most {MAX_DAYS} days")
    return Period(start_d, end_d, zone)


def month_index(session: Session, column: Any, period: Period) -> ColumnElement[int]:
    """``year * 12 + month - 1`` of ``column`` in the brand's zone, as an SQL expression."""
    if session.get_bind().dialect.name == "postgresql":
        local = func.timezone(literal(period.zone), column)
        return cast(func.extract("year", local) * 12 + func.extract("month", local) - 1, Integer)
    offset = period.tz.utcoffset(datetime.combine(period.end, time(0))) or timedelta(0)
    modifier = f"{int(offset.total_seconds())} seconds"
    year = cast(func.strftime("%Y", column, literal(modifier)), Integer)
    month = cast(func.strftime("%m", column, literal(modifier)), Integer)
    return year * 12 + month - 1


def month_label(index: int) -> str:
    """``2026-03`` for a :func:`month_index` value."""
    return f"{index // 12:04d}-{index % 12 + 1:02d}"
