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
file again changes nothing.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.orm import Session

from bot.customers.attributes import (
    ATTRIBUTES,
    ProfileConflict,
    ProfileInputError,
    parse_identity,
    upsert_profile,
    validate_attributes,
)
from bot.customers.orders import RowError

__all__ = ["COLUMNS", "CustomerImportError", "CustomerImportReport", "import_customers"]

COLUMNS = ("customer", *ATTRIBUTES)


class CustomerImportError(ValueError):
    """The file as a whole cannot be used (no header, unknown or missing columns)."""


@dataclass
class CustomerImportReport:
    """Customers created, updated, left unchanged, and the rejected rows."""

    created: int = 0
    updated: int = 0
    unchanged: int = 0
    errors: list[RowError] = field(default_factory=list)


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
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    header = [h.strip() for h in (reader.fieldnames or [])]
    if not header:
        raise CustomerImportError("the file is empty (expected a header line)")
    reader.fieldnames = header
    unknown = [h for h in header if h not in COLUMNS]
    if unknown:
        raise CustomerImportError(
            f"unknown column(s) {', '.join(map(repr, unknown))} (columns: {', '.join(COLUMNS)})"
        )
    if "customer" not in header and "phone" not in header:
        raise CustomerImportError("the file needs a 'customer' or a 'phone' column")
    report = CustomerImportReport()
    seen: dict[str, int] = {}
    for row in reader:
        line = reader.line_num
        if None in row:
            report.errors.append(RowError(line, "", "more fields than columns"))
            continue
        if all(not (v or "").strip() for v in row.values()):
            continue
        who = (row.get("customer") or "").strip()
        try:
            identity = parse_identity(who) if who else None
            attrs = validate_attributes(
                {k: v for k, v in row.items() if k != "customer"},
                today=today,
                empty_clears=False,
            )
            if identity is None and not attrs.get("phone"):
                raise ProfileInputError("give 'customer' (<channel>:<user id>) or 'phone'")
        except ProfileInputError as exc:
            report.errors.append(RowError(line, who, str(exc)))
            continue
        key = ":".join(identity) if identity else f"phone:{attrs['phone']}"
        if key in seen:
            report.errors.append(
                RowError(line, who, f"the same customer as line {seen[key]} (one row each)")
            )
            continue
        seen[key] = line
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
            report.errors.append(RowError(line, who, str(exc)))
            continue
        if result.created:
            report.created += 1
        elif result.changed:
            report.updated += 1
        else:
            report.unchanged += 1
    return report
