"""Order intake: validate CSV rows and API payloads, then store them idempotently.

Columns (CSV header, or JSON keys for ``POST /api/orders``):

=============  ========  ==============================================================
column         required  meaning
=============  ========  ==============================================================
order_id       yes       the shop's order id (unique; re-importing it is a no-op)
customer       one of    an identity ``<channel>:<user id>``, e.g. ``telegram:4242``
phone          one of    the customer's phone (matched on digits; +86 prefix ignored)
amount         yes       a decimal amount ≥ 0 with at most 2 decimals, e.g. ``199.00``
currency       no        ISO code, default ``rfm.currency`` (CNY)
time           yes       ISO 8601 (``2026-03-01T10:00:00+08:00``); without an offset it
                         is in ``general.timezone``; a bare date means midnight there
items          no        free text, lines separated by ``;`` (JSON: a list of strings)
=============  ========  ==============================================================

Files and bodies are read by the one intake (bot/customers/intake.py): each bad row is
reported with its line number (or list index) and reason; good rows are stored in one
transaction, so an import is all-good-rows-or-nothing, never half written.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select, tuple_
from sqlalchemy.orm import Session

from bot.core.amounts import AmountError, parse_amount
from bot.customers.intake import (
    Intake,
    IntakeError,
    Layout,
    RowError,
    RowRefused,
    collect,
    csv_rows,
    json_items,
)
from storage.db import insert_ignore
from storage.measures import forget_rollups
from storage.models import Customer, Identity
from storage.orders import Order

__all__ = [
    "COLUMNS",
    "LAYOUT",
    "ImportReport",
    "IntakeError",
    "OrderInput",
    "OrderInputError",
    "RowError",
    "normalize_phone",
    "parse_csv",
    "parse_json",
    "store_orders",
    "validate_order",
]

COLUMNS = ("order_id", "customer", "phone", "amount", "currency", "time", "items")
REQUIRED = ("order_id", "amount", "time")
_CURRENCY = re.compile(r"^[A-Z]{3}$")
_CHANNELS = ("sandbox", "telegram", "wechat", "wecom")


class OrderInputError(RowRefused):
    """One order that cannot be taken, and why (a catalogue code and its parameters)."""


@dataclass(frozen=True)
class OrderInput:
    """A validated order, not yet tied to a customer."""

    order_id: str
    identity: tuple[str, str] | None
    phone: str | None
    amount_cents: int
    currency: str
    ordered_at: datetime
    items: tuple[str, ...]


@dataclass
class ImportReport:
    """The outcome of one import: new orders, ones seen before, and rejected rows."""

    inserted: int = 0
    duplicates: int = 0
    errors: list[RowError] = field(default_factory=list)
    customers: set[int] = field(default_factory=set)


def normalize_phone(raw: str) -> str | None:
    """Digits only, without a leading +86/0086; None if it cannot be a phone number."""
    digits = re.sub(r"[\s\-().]", "", raw.strip())
    if digits.startswith("+"):
        digits = digits[1:]
    if not digits.isdigit():
        return None
    if digits.startswith("0086"):
        digits = digits[4:]
    elif digits.startswith("86") and len(digits) == 13:
        digits = digits[2:]
    return digits if 5 <= len(digits) <= 15 else None


def _text(data: dict, key: str) -> str:
    value = data.get(key)
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise OrderInputError("intake.row.not_text", field=key)
    return str(value).strip()


def _amount(data: dict) -> int:
    try:
        return parse_amount(data.get("amount"))
    except AmountError as exc:
        raise OrderInputError(exc.code, **exc.params) from None


def _time(raw: str, tz: ZoneInfo, now: datetime) -> datetime:
    if not raw:
        raise OrderInputError("intake.order.time_required")
    try:
        if len(raw) == 10:
            moment = datetime.combine(datetime.strptime(raw, "%Y-%m-%d").date(), time(0))
        else:
            moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise OrderInputError("intake.order.time_format", raw=repr(raw)) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=tz)
    if moment > now + timedelta(days=1):
        raise OrderInputError("intake.order.time_future", raw=repr(raw))
    return moment.astimezone(now.tzinfo)


def validate_order(
    data: object, *, tz: ZoneInfo, now: datetime, default_currency: str
) -> OrderInput:
    """Check one order (a CSV row as a dict, or a JSON object); raises OrderInputError."""
    if not isinstance(data, dict):
        raise OrderInputError("intake.order.not_object")
    order_id = _text(data, "order_id")
    if not order_id:
        raise OrderInputError("intake.order.id_required")
    if len(order_id) > 64:
        raise OrderInputError("intake.order.id_too_long", limit=64)
    identity = None
    customer = _text(data, "customer")
    if customer:
        channel, sep, user = customer.partition(":")
        if not sep or channel not in _CHANNELS or not user:
            raise OrderInputError(
                "intake.row.customer_format", raw=repr(customer), channels=", ".join(_CHANNELS)
            )
        identity = (channel, user)
    phone = None
    raw_phone = _text(data, "phone")
    if raw_phone:
        phone = normalize_phone(raw_phone)
        if phone is None:
            raise OrderInputError("intake.row.phone", raw=repr(raw_phone))
    if identity is None and phone is None:
        raise OrderInputError("intake.row.who_required")
    amount_cents = _amount(data)
    currency = _text(data, "currency").upper() or default_currency
    if not _CURRENCY.match(currency):
        raise OrderInputError("intake.order.currency", raw=repr(currency))
    ordered_at = _time(_text(data, "time"), tz, now)
    raw_items = data.get("items", "")
    if isinstance(raw_items, list):
        if not all(isinstance(i, str) for i in raw_items):
            raise OrderInputError("intake.order.items_list")
        items = tuple(i.strip() for i in raw_items if i.strip())
    elif isinstance(raw_items, str):
        items = tuple(i.strip() for i in raw_items.split(";") if i.strip())
    else:
        raise OrderInputError("intake.order.items_type")
    return OrderInput(order_id, identity, phone, amount_cents, currency, ordered_at, items)


#: The order columns as the intake reads them (CSV header or JSON keys).
LAYOUT = Layout(
    noun="order",
    plural="orders",
    columns=COLUMNS,
    required=REQUIRED,
    one_of=("customer", "phone"),
    key="order_id",
    max_items=1000,
)


def _orders(
    rows, errors, *, tz: ZoneInfo, now: datetime, default_currency: str, first: str
) -> Intake[OrderInput]:
    return collect(
        rows,
        lambda row: validate_order(row, tz=tz, now=now, default_currency=default_currency),
        layout=LAYOUT,
        refused=(OrderInputError,),
        identity=lambda order: order.order_id,
        duplicate=f"intake.order.duplicate_{first}",
        errors=errors,
    )


def parse_csv(
    text: str, *, tz: ZoneInfo, now: datetime, default_currency: str
) -> tuple[list[tuple[int, OrderInput]], list[RowError]]:
    """Validate a CSV document; returns (line, order) pairs and the rejected rows.

    A missing required column raises :class:`IntakeError`: nothing in such a file can be
    taken.
    """
    rows, errors = csv_rows(text, LAYOUT)
    found = _orders(rows, errors, tz=tz, now=now, default_currency=default_currency, first="line")
    return found.good, found.errors


def parse_json(
    data: object,
    *,
    tz: ZoneInfo,
    now: datetime,
    default_currency: str,
    max_items: int | None = None,
) -> tuple[list[tuple[int, OrderInput]], list[RowError]]:
    """Validate a JSON body (one order or ``{"orders": [...]}``, at most ``max_items``, else
    the API's bound); returns (index, order) pairs and the rejected items. A wrong shape
    raises :class:`IntakeError`."""
    layout = LAYOUT if max_items is None else dataclasses.replace(LAYOUT, max_items=max_items)
    found = _orders(
        json_items(data, layout), (), tz=tz, now=now, default_currency=default_currency,
        first="index",
    )  # fmt: skip
    return found.good, found.errors


def _chunks(items: list, size: int = 500) -> Iterable[list]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def store_orders(
    session: Session, orders: list[tuple[int, OrderInput]], *, source: str, now: datetime
) -> ImportReport:
    """Resolve customers and insert the orders not stored before (caller's transaction)."""
    report = ImportReport()
    identities = sorted({o.identity for _, o in orders if o.identity})
    by_identity: dict[tuple[str, str], int] = {}
    for chunk in _chunks(identities):
        rows = session.execute(
            select(Identity.channel, Identity.external_id, Identity.customer_id).where(
                tuple_(Identity.channel, Identity.external_id).in_(chunk)
            )
        )
        by_identity.update({(ch, ext): cid for ch, ext, cid in rows})
    phones = sorted({o.phone for _, o in orders if o.phone and not o.identity})
    by_phone: dict[str, int] = {}
    for chunk in _chunks(phones):
        by_number = session.execute(
            select(Customer.phone, Customer.id)
            .where(Customer.phone.in_(chunk))
            .order_by(Customer.id)
        )
        for phone, customer_id in by_number:
            if phone is not None:  # matched by phone, so never NULL
                by_phone.setdefault(phone, customer_id)
    existing: set[str] = set()
    for chunk in _chunks([o.order_id for _, o in orders]):
        existing.update(session.scalars(select(Order.order_id).where(Order.order_id.in_(chunk))))
    new_rows = []
    for where, o in orders:
        if o.identity:
            cid = by_identity.get(o.identity)
            if cid is None:
                report.errors.append(
                    RowError(
                        where, o.order_id, "intake.row.no_identity", {"who": ":".join(o.identity)}
                    )
                )
                continue
        else:
            cid = by_phone.get(o.phone or "")
            if cid is None:
                report.errors.append(
                    RowError(where, o.order_id, "intake.row.no_phone", {"phone": o.phone})
                )
                continue
        if o.order_id in existing:
            report.duplicates += 1
            continue
        if o.identity and o.phone:
            customer = session.get(Customer, cid)
            if customer is not None and not customer.phone:
                customer.phone = o.phone
        new_rows.append(
            {
                "order_id": o.order_id,
                "customer_id": cid,
                "amount_cents": o.amount_cents,
                "currency": o.currency,
                "ordered_at": o.ordered_at,
                "items": {"lines": list(o.items)},
                "source": source[:128],
                "created_at": now,
            }
        )
        report.customers.add(cid)
    for chunk in _chunks(new_rows, 1000):
        insert_ignore(session, Order, chunk, ["order_id"])
    inserted = {row["order_id"] for row in new_rows}
    if inserted:  # a late order makes the measures counted over earlier days stale
        forget_rollups(session, min(o.ordered_at for _, o in orders if o.order_id in inserted))
    report.inserted = len(new_rows)
    report.errors.sort(key=lambda e: e.where)
    return report
