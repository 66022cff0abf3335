"""A small hand-computed world of customers, orders and tags for the customer tests.

Six customers, A-F; the RFM, lifecycle and tier each should get are worked out by hand in
tests/test_rfm.py.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from storage.models import Customer, Group, Identity, Membership
from storage.orders import Order
from storage.repos import add_tag

DAY = timedelta(days=1)

#: name → [(days ago, amount in yuan)]
ORDERS = {
    "A": [(5, 3000), (20, 2500), (40, 1000)],
    "B": [(10, 200)],
    "C": [(100, 8000), (200, 15000)],
    "D": [(200, 50)],
    "E": [(400, 999)],
    "F": [],
}


def build_world(session: Session, now: datetime) -> dict[str, int]:
    """Create customers A-F with identities, attributes, tags, groups and orders."""
    attrs = {
        "A": {"city": "杭州", "last_active_at": now - 1 * DAY},
        "B": {"city": "杭州", "last_active_at": now - 40 * DAY},
        "C": {"city": "上海", "last_active_at": now - 10 * DAY},
        "D": {"last_active_at": None},
        "E": {"marketing_opt_out": True, "last_active_at": now - 100 * DAY},
        "F": {"city": "杭州", "last_active_at": now - 2 * DAY},
    }
    ids: dict[str, int] = {}
    for name, extra in attrs.items():
        customer = Customer(display_name=name, created_at=now - 500 * DAY, **extra)
        session.add(customer)
        session.flush()
        ids[name] = customer.id
        session.add(Identity(customer_id=customer.id, channel="sandbox", external_id=name.lower()))
    session.add(Identity(customer_id=ids["A"], channel="telegram", external_id="1001"))
    group = Group(channel="sandbox", external_id="group-1", title="体验群")
    session.add(group)
    session.flush()
    session.add(Membership(group_id=group.id, customer_id=ids["A"], active=True, joined_at=now))
    session.add(Membership(group_id=group.id, customer_id=ids["B"], active=False, joined_at=now))
    add_tag(session, ids["A"], "母婴", source="test", now=now)
    add_tag(session, ids["B"], "母婴", source="test", now=now - 10 * DAY, ttl=5 * DAY)
    add_tag(session, ids["C"], "母婴", source="test", now=now)
    add_tag(session, ids["D"], "早餐", source="test", now=now)
    n = 0
    for name, orders in ORDERS.items():
        for days, amount in orders:
            n += 1
            session.add(
                Order(
                    order_id=f"o{n}",
                    customer_id=ids[name],
                    amount_cents=amount * 100,
                    currency="CNY",
                    ordered_at=now - days * DAY,
                    items={},
                    source="test",
                    created_at=now,
                )
            )
    session.flush()
    return ids
