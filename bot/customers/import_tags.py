"""Import customer tags from CSV (source ``import:<file>``): ``siyu tags import FILE.csv``.

Columns: ``customer`` (``<channel>:<user id>``) or ``phone``, ``tag``, and optionally
``ttl_days`` (0 or empty = no expiry); the console's import also takes them as JSON (one
object or ``{"tags": [...]}`` with the same keys). Bad rows are reported by line; good rows are applied
in one transaction. Re-importing refreshes last-seen and expiry (no duplicates). The file
is read by the one intake (bot/customers/intake.py).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

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
from bot.customers.orders import normalize_phone
from storage.models import Customer
from storage.repos import add_tag, find_identity

__all__ = [
    "LAYOUT",
    "TagImportError",
    "TagImportReport",
    "TagRow",
    "TagRowError",
    "apply_tags",
    "import_tags",
    "parse_csv",
    "parse_json",
    "validate_row",
]

MAX_TAG = 64


#: The file as a whole cannot be used (e.g. a missing column).
TagImportError = IntakeError


class TagRowError(RowRefused):
    """One tag row that cannot be taken, and why (a catalogue code and its parameters)."""


@dataclass
class TagImportReport:
    """New tags, refreshed ones, and rejected rows."""

    added: int = 0
    refreshed: int = 0
    errors: list[RowError] = field(default_factory=list)


#: The tag columns as the intake reads them.
LAYOUT = Layout(
    noun="tag",
    plural="tags",
    columns=("customer", "phone", "tag", "ttl_days"),
    required=("tag",),
    one_of=("customer", "phone"),
)


@dataclass(frozen=True)
class TagRow:
    """A validated tag row: who (identity or phone as given), which tag, for how long."""

    who: str
    raw_phone: str
    tag: str
    ttl: timedelta | None


def _text(row: dict, key: str) -> str:
    """A cell as text: a CSV string, or a JSON string or whole number."""
    value = row.get(key)
    if value is None:
        return ""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise TagRowError("intake.row.not_text", field=key)
    return value.strip()


def validate_row(row: object) -> TagRow:
    """Check one tag row (a CSV row or a JSON object); raises :class:`TagRowError`."""
    if not isinstance(row, dict):
        raise TagRowError("intake.tag.not_object")
    tag = _text(row, "tag")
    who = _text(row, "customer")
    raw_phone = _text(row, "phone")
    raw_ttl = _text(row, "ttl_days")
    if not tag or len(tag) > MAX_TAG:
        raise TagRowError("intake.tag.length", limit=MAX_TAG)
    if raw_ttl and (not raw_ttl.isdigit() or int(raw_ttl) > 3650):
        raise TagRowError("intake.tag.ttl", raw=repr(raw_ttl))
    if not who and not raw_phone:
        raise TagRowError("intake.tag.who_required")
    ttl = timedelta(days=int(raw_ttl)) if raw_ttl and int(raw_ttl) else None
    return TagRow(who, raw_phone, tag, ttl)


def parse_csv(text: str) -> Intake[TagRow]:
    """Validate a tags CSV; a file without the needed columns raises :class:`IntakeError`."""
    rows, errors = csv_rows(text, LAYOUT)
    return collect(rows, validate_row, layout=LAYOUT, refused=(TagRowError,), errors=errors)


def parse_json(data: object, *, max_items: int | None = None) -> Intake[TagRow]:
    """Validate a JSON document (one tag object or ``{"tags": [...]}``); a wrong shape raises
    :class:`IntakeError`."""
    layout = LAYOUT if max_items is None else dataclasses.replace(LAYOUT, max_items=max_items)

    def validate(item: object) -> TagRow:
        unknown = [k for k in item if k not in LAYOUT.columns] if isinstance(item, dict) else []
        if unknown:
            raise TagRowError("intake.tag.unknown_keys", keys=", ".join(map(repr, unknown)))
        return validate_row(item)

    return collect(json_items(data, layout), validate, layout=LAYOUT, refused=(TagRowError,))


def import_tags(session: Session, text: str, *, source: str, now: datetime) -> TagImportReport:
    """Apply a tags CSV in the caller's transaction; see the module docstring."""
    found = parse_csv(text)
    report = apply_tags(session, found.good, source=source, now=now)
    report.errors = sorted(found.errors + report.errors, key=lambda e: e.where)
    return report


def apply_tags(
    session: Session, good: list[tuple[int, TagRow]], *, source: str, now: datetime
) -> TagImportReport:
    """Tag the customers of validated rows (caller's transaction); a row naming nobody
    becomes a :class:`RowError`."""
    report = TagImportReport()
    for line, row in good:
        customer_id = None
        if row.who:
            channel, sep, user = row.who.partition(":")
            identity = find_identity(session, channel, user) if sep else None
            if identity is None:
                report.errors.append(
                    RowError(line, "", "intake.row.no_identity", {"who": repr(row.who)})
                )
                continue
            customer_id = identity.customer_id
        else:
            phone = normalize_phone(row.raw_phone)
            customer_id = (
                session.scalar(
                    select(Customer.id).where(Customer.phone == phone).order_by(Customer.id)
                )
                if phone
                else None
            )
            if customer_id is None:
                report.errors.append(
                    RowError(line, "", "intake.row.no_phone", {"phone": repr(row.raw_phone)})
                )
                continue
        if add_tag(session, customer_id, row.tag, source=source[:128], now=now, ttl=row.ttl):
            report.added += 1
        else:
            report.refreshed += 1
        session.flush()
    return report
