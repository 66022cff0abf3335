"""Loyalty figures and the AARRR chain, each one aggregate query (no per-customer loops).

Definitions (also in docs/measures.md), for a period ``[from, to)`` of the brand's local
dates and an optional segment:

- **Repeat-purchase rate** (重复购买率): of the customers who ordered in the period, the
  share who ordered at least twice in it.
- **Retention** (留存率): of the customers who ordered in the previous period of the same
  length, the share who ordered again in this one.
- **Cohort retention**: customers grouped by the month of their first order (kept with
  their scores by the nightly recompute and after each order import); for each following
  month, the share of the cohort who ordered in that month.
- **Referral rate** (推荐率): of the customers acquired in the period, the share who came
  through another customer's invite.
- **Churn by lifecycle stage**: customers per stage now (from the nightly scores), and the
  customers who became dormant or churned during the period.
- **AARRR chain**: acquired in the period → activated (sent a message, a command or pressed a
  button before ``to``) → retained (interacted or ordered again 7 days or more after being
  acquired) → revenue (ordered) → referral (invited someone who arrived). Each step counts
  the customers of the step before it who also did this; the step losing the most
  customers is named.

Each report is computed in two steps: its **counts** — sums over customers, each
customer adding a share that depends only on their own rows — and the report built from
them. The counts take an optional ``cutoff`` (only rows before it count) and a restriction
to some customers, which is what lets bot/measures/rollup.py keep a period's finished days
counted and add the delta of the customers active today.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import (
    BigInteger,
    Interval,
    Select,
    and_,
    any_,
    bindparam,
    case,
    distinct,
    exists,
    func,
    literal,
    or_,
    select,
    union_all,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

from bot.app.config import Config
from bot.customers.segments import compile_segment
from bot.measures.periods import Period, month_index, month_label
from storage.measures import Referral
from storage.models import Customer, Interaction
from storage.orders import Order
from storage.scores import STAGE_CHANGED, CustomerEvent, CustomerScore

__all__ = [
    "AarrrReport",
    "CohortReport",
    "Counts",
    "LoyaltyReport",
    "aarrr",
    "aarrr_counts",
    "aarrr_delta",
    "aarrr_report",
    "churn_counts",
    "cohort_counts",
    "cohort_delta",
    "cohort_report",
    "cohorts",
    "in_members",
    "loyalty",
    "loyalty_counts",
    "loyalty_delta",
    "loyalty_report",
    "segment_members",
    "segment_reports",
]

#: A report's additive counts: each a sum over customers of their own share.
Counts = dict[str, int]

#: Interactions that show a customer engaging (not merely joining or following).
ACTIVE_KINDS = ("message", "command", "button")
#: How long after acquisition a return counts as retention.
RETAINED_AFTER = timedelta(days=7)


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def segment_members(session: Session, config: Config, segment: str | None, now: datetime):
    """The segment's customer ids, or None for everyone: on PostgreSQL fetched once as a
    list, so each report's query reads them as one array parameter (by index, and without
    evaluating the segment again); elsewhere a subquery."""
    if not segment:
        return None
    query = compile_segment(segment, config=config, now=now, session=session).select_ids()
    if session.get_bind().dialect.name == "postgresql":
        return list(session.scalars(query))
    return query


def in_members(column, *restrictions) -> list:
    """``column IN (…)`` for each customer-id subquery or list of ids given (None: no
    restriction). A list is one array parameter on PostgreSQL (``= ANY``), so the planner
    knows how few customers it is about."""
    out = []
    for ids in restrictions:
        if isinstance(ids, list):
            out.append(column.in_(ids) if len(ids) <= _IN_LIST else _any(column, ids))
        elif ids is not None:
            out.append(column.in_(ids))
    return out


#: up to this many ids a list is an IN list (every backend); beyond, an array (PostgreSQL)
_IN_LIST = 500


def _any(column, ids: list[int]):
    return column == any_(bindparam(None, value=ids, type_=ARRAY(BigInteger)))


def _until(end: datetime, cutoff: datetime | None) -> datetime:
    """The upper bound of a range ending at ``end``, cut at ``cutoff`` if given."""
    return end if cutoff is None else min(end, cutoff)


def _before(column, cutoff: datetime | None) -> list:
    return [] if cutoff is None else [column < cutoff]


@dataclass
class LoyaltyReport:
    """Repeat purchase, retention, referral rate and churn for one period."""

    period: dict
    segment: str | None
    buyers: int
    repeat_buyers: int
    repeat_rate: float | None
    previous_buyers: int
    retained_buyers: int
    retention_rate: float | None
    new_customers: int
    referred_customers: int
    referral_rate: float | None
    stages: dict[str, int]
    churn_rate: float | None
    became_dormant: int
    became_churned: int

    def as_dict(self) -> dict:
        return asdict(self)


def loyalty_counts(
    session: Session, period: Period, *, ids=None, only=None, cutoff: datetime | None = None
) -> Counts:
    """The purchase and acquisition counts of ``period``, from rows before ``cutoff``, of the
    customers in ``ids`` (a segment) and ``only`` (customer-id subqueries; None: everyone)."""
    return _loyalty_counts(session, period, ids, only, [cutoff])[0]


def _loyalty_counts(session: Session, period: Period, ids, only, cutoffs) -> list[Counts]:
    """:func:`loyalty_counts` for several cutoffs in one pass over the rows."""
    lo, prev = period.start_utc, period.previous()
    his = [_until(period.end_utc, c) for c in cutoffs]
    top = max(his)

    # One pass over both periods' orders, per customer: orders in this period, and whether
    # they ordered in the one before. Every purchase figure is a sum over those rows.
    per_customer = (
        select(
            *(
                column
                for i, hi in enumerate(his)
                for column in (
                    func.sum(
                        case((and_(Order.ordered_at >= lo, Order.ordered_at < hi), 1), else_=0)
                    ).label(f"now{i}"),
                    func.max(
                        case((and_(Order.ordered_at < lo, Order.ordered_at < hi), 1), else_=0)
                    ).label(f"before{i}"),
                )
            )
        )
        .where(
            Order.ordered_at >= prev.start_utc,
            Order.ordered_at < top,
            *in_members(Order.customer_id, ids, only),
        )
        .group_by(Order.customer_id)
        .subquery()
    )
    c = per_customer.c

    def count_if(condition):
        return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)

    purchases = session.execute(
        select(
            *(
                column
                for i in range(len(his))
                for now, before in [(c[f"now{i}"], c[f"before{i}"])]
                for column in (
                    count_if(now > 0),
                    count_if(now >= 2),
                    count_if(before == 1),
                    count_if(and_(before == 1, now > 0)),
                )
            )
        )
    ).one()
    acquisitions = session.execute(
        select(
            *(
                column
                for hi, cutoff in zip(his, cutoffs, strict=True)
                for column in (
                    count_if(Customer.created_at < hi),
                    count_if(
                        and_(
                            Customer.created_at < hi,
                            exists().where(
                                Referral.referred_id == Customer.id,
                                *_before(Referral.created_at, cutoff),
                            ),
                        )
                    ),
                )
            )
        ).where(
            Customer.created_at >= lo,
            Customer.created_at < top,
            *in_members(Customer.id, ids, only),
        )
    ).one()
    return [
        {
            "buyers": int(purchases[4 * i]),
            "repeat_buyers": int(purchases[4 * i + 1]),
            "previous_buyers": int(purchases[4 * i + 2]),
            "retained_buyers": int(purchases[4 * i + 3]),
            "new_customers": int(acquisitions[2 * i]),
            "referred_customers": int(acquisitions[2 * i + 1]),
        }
        for i in range(len(his))
    ]


def loyalty_delta(session: Session, period: Period, *, only, since: datetime) -> Counts:
    """What the rows from ``since`` on add to :func:`loyalty_counts` for the customers in
    ``only``: the counts without a cutoff minus those before ``since``, in one pass."""
    after, before = _loyalty_counts(session, period, None, only, [None, since])
    return _minus(after, before)


def _minus(after: Counts, before: Counts) -> Counts:
    return {k: after.get(k, 0) - before.get(k, 0) for k in sorted(after.keys() | before.keys())}


def churn_counts(session: Session, period: Period, *, ids=None) -> Counts:
    """``stage:<name>`` → customers in each lifecycle stage now (the nightly scores), and
    ``became:dormant|churned`` → customers whose stage changed to it in the period."""
    lo, hi = period.start_utc, period.end_utc
    counts = {
        f"stage:{stage}": int(n)
        for stage, n in session.execute(
            select(CustomerScore.lifecycle, func.count())
            .where(*in_members(CustomerScore.customer_id, ids))
            .group_by(CustomerScore.lifecycle)
        )
    }
    for stage, n in session.execute(
        select(CustomerEvent.new_value, func.count(distinct(CustomerEvent.customer_id)))
        .where(
            CustomerEvent.kind == STAGE_CHANGED,
            CustomerEvent.new_value.in_(("dormant", "churned")),
            CustomerEvent.occurred_at >= lo,
            CustomerEvent.occurred_at < hi,
            *in_members(CustomerEvent.customer_id, ids),
        )
        .group_by(CustomerEvent.new_value)
    ):
        counts[f"became:{stage}"] = int(n)
    return counts


def loyalty_report(
    period: Period, counts: Counts, churn: Counts, *, segment: str | None = None
) -> LoyaltyReport:
    """The loyalty figures from :func:`loyalty_counts` and :func:`churn_counts`."""
    stages = {k.split(":", 1)[1]: n for k, n in sorted(churn.items()) if k.startswith("stage:")}
    with_orders = sum(stages.values())
    buyers, repeat = counts["buyers"], counts["repeat_buyers"]
    previous, retained = counts["previous_buyers"], counts["retained_buyers"]
    new, referred = counts["new_customers"], counts["referred_customers"]
    return LoyaltyReport(
        period=period.as_dict(),
        segment=segment,
        buyers=buyers,
        repeat_buyers=repeat,
        repeat_rate=_rate(repeat, buyers),
        previous_buyers=previous,
        retained_buyers=retained,
        retention_rate=_rate(retained, previous),
        new_customers=new,
        referred_customers=referred,
        referral_rate=_rate(referred, new),
        stages=stages,
        churn_rate=_rate(stages.get("churned", 0), with_orders),
        became_dormant=churn.get("became:dormant", 0),
        became_churned=churn.get("became:churned", 0),
    )


def loyalty(
    session: Session, period: Period, *, config: Config, now: datetime, segment: str | None = None
) -> LoyaltyReport:
    """The loyalty figures of ``period`` (see the module docstring for each definition)."""
    ids = segment_members(session, config, segment, now)
    counts = loyalty_counts(session, period, ids=ids)
    churn = churn_counts(session, period, ids=ids)
    return loyalty_report(period, counts, churn, segment=segment)


@dataclass
class CohortReport:
    """Monthly cohorts by first order: size and the share ordering in each later month."""

    period: dict
    segment: str | None
    months: int
    cohorts: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def cohort_counts(
    session: Session,
    period: Period,
    *,
    months: int,
    ids=None,
    only=None,
    cutoff: datetime | None = None,
) -> Counts:
    """``"<cohort>:<months after>"`` → customers who ordered then (``"<cohort>:-1"``: the
    cohort's size), from rows before ``cutoff``, of the customers in ``ids`` and ``only``."""
    # Customers whose first order falls in the period, from their scores (the recompute keeps
    # first_order_at, indexed): no pass over every order to find first orders.
    members = (
        select(
            CustomerScore.customer_id,
            month_index(session, CustomerScore.first_order_at, period).label("cohort"),
        )
        .where(
            CustomerScore.first_order_at >= period.start_utc,
            CustomerScore.first_order_at < _until(period.end_utc, cutoff),
            *in_members(CustomerScore.customer_id, ids, only),
        )
        .cte("members")
    )
    order_month = month_index(session, Order.ordered_at, period)
    # Each member's months with an order (grouped, not DISTINCT: a hash aggregate), then
    # customers per (cohort, month after); the cohort sizes come as month -1.
    per_month = (
        select(
            members.c.cohort,
            (order_month - members.c.cohort).label("offset"),
            Order.customer_id,
        )
        .join(Order, Order.customer_id == members.c.customer_id)
        .where(
            Order.ordered_at >= period.start_utc,
            Order.ordered_at < _until(period.end_utc + timedelta(days=31 * months), cutoff),
        )
        .group_by(members.c.cohort, "offset", Order.customer_id)
        .subquery()
    )
    activity = select(per_month.c.cohort, per_month.c.offset, func.count()).group_by(
        per_month.c.cohort, per_month.c.offset
    )
    sizes_q = select(members.c.cohort, literal(-1), func.count()).group_by(members.c.cohort)
    return {
        f"{int(cohort)}:{int(offset)}": int(n)
        for cohort, offset, n in session.execute(union_all(sizes_q, activity))
    }


def cohort_report(
    period: Period, counts: Counts, *, months: int, segment: str | None = None
) -> CohortReport:
    """The cohort table from :func:`cohort_counts`."""
    sizes: dict[int, int] = {}
    table: dict[int, dict[int, int]] = {}
    for key, n in counts.items():
        cohort, offset = (int(part) for part in key.split(":"))
        if offset == -1:
            sizes[cohort] = n
        elif 0 <= offset <= months:
            table.setdefault(cohort, {})[offset] = n
    rows = []
    for cohort in sorted(c for c, size in sizes.items() if size):
        size = sizes[cohort]
        counted = table.get(cohort, {})
        active = [counted.get(k, 0) for k in range(months + 1)]
        rows.append(
            {
                "cohort": month_label(cohort),
                "size": size,
                "active": active,
                "retention": [_rate(n, size) for n in active],
            }
        )
    return CohortReport(period=period.as_dict(), segment=segment, months=months, cohorts=rows)


def cohorts(
    session: Session,
    period: Period,
    *,
    config: Config,
    now: datetime,
    segment: str | None = None,
    months: int = 12,
) -> CohortReport:
    """Cohorts of customers whose first order falls in ``period``, ``months`` months out."""
    months = max(1, min(months, 36))
    ids = segment_members(session, config, segment, now)
    counts = cohort_counts(session, period, months=months, ids=ids)
    return cohort_report(period, counts, months=months, segment=segment)


@dataclass
class AarrrReport:
    """The AARRR chain for customers acquired in one period."""

    period: dict
    segment: str | None
    steps: list[dict]
    biggest_loss: str | None

    def as_dict(self) -> dict:
        return asdict(self)


STEPS = ("acquired", "activated", "retained", "revenue", "referral")


def _after_acquisition(session: Session):
    """``customers.created_at`` + :data:`RETAINED_AFTER`, in the backend's own spelling."""
    if session.get_bind().dialect.name == "sqlite":
        # Stored as 'YYYY-MM-DD HH:MM:SS.ffffff'; datetime() gives the same order as text.
        return func.datetime(Customer.created_at, f"+{RETAINED_AFTER.days} days")
    return Customer.created_at + literal(RETAINED_AFTER, type_=Interval())


def _chain(session: Session, period: Period, restrictions, cutoffs) -> Select:
    """One row of five counts per cutoff, each step a subset of the one before.

    Each customer's tests are read once as the first time they held (first activity, first
    return, first order, first invite), so any number of cutoffs costs one pass."""
    his = [_until(period.end_utc, c) for c in cutoffs]
    top = max(his)
    returned_from = _after_acquisition(session)

    def first(column, *conditions):
        return select(func.min(column)).where(*conditions).scalar_subquery()

    active = (Interaction.customer_id == Customer.id, Interaction.kind.in_(ACTIVE_KINDS))
    firsts = (
        select(
            Customer.created_at.label("acquired"),
            first(Interaction.occurred_at, *active, Interaction.occurred_at < top).label(
                "activated"
            ),
            first(
                Interaction.occurred_at,
                *active,
                Interaction.occurred_at >= returned_from,
                Interaction.occurred_at < top,
            ).label("came_back"),
            first(
                Order.ordered_at,
                Order.customer_id == Customer.id,
                Order.ordered_at >= returned_from,
                Order.ordered_at < top,
            ).label("ordered_again"),
            first(Order.ordered_at, Order.customer_id == Customer.id, Order.ordered_at < top).label(
                "ordered"
            ),
            first(
                Referral.created_at, Referral.referrer_id == Customer.id, Referral.created_at < top
            ).label("invited"),
        )
        .where(
            Customer.created_at >= period.start_utc,
            Customer.created_at < top,
            *in_members(Customer.id, *restrictions),
        )
        .cte("firsts")
    )
    if session.get_bind().dialect.name == "postgresql":
        # computed once per customer: as a plain subquery PostgreSQL would pull it up and
        # run each first-time probe again for every count that reads it
        firsts = firsts.prefix_with("MATERIALIZED")
    f = firsts.c

    def n(cond):
        return func.coalesce(func.sum(case((cond, 1), else_=0)), 0)

    columns = []
    for hi in his:
        acquired = f.acquired < hi
        activated = and_(acquired, f.activated < hi)
        retained = and_(activated, or_(f.came_back < hi, f.ordered_again < hi))
        revenue = and_(retained, f.ordered < hi)
        referral = and_(revenue, f.invited < hi)
        columns += [n(acquired), n(activated), n(retained), n(revenue), n(referral)]
    return select(*columns)


def aarrr_counts(
    session: Session, period: Period, *, ids=None, only=None, cutoff: datetime | None = None
) -> Counts:
    """Customers at each step of the chain, from rows before ``cutoff``, of the customers in
    ``ids`` and ``only``."""
    row = session.execute(_chain(session, period, (ids, only), [cutoff])).one()
    return {name: int(n) for name, n in zip(STEPS, row, strict=True)}


def aarrr_delta(session: Session, period: Period, *, only, since: datetime) -> Counts:
    """What the rows from ``since`` on add to :func:`aarrr_counts` for the customers in
    ``only``, in one pass."""
    row = session.execute(_chain(session, period, (None, only), [None, since])).one()
    k = len(STEPS)
    after = {name: int(n) for name, n in zip(STEPS, row[:k], strict=True)}
    before = {name: int(n) for name, n in zip(STEPS, row[k:], strict=True)}
    return _minus(after, before)


def cohort_delta(session: Session, period: Period, *, only, since: datetime, months: int) -> Counts:
    """What the rows from ``since`` on add to :func:`cohort_counts` for the customers in
    ``only``."""
    after = cohort_counts(session, period, months=months, only=only)
    return _minus(after, cohort_counts(session, period, months=months, only=only, cutoff=since))


def aarrr_report(period: Period, counts: Counts, *, segment: str | None = None) -> AarrrReport:
    """The chain from :func:`aarrr_counts`, with the step where most customers are lost."""
    steps = []
    worst, worst_loss = None, 0
    for i, name in enumerate(STEPS):
        count = counts[name]
        before = counts[STEPS[i - 1]] if i else count
        lost = before - count
        steps.append(
            {
                "step": name,
                "customers": count,
                "of_previous": _rate(count, before) if i else None,
                "of_acquired": _rate(count, counts[STEPS[0]]),
                "lost": lost,
            }
        )
        if i and lost > worst_loss:
            worst, worst_loss = name, lost
    return AarrrReport(period=period.as_dict(), segment=segment, steps=steps, biggest_loss=worst)


def aarrr(
    session: Session, period: Period, *, config: Config, now: datetime, segment: str | None = None
) -> AarrrReport:
    """The AARRR chain of ``period`` with the step where most customers are lost."""
    ids = segment_members(session, config, segment, now)
    return aarrr_report(period, aarrr_counts(session, period, ids=ids), segment=segment)


def segment_reports(
    session: Session, period: Period, *, segment: str, members, months: int = 12
) -> dict:
    """The loyalty figures, cohorts and AARRR chain of ``period`` for one segment, counted
    directly over its ``members`` (:func:`segment_members`, looked up once for every
    report: what the Measures page shows for a segment)."""
    months = max(1, min(months, 36))
    counts = loyalty_counts(session, period, ids=members)
    churn = churn_counts(session, period, ids=members)
    return {
        "loyalty": loyalty_report(period, counts, churn, segment=segment),
        "cohorts": cohort_report(
            period,
            cohort_counts(session, period, months=months, ids=members),
            months=months,
            segment=segment,
        ),
        "aarrr": aarrr_report(period, aarrr_counts(session, period, ids=members), segment=segment),
    }
