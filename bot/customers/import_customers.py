"""``siyu import customers FILE.csv``: create or update customers with their attributes.

Columns (header line; order free, unknown columns refuse the whole file):

==========  ========  ==============================================================
column      required  meaning
==========  ========  ==============================================================
customer    one of    an identity ``<channel>:<user id>``, e.g. ``telegram:4242``
phone       one of    the phone; with no ``customer`` it is the key that finds the
                      customer (the oldest with that phone), else it is set on them
name        no        display name
birthday    no        ``YYYY-MM-DD`` or ``MM-DD``
city        no        free text
locale      no        ``zh-CN`` or ``en``
timezone    no        IANA name such as ``Asia/Shanghai``
==========  ========  ==============================================================

An empty cell leaves the attribute as it is. A customer not found is created (with the
identity, if given). Each bad row is reported with its line number and reason; the good
rows are applied in one transaction, each row wholly or not at all. Importing the same
file again changes nothing. ``POST /api/customers`` takes the same rows as JSON; both are
read by the one intake (bot/customers/intake.py).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.orm import Session

from bot.core.i18n import t
from bot.customers.attributes import (
    ATTRIBUTES,
    ProfileConflict,
    ProfileInputError,
    parse_identity,
    upsert_profile,
    validate_attributes,
)
from bot.customers.intake import (
    Intake,
    IntakeError,
    Layout,
    RowError,
    collect,
    csv_rows,
    json_items,
)

__all__ = [
    "COLUMNS",
    "JSON_LAYOUT",
    "LAYOUT",
    "CustomerImportError",
    "CustomerImportReport",
    "Row",
    "apply_customers",
    "import_customers",
    "parse_csv",
    "parse_json",
    "validate_row",
]

COLUMNS = ("customer", *ATTRIBUTES)


#: The file as a whole cannot be used (no header, unknown or missing columns).
CustomerImportError = IntakeError


@dataclass
class CustomerImportReport:
    """Customers created, updated, left unchanged, and the rejected rows."""

    created: int = 0
    updated: int = 0
    unchanged: int = 0
    errors: list[RowError] = field(default_factory=list)


#: The customer columns as the intake reads them (a CSV header; JSON adds ``channel`` +
#: ``user_id`` as another way to name the identity).
LAYOUT = Layout(
    noun="customer",
    plural="customers",
    columns=COLUMNS,
    one_of=("customer", "phone"),
    closed=True,
    key="customer",
    max_items=1000,
)
JSON_LAYOUT = dataclasses.replace(LAYOUT, columns=(*COLUMNS, "channel", "user_id"), key="")

Row = tuple[tuple[str, str] | None, dict]


def _who(item: dict, *, blank_is_none: bool) -> tuple[str, str] | None:
    """The identity an item names (``customer``, or ``channel`` + ``user_id`` in JSON)."""
    has_pair = "channel" in item or "user_id" in item
    if "customer" in item and has_pair:
        raise ProfileInputError(
            "give 'customer' or 'channel' + 'user_id', not both", "intake.customer.both_identities"
        )
    if has_pair:
        channel, user = item.get("channel"), item.get("user_id")
        if isinstance(user, int) and not isinstance(user, bool):
            user = str(user)
        if not isinstance(channel, str) or not isinstance(user, str):
            raise ProfileInputError(
                "'channel' and 'user_id' must both be given as text", "intake.customer.pair_text"
            )
        return parse_identity(f"{channel}:{user}")
    raw = item.get("customer")
    if raw is None:
        return None
    if not isinstance(raw, str):
        raise ProfileInputError(
            "'customer' must be text such as 'telegram:4242'", "intake.customer.customer_text"
        )
    if blank_is_none and not raw.strip():  # an empty CSV cell
        return None
    return parse_identity(raw)


def validate_row(item: object, *, today, empty_clears: bool, json: bool = False) -> Row:
    """One customer row (a CSV row or a JSON object) as (identity, attributes); raises
    :class:`ProfileInputError`."""
    if not isinstance(item, dict):
        raise ProfileInputError("a customer must be a JSON object", "intake.customer.not_object")
    identity = _who(item, blank_is_none=not json)
    attrs = validate_attributes(
        {k: v for k, v in item.items() if k not in ("customer", "channel", "user_id")},
        today=today,
        empty_clears=empty_clears,
    )
    if identity is None and not attrs.get("phone"):
        code = "intake.customer.who_required_json" if json else "intake.row.who_required"
        raise ProfileInputError(t(code, "en"), code)
    return identity, attrs


def parse_csv(text: str, *, today) -> Intake[Row]:
    """Validate a customers CSV; one row per customer (a repeat is rejected)."""
    rows, errors = csv_rows(text, LAYOUT)
    return collect(
        rows,
        lambda row: validate_row(row, today=today, empty_clears=False),
        layout=LAYOUT,
        refused=(ProfileInputError,),
        identity=lambda r: ":".join(r[0]) if r[0] else f"phone:{r[1]['phone']}",
        duplicate="intake.customer.duplicate_line",
        errors=errors,
    )


def parse_json(data: object, *, today, max_items: int | None = None) -> Intake[Row]:
    """Validate a JSON body (one customer or ``{"customers": [...]}``, at most ``max_items``,
    else the API's bound); a wrong shape raises :class:`IntakeError`."""
    layout = (
        JSON_LAYOUT if max_items is None else dataclasses.replace(JSON_LAYOUT, max_items=max_items)
    )
    return collect(
        json_items(data, layout),
        lambda row: validate_row(row, today=today, empty_clears=True, json=True),
        layout=JSON_LAYOUT,
        refused=(ProfileInputError,),
    )


def import_customers(
    session: Session,
    text: str,
    *,
    now: datetime,
    today,
    default_locale: str,
    default_timezone: str,
) -> CustomerImportReport:
    """Apply a customers CSV in the caller's transaction; see the module docstring."""
    found = parse_csv(text, today=today)
    report = apply_customers(
        session,
        found.good,
        now=now,
        default_locale=default_locale,
        default_timezone=default_timezone,
    )
    report.errors = sorted(found.errors + report.errors, key=lambda e: e.where)
    return report


def apply_customers(
    session: Session,
    good: list[tuple[int, Row]],
    *,
    now: datetime,
    default_locale: str,
    default_timezone: str,
) -> CustomerImportReport:
    """Create or update the customers of validated rows (caller's transaction); a row that
    conflicts with a stored customer becomes a :class:`RowError`."""
    report = CustomerImportReport()
    for line, (identity, attrs) in good:
        try:
            result = upsert_profile(
                session,
                identity=identity,
                attrs=attrs,
                now=now,
                default_locale=default_locale,
                default_timezone=default_timezone,
            )
        except ProfileConflict as exc:
            report.errors.append(RowError.of(line, ":".join(identity) if identity else "", exc))
            continue
        if result.created:
            report.created += 1
        elif result.changed:
            report.updated += 1
        else:
            report.unchanged += 1
    return report
