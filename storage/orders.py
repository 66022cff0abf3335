"""Orders: what customers bought, imported from CSV or posted to the API.

An order is unique by the shop's own order id, so importing the same file twice, or a
client retrying a POST, never counts an order twice. Amounts are kept in minor units
(fen/cents) so sums are exact on every backend.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from storage.clock import utcnow
from storage.models import Base, BigId, Customer

__all__ = ["Order"]


#: Orders are matched to customers by phone; index it (created by migration 0300).
Index("ix_customers_phone", Customer.phone)


class Order(Base):
    """One purchase by one customer."""

    __tablename__ = "orders"
    __table_args__ = (Index("ix_orders_customer_time", "customer_id", "ordered_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    order_id: Mapped[str] = mapped_column(String(64), unique=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"))
    amount_cents: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3), default="CNY")
    ordered_at: Mapped[datetime]
    items: Mapped[dict[str, Any]] = mapped_column(default=dict)
    source: Mapped[str] = mapped_column(String(128), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
