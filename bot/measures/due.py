"""The measures' periodic work: settle referral rewards, send surveys due after orders.

Run by the one scheduler every ``[scenarios] tick_seconds`` and after order imports; both
parts are idempotent (referrals are settled once; a survey is queued once per order).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.app.config import Config
from bot.core.templating import Renderer
from bot.measures import referrals, surveys
from storage.models import Customer
from storage.orders import Order

__all__ = ["DueResult", "run_due"]

#: An order older than its survey delay by more than this is not surveyed any more.
CATCH_UP = timedelta(days=2)
BATCH = 500


@dataclass
class DueResult:
    """What one run did."""

    referrals_settled: int = 0
    surveys: dict[str, int] = field(default_factory=dict)


def run_due(session: Session, *, config: Config, renderer: Renderer, now: datetime) -> DueResult:
    """Settle first-order referral rewards and queue surveys due after orders."""
    result = DueResult()
    if config.referrals.enabled:
        result.referrals_settled = referrals.settle_first_orders(
            session, config=config, renderer=renderer, now=now
        )
    for survey in config.surveys.definitions:
        if survey.after_order_days <= 0:
            continue
        due_until = now - timedelta(days=survey.after_order_days)
        rows = session.execute(
            select(Order.order_id, Customer)
            .join(Customer, Customer.id == Order.customer_id)
            .where(Order.ordered_at <= due_until, Order.ordered_at > due_until - CATCH_UP)
            .order_by(Order.id)
            .limit(BATCH)
        ).all()
        for order_id, customer in rows:
            to = referrals.customer_ref(session, customer.id)
            if to is None:
                outcome = "unreachable"
            else:
                outcome = surveys.send(
                    session,
                    config=config,
                    renderer=renderer,
                    customer=customer,
                    to=to,
                    survey=survey,
                    source=f"order:{order_id}",
                    now=now,
                )
            result.surveys[outcome] = result.surveys.get(outcome, 0) + 1
    return result
