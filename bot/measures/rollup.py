"""The measures of a period ending today: its finished days counted once, plus today's delta.

The console's Measures page shows the last 7/30/90/365 days including today. Counting them
from every order and interaction on each visit takes seconds at a million customers, so
each report's counts (bot/measures/loyalty.py: sums over customers, each customer adding a
share that depends only on their own rows) are split in two:

- the counts from the rows before the start of today (the brand's day), stored once in
  ``measures_rollup`` — by the nightly job, or by the first reader of the day if it has
  not run;
- the delta of the customers with a row from today (an order, an interaction, a referral,
  or who became customers today): their share counted now, minus their share before today.

Every other customer's share is the same with or without today, so the sum equals the
direct count (tests/test_measures_rollup.py checks both paths against each other). A late
order import or a forgotten customer drops the stored counts they make stale
(:func:`storage.measures.forget_rollups`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime, time
from functools import partial

from sqlalchemy import CompoundSelect, Select, delete, select, union
from sqlalchemy.orm import Session

from bot.measures import loyalty as figures
from bot.measures.periods import Period, parse_period
from storage.db import insert_ignore
from storage.measures import AARRR_REPORT, CHURN_REPORT, MeasuresRollup, Referral
from storage.models import Customer, Interaction
from storage.orders import Order
from storage.scores import CustomerScore

__all__ = ["aarrr", "cohorts", "day_start", "loyalty", "roll_up", "today_customers"]

Count = Callable[..., figures.Counts]
_KEY = ("report", "zone", "start", "end", "cutoff_at")


def day_start(now: datetime, period: Period) -> datetime:
    """The start of the brand's day of ``now``, in UTC."""
    local = now.astimezone(period.tz).date()
    return datetime.combine(local, time(0), period.tz).astimezone(UTC)


#: the rows from today that can change a customer's share of each report
TOUCHES = {
    "loyalty": ("orders", "customers", "referred"),
    "cohorts": ("orders", "first_orders"),
    "aarrr": ("orders", "interactions", "customers", "referrers"),
}


def today_customers(since: datetime, touches: tuple[str, ...] | None = None) -> CompoundSelect:
    """The ids of the customers with a row at or after ``since`` of the kinds ``touches``
    (every kind a report reads when None)."""
    parts = {
        "orders": select(Order.customer_id).where(Order.ordered_at >= since),
        "interactions": select(Interaction.customer_id).where(
            Interaction.occurred_at >= since, Interaction.customer_id.is_not(None)
        ),
        "customers": select(Customer.id).where(Customer.created_at >= since),
        "first_orders": select(CustomerScore.customer_id).where(
            CustomerScore.first_order_at >= since
        ),
        "referrers": select(Referral.referrer_id).where(Referral.created_at >= since),
        "referred": select(Referral.referred_id).where(Referral.created_at >= since),
    }
    return union(*(q for name, q in parts.items() if touches is None or name in touches))


def _active(session: Session, since: datetime, touches: tuple[str, ...], period: Period | None):
    """Today's customers of a report (with ``period``: only those acquired in it, the only
    ones the AARRR chain follows): on PostgreSQL fetched once as a list (one array
    parameter, so the planner reads their rows by index), elsewhere a subquery.

    On PostgreSQL the list is not narrowed to the period's customers here: the chain's own
    query reads each listed customer by id and tests when they arrived, while narrowing
    them first would join today's few thousand ids with every customer of the period."""
    query: CompoundSelect | Select = today_customers(since, touches)
    if session.get_bind().dialect.name == "postgresql":
        return list(session.scalars(query))
    if period is not None:
        query = select(Customer.id).where(
            Customer.id.in_(query),
            Customer.created_at >= period.start_utc,
            Customer.created_at < period.end_utc,
        )
    return query


def _finished(
    session: Session, report: str, count: Count, period: Period, since: datetime, now: datetime
) -> tuple[figures.Counts, bool]:
    """The stored counts of ``period`` before ``since`` (counted and stored if missing);
    (counts, whether they were counted now)."""
    key = {
        "report": report,
        "zone": period.zone,
        "start": period.start.isoformat(),
        "end": period.end.isoformat(),
        "cutoff_at": since,
    }
    stored = session.scalar(
        select(MeasuresRollup.counts).where(
            *(getattr(MeasuresRollup, name) == value for name, value in key.items())
        )
    )
    if stored is not None:
        return {k: int(v) for k, v in stored.items()}, False
    counts = count(session, period, cutoff=since)
    insert_ignore(session, MeasuresRollup, {**key, "counts": counts, "computed_at": now}, [*_KEY])
    return counts, True


def _rolled(
    session: Session,
    report: str,
    count: Count,
    delta: Count,
    period: Period,
    now: datetime,
    touches: tuple[str, ...],
    *,
    acquired: bool = False,
) -> figures.Counts:
    """The stored counts before today plus ``delta``: what today's rows add for the
    customers they touch (their share with today minus their share before it)."""
    since = day_start(now, period)
    base, _ = _finished(session, report, count, period, since, now)
    active = _active(session, since, touches, period if acquired else None)
    if isinstance(active, list) and not active:
        return base
    added = delta(session, period, only=active, since=since)
    return {k: base.get(k, 0) + added.get(k, 0) for k in sorted(base.keys() | added.keys())}


def loyalty(session: Session, period: Period, *, now: datetime) -> figures.LoyaltyReport:
    """:func:`bot.measures.loyalty.loyalty` of the whole community, from the rollup."""
    counts = _rolled(
        session,
        "loyalty",
        figures.loyalty_counts,
        figures.loyalty_delta,
        period,
        now,
        TOUCHES["loyalty"],
    )
    churn, _ = _finished(session, CHURN_REPORT, _churn, period, day_start(now, period), now)
    return figures.loyalty_report(period, counts, churn)


def _churn(session: Session, period: Period, *, cutoff: datetime | None = None):
    """The churn figures as the scores have them now (stored until scores change)."""
    return figures.churn_counts(session, period)


def cohorts(session: Session, period: Period, *, now: datetime, months: int = 12):
    """:func:`bot.measures.loyalty.cohorts` of the whole community, from the rollup."""
    months = max(1, min(months, 36))
    count = partial(figures.cohort_counts, months=months)
    delta = partial(figures.cohort_delta, months=months)
    counts = _rolled(session, f"cohorts:{months}", count, delta, period, now, TOUCHES["cohorts"])
    return figures.cohort_report(period, counts, months=months)


def aarrr(session: Session, period: Period, *, now: datetime) -> figures.AarrrReport:
    """:func:`bot.measures.loyalty.aarrr` of the whole community, from the rollup."""
    counts = _rolled(
        session,
        AARRR_REPORT,
        figures.aarrr_counts,
        figures.aarrr_delta,
        period,
        now,
        TOUCHES["aarrr"],
        acquired=True,
    )
    return figures.aarrr_report(period, counts)


def roll_up(
    session: Session, *, zone: str, now: datetime, days: Iterable[int], months: int = 12
) -> int:
    """The nightly share: count the finished days of each period of ``days`` ending today
    that are not stored yet, and drop the counts of earlier days. Returns the reports
    counted."""
    counted = 0
    reports: dict[str, Count] = {
        CHURN_REPORT: _churn,
        "loyalty": figures.loyalty_counts,
        f"cohorts:{months}": partial(figures.cohort_counts, months=months),
        AARRR_REPORT: figures.aarrr_counts,
    }
    since = None
    for n in days:
        period = parse_period(None, None, zone=zone, now=now, default_days=n)
        since = day_start(now, period)
        for report, count in reports.items():
            counted += _finished(session, report, count, period, since, now)[1]
    if since is not None:
        session.execute(delete(MeasuresRollup).where(MeasuresRollup.cutoff_at < since))
    return counted
