"""Helpers for the campaign, scenario and coupon tests: customers and services."""

from __future__ import annotations

from datetime import datetime

from bot.app.config import Config
from bot.app.services import Services
from bot.core.clock import Clock
from bot.core.templating import Renderer
from bot.marketing.coupons import sync_definitions
from storage import repos
from storage.db import Database


def make_customer(
    db: Database,
    user: str,
    now: datetime,
    *,
    timezone: str = "Asia/Shanghai",
    tags: tuple[str, ...] = (),
    locale: str = "zh-CN",
    name: str = "",
    channel: str = "sandbox",
    opt_out: bool = False,
) -> int:
    with db.transaction() as session:
        customer, _ = repos.upsert_customer(
            session,
            channel,
            user,
            display_name=name or user,
            locale=locale,
            timezone=timezone,
            now=now,
        )
        customer.marketing_opt_out = opt_out
        for tag in tags:
            repos.add_tag(session, customer.id, tag, source="test", now=now)
        session.flush()
        return customer.id


def services(db: Database, config: Config, clock: Clock) -> Services:
    with db.transaction() as session:
        sync_definitions(session, config.coupons, clock.now())
    return Services(db=db, config=config, renderer=Renderer(), clock=clock)


def bulk_customers(db: Database, n: int, now: datetime, *, channel: str = "sandbox") -> None:
    """``n`` customers with one identity each (user ids ``u0`` …), inserted in bulk."""
    from sqlalchemy import insert, select

    from storage.models import Customer, Identity

    chunk = 5000
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        with db.transaction() as session:
            session.execute(
                insert(Customer),
                [
                    {
                        "display_name": f"顾客{i}",
                        "locale": "zh-CN",
                        "timezone": "Asia/Shanghai",
                        "marketing_opt_out": False,
                        "created_at": now,
                    }
                    for i in range(start, stop)
                ],
            )
            ids = session.scalars(
                select(Customer.id).order_by(Customer.id.desc()).limit(stop - start)
            ).all()
            session.execute(
                insert(Identity),
                [
                    {
                        "customer_id": cid,
                        "channel": channel,
                        "external_id": f"u{cid}",
                        "display_name": "",
                        "unreachable": False,
                        "created_at": now,
                    }
                    for cid in ids
                ],
            )
