"""When a post plan posts: days and local times of the brand's time zone, or a cron line.

Forms (Chinese words work too)::

    daily 07:30                 每天 07:30
    weekdays 20:00              工作日 20:00        (Monday to Friday)
    weekends 10:00              周末 10:00
    fri 15:00                   周五 15:00          (days: mon,tue,... or 周一,周二,...)
    mon,wed 09:00,18:00                             (several days and times)
    2026-12-24 10:00                                (dates, comma-separated)
    cron 0 20 * * *                                 (minute hour day month weekday)

:meth:`Schedule.slots` lists the slot times (UTC) in a span, computed with APScheduler's
cron triggers in the brand's time zone, so daylight-saving changes are handled there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from apscheduler.triggers.cron import CronTrigger

from bot.groups.errors import GroupsError

__all__ = ["MAX_SLOTS", "Schedule", "parse_schedule"]

MAX_TEXT = 200
MAX_TIMES = 24
MAX_DATES = 60
#: At most this many slots are listed for one span by default.
MAX_SLOTS = 50

_DAYS = {
    "mon": "mon", "tue": "tue", "wed": "wed", "thu": "thu", "fri": "fri", "sat": "sat",
    "sun": "sun", "周一": "mon", "周二": "tue", "周三": "wed", "周四": "thu", "周五": "fri",
    "周六": "sat", "周日": "sun", "周天": "sun",
}  # fmt: skip
_SETS = {
    "daily": "*", "everyday": "*", "每天": "*", "每日": "*",
    "weekdays": "mon-fri", "工作日": "mon-fri",
    "weekends": "sat,sun", "周末": "sat,sun",
}  # fmt: skip
_TIME = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")


@dataclass(frozen=True)
class Schedule:
    """A parsed schedule: cron fields per trigger, plus the text it was written as."""

    text: str
    #: (day_of_week, dates, hour, minute) per time, or ``cron`` with the crontab line.
    days: str = "*"
    dates: tuple[date, ...] = ()
    times: tuple[tuple[int, int], ...] = ()
    cron: str = ""

    def triggers(self, zone: ZoneInfo) -> list[CronTrigger]:
        if self.cron:
            return [CronTrigger.from_crontab(self.cron, timezone=zone)]
        out = []
        for hour, minute in self.times:
            if self.dates:
                for d in self.dates:
                    out.append(
                        CronTrigger(
                            year=d.year, month=d.month, day=d.day, hour=hour, minute=minute,
                            timezone=zone,
                        )
                    )  # fmt: skip
            else:
                out.append(
                    CronTrigger(day_of_week=self.days, hour=hour, minute=minute, timezone=zone)
                )
        return out

    def slots(
        self, after: datetime, until: datetime, zone: ZoneInfo, limit: int = MAX_SLOTS
    ) -> list[datetime]:
        """Slot times in ``(after, until]``, oldest first; at most ``limit`` (the oldest)."""
        found: set[datetime] = set()
        start = after + timedelta(seconds=1)
        for trigger in self.triggers(zone):
            moment = trigger.get_next_fire_time(None, start)
            count = 0
            while moment is not None and moment <= until and count < limit:
                found.add(moment.astimezone(until.tzinfo))
                count += 1
                moment = trigger.get_next_fire_time(moment, moment + timedelta(seconds=1))
        return sorted(found)[:limit]

    def next_after(self, moment: datetime, zone: ZoneInfo) -> datetime | None:
        """The first slot after ``moment`` (for listings)."""
        times = [
            t
            for t in (tr.get_next_fire_time(None, moment + timedelta(seconds=1)) for tr in self.triggers(zone))
            if t is not None
        ]  # fmt: skip
        return min(times) if times else None


def parse_schedule(text: str) -> Schedule:
    """Read a schedule (see the module docstring); :class:`GroupsError` says what is wrong."""
    text = " ".join(text.split())
    if not text:
        raise GroupsError("groups.sop.error.when_missing")
    if len(text) > MAX_TEXT:
        raise GroupsError("groups.sop.error.too_long", field="when", limit=MAX_TEXT)
    head, _, rest = text.partition(" ")
    if head.lower() == "cron":
        try:
            CronTrigger.from_crontab(rest, timezone="UTC")
        except ValueError as exc:
            raise GroupsError("groups.sop.error.cron", line=rest, problem=str(exc)) from None
        if len(rest.split()) != 5:
            raise GroupsError("groups.sop.error.cron", line=rest, problem="5 fields")
        return Schedule(text=text, cron=rest)
    day_part, times = _split_times(text)
    dates: list[date] = []
    days = "*"
    word = day_part.lower()
    if word in _SETS:
        days = _SETS[word]
    else:
        items = [i for i in re.split(r"[,，、]", day_part) if i]
        if items and all(i.lower() in _DAYS for i in items):
            days = ",".join(dict.fromkeys(_DAYS[i.lower()] for i in items))
        else:
            for item in items:
                try:
                    dates.append(date.fromisoformat(item))
                except ValueError:
                    raise GroupsError("groups.sop.error.days", days=day_part) from None
            if not dates or len(dates) > MAX_DATES:
                raise GroupsError("groups.sop.error.days", days=day_part)
    return Schedule(text=text, days=days, dates=tuple(sorted(set(dates))), times=times)


def _split_times(text: str) -> tuple[str, tuple[tuple[int, int], ...]]:
    parts = text.split(" ")
    if len(parts) < 2:
        raise GroupsError("groups.sop.error.times", times="")
    day_part = parts[0]
    times = []
    for item in re.split(r"[,，\s]+", " ".join(parts[1:])):
        match = _TIME.match(item)
        if not match:
            raise GroupsError("groups.sop.error.times", times=item)
        times.append((int(match.group(1)), int(match.group(2))))
    if len(times) > MAX_TIMES:
        raise GroupsError("groups.sop.error.too_many_times", limit=MAX_TIMES)
    return day_part, tuple(sorted(set(times)))
