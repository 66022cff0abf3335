"""RFM scores, named RFM groups, lifecycle stages and membership tiers, computed in SQL.

The recompute is a handful of set-based statements in one transaction; no customer row is
loaded into Python, so memory does not grow with the customer base.

- **Base:** customers with at least one order within ``rfm.window_days`` (the active base).
- **R, F, M (1-5):** rank over the base: ``1 + 5 * (rank - 1) // n`` with ``rank`` the
  SQL ``RANK()`` (equal values share the lower rank, so equal values get equal scores).
  R ranks the last order time (most recent → 5), F the number of orders in the window,
  M their amount (in ``rfm.currency``; other currencies are stored but not summed).
- **Group:** the first of ``rfm.groups`` whose r/f/m levels match (high = score ≥
  ``rfm.high_score``). Customers outside the base have no scores and no group.
- **Lifecycle:** churned if the last order is ≥ ``churned_days`` old, dormant if ≥
  ``dormant_days``, else retained with ≥ ``retained_min_orders`` orders, else activated;
  a customer who never ordered is ``new`` (and has no score row).
- **Tier:** the highest ``tiers.levels`` entry whose ``min_spend`` the trailing-12-month
  spend reaches; none below the lowest.

Every tier or stage change is appended to ``customer_events`` (storage/scores.py).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import cast

from sqlalchemy import (
    BigInteger,
    Column,
    Integer,
    MetaData,
    String,
    Table,
    and_,
    case,
    delete,
    func,
    insert,
    literal,
    select,
    true,
)
from sqlalchemy.orm import Session

from bot.app.config import Config
from storage.measures import CHURN_REPORT, forget_rollups
from storage.models import UTCDateTime
from storage.orders import Order
from storage.scores import STAGE_CHANGED, TIER_CHANGED, CustomerEvent, CustomerScore

__all__ = ["RecomputeResult", "recompute_scores", "refresh_customers"]

#: PostgreSQL advisory lock key that serializes recomputes ("rfm5" as an integer).
RECOMPUTE_LOCK = 0x72666D35


@dataclass(frozen=True)
class RecomputeResult:
    """What a recompute did."""

    scored: int
    tier_changes: int
    stage_changes: int
    seconds: float
    steps: dict[str, float] = field(default_factory=dict)


def _stage_table() -> Table:
    return Table(
        "rfm_stage",
        MetaData(),
        Column("customer_id", BigInteger, primary_key=True),
        Column("last_order_at", UTCDateTime),
        Column("first_order_at", UTCDateTime),
        Column("orders_total", Integer),
        Column("spend_total_cents", BigInteger),
        Column("frequency", Integer),
        Column("monetary_cents", BigInteger),
        Column("spend_12m_cents", BigInteger),
        Column("r_score", Integer),
        Column("f_score", Integer),
        Column("m_score", Integer),
        Column("rfm_group", String(32)),
        Column("lifecycle", String(16)),
        Column("tier", String(32)),
        Column("computed_at", UTCDateTime),
        prefixes=["TEMPORARY"],
    )


def _score_select(config: Config, now: datetime, only: list[int] | None = None):
    o = Order.__table__
    rfm, life = config.rfm, config.lifecycle
    window_start = now - timedelta(days=rfm.window_days)
    year_start = now - timedelta(days=365)
    in_currency = o.c.currency == rfm.currency
    amount = o.c.amount_cents
    agg = (
        select(
            o.c.customer_id,
            func.max(o.c.ordered_at).label("last_order_at"),
            func.min(o.c.ordered_at).label("first_order_at"),
            func.count().label("orders_total"),
            func.sum(case((in_currency, amount), else_=0)).label("spend_total_cents"),
            func.sum(case((o.c.ordered_at >= window_start, 1), else_=0)).label("frequency"),
            func.sum(
                case((and_(o.c.ordered_at >= window_start, in_currency), amount), else_=0)
            ).label("monetary_cents"),
            func.sum(
                case((and_(o.c.ordered_at >= year_start, in_currency), amount), else_=0)
            ).label("spend_12m_cents"),
        )
        .where(o.c.customer_id.in_(only) if only is not None else true())
        .group_by(o.c.customer_id)
        .cte("agg")
    )
    n = func.count().over()

    def score(column):
        return 1 + (5 * (func.rank().over(order_by=column) - 1)) // n

    if only is None:
        ranked = (
            select(
                agg.c.customer_id,
                score(agg.c.last_order_at).label("r_score"),
                score(agg.c.frequency).label("f_score"),
                score(agg.c.monetary_cents).label("m_score"),
            )
            .where(agg.c.frequency > 0)
            .cte("ranked")
        )
    else:  # a few customers: keep their ranks from the last full recompute
        cs = CustomerScore.__table__
        ranked = (
            select(cs.c.customer_id, cs.c.r_score, cs.c.f_score, cs.c.m_score)
            .where(cs.c.customer_id.in_(only), cs.c.r_score.is_not(None))
            .cte("ranked")
        )

    def level(column, wanted: str):
        if wanted == "high":
            return column >= rfm.high_score
        if wanted == "low":
            return column < rfm.high_score
        return true()

    group_cases = [
        (
            and_(
                level(ranked.c.r_score, g.r),
                level(ranked.c.f_score, g.f),
                level(ranked.c.m_score, g.m),
            ),
            literal(g.name),
        )
        for g in rfm.groups
    ]
    rfm_group = (
        case((ranked.c.customer_id.is_(None), None), *group_cases, else_=None)
        if group_cases
        else literal(None, String)
    )
    lifecycle = case(
        (agg.c.last_order_at <= now - timedelta(days=life.churned_days), "churned"),
        (agg.c.last_order_at <= now - timedelta(days=life.dormant_days), "dormant"),
        (agg.c.orders_total >= life.retained_min_orders, "retained"),
        else_="activated",
    )
    tiers = sorted(config.tiers.levels, key=lambda t: t.min_spend, reverse=True)
    tier_cases = [
        (agg.c.spend_12m_cents >= round(t.min_spend * 100), literal(t.name)) for t in tiers
    ]
    tier = case(*tier_cases, else_=None) if tier_cases else literal(None, String)
    return select(
        agg.c.customer_id,
        agg.c.last_order_at,
        agg.c.first_order_at,
        agg.c.orders_total,
        agg.c.spend_total_cents,
        agg.c.frequency,
        agg.c.monetary_cents,
        agg.c.spend_12m_cents,
        ranked.c.r_score,
        ranked.c.f_score,
        ranked.c.m_score,
        rfm_group.label("rfm_group"),
        lifecycle.label("lifecycle"),
        tier.label("tier"),
        literal(now, UTCDateTime).label("computed_at"),
    ).select_from(agg.outerjoin(ranked, ranked.c.customer_id == agg.c.customer_id))


def recompute_scores(session: Session, config: Config, now: datetime) -> RecomputeResult:
    """Recompute every customer's scores, group, stage and tier; log the changes.

    Runs in the caller's transaction: readers see the old scores until it commits.
    """
    return _recompute(session, config, now, None)


def refresh_customers(
    session: Session, config: Config, now: datetime, customer_ids: Iterable[int]
) -> RecomputeResult:
    """Update some customers at once (after new orders): their totals, stage and tier,
    with the change events; their R/F/M scores and group keep the last full recompute's
    ranks (a rank needs everyone, so it moves nightly)."""
    ids = sorted(set(customer_ids))
    total = RecomputeResult(0, 0, 0, 0.0)
    for i in range(0, len(ids), 500):
        part = _recompute(session, config, now, ids[i : i + 500])
        total = RecomputeResult(
            total.scored + part.scored,
            total.tier_changes + part.tier_changes,
            total.stage_changes + part.stage_changes,
            total.seconds + part.seconds,
        )
    return total


def _recompute(
    session: Session, config: Config, now: datetime, only: list[int] | None
) -> RecomputeResult:
    started = time.perf_counter()
    steps: dict[str, float] = {}
    forget_rollups(session, report=CHURN_REPORT)  # stages change: the stored churn figures go

    def lap(name: str) -> None:
        steps[name] = time.perf_counter() - started - sum(steps.values())

    session.flush()
    conn = session.connection().execution_options(preserve_rowcount=True)
    if conn.dialect.name == "postgresql":
        # One recompute at a time (nightly job vs. `siyu rfm recompute`): the second waits.
        conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({RECOMPUTE_LOCK})")
        # Sorts and hashes of a million rows stay in memory.
        conn.exec_driver_sql("SET LOCAL work_mem = '64MB'")
    stage = _stage_table()
    stage.drop(conn, checkfirst=True)
    stage.create(conn)
    try:
        columns = [c.name for c in stage.columns]
        conn.execute(insert(stage).from_select(columns, _score_select(config, now, only)))
        if only is None and conn.dialect.name == "postgresql":  # temp tables: never auto-analyzed
            conn.exec_driver_sql("ANALYZE rfm_stage")
        lap("score")
        old = cast(Table, CustomerScore.__table__)  # a declarative class maps one Table
        joined = stage.outerjoin(old, old.c.customer_id == stage.c.customer_id)
        event_cols = ["customer_id", "kind", "old_value", "new_value", "occurred_at"]
        events = cast(Table, CustomerEvent.__table__)
        tier_changes = conn.execute(
            insert(events).from_select(
                event_cols,
                select(
                    stage.c.customer_id,
                    literal(TIER_CHANGED),
                    old.c.tier,
                    stage.c.tier,
                    literal(now, UTCDateTime),
                )
                .select_from(joined)
                .where(func.coalesce(old.c.tier, "") != func.coalesce(stage.c.tier, "")),
            )
        ).rowcount
        stage_changes = conn.execute(
            insert(events).from_select(
                event_cols,
                select(
                    stage.c.customer_id,
                    literal(STAGE_CHANGED),
                    func.coalesce(old.c.lifecycle, "new"),
                    stage.c.lifecycle,
                    literal(now, UTCDateTime),
                )
                .select_from(joined)
                .where(func.coalesce(old.c.lifecycle, "new") != stage.c.lifecycle),
            )
        ).rowcount
        lap("events")
        conn.execute(delete(old).where(old.c.customer_id.in_(only) if only is not None else true()))
        scored = conn.execute(insert(old).from_select(columns, select(stage))).rowcount
        lap("write")
    finally:
        stage.drop(conn, checkfirst=True)
    return RecomputeResult(
        scored=max(scored or 0, 0),
        tier_changes=max(tier_changes or 0, 0),
        stage_changes=max(stage_changes or 0, 0),
        seconds=time.perf_counter() - started,
        steps=steps,
    )
