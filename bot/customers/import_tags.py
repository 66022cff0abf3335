"""Import customer tags from CSV (source ``import:<file>``): ``siyu tags import FILE.csv``.

Columns: ``customer`` (``<channel>:<user id>``) or ``phone``, ``tag``, and optionally
``ttl_days`` (0 or empty = no expiry). Bad rows are reported by line; good rows are applied
in one transaction. Re-importing refreshes last-seen and expiry (no duplicates).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.customers.orders import RowError, normalize_phone
from storage.models import Customer
from storage.repos import add_tag, find_identity

__all__ = ["TagImportError", "TagImportReport", "import_tags"]

MAX_TAG = 64


class TagImportError(ValueError):
    """The file as a whole cannot be used (e.g. a missing column)."""


@dataclass
class TagImportReport:
    """New tags, refreshed ones, and rejected rows."""

    added: int = 0
    refreshed: int = 0
    errors: list[RowError] = field(default_factory=list)


def import_tags(session: Session, text: str, *, source: str, now: datetime) -> TagImportReport:
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    header = [h.strip() for h in (reader.fieldnames or [])]
    reader.fieldnames = header
    if "tag" not in header or not ({"customer", "phone"} & set(header)):
        raise TagImportError("need columns 'tag' and 'customer' or 'phone' (optional: ttl_days)")
    report = TagImportReport()
    for row in reader:
        line = reader.line_num
        tag = (row.get("tag") or "").strip()
        who = (row.get("customer") or "").strip()
        raw_phone = (row.get("phone") or "").strip()
        raw_ttl = (row.get("ttl_days") or "").strip()
        if not tag or len(tag) > MAX_TAG:
            report.errors.append(RowError(line, "", f"'tag' must be 1-{MAX_TAG} characters"))
            continue
        if raw_ttl and (not raw_ttl.isdigit() or int(raw_ttl) > 3650):
            report.errors.append(RowError(line, "", f"'ttl_days' {raw_ttl!r} must be 0-3650"))
            continue
        customer_id = None
        if who:
            channel, sep, user = who.partition(":")
            identity = find_identity(session, channel, user) if sep else None
            if identity is None:
                report.errors.append(RowError(line, "", f"no customer with identity {who!r}"))
                continue
            customer_id = identity.customer_id
        elif raw_phone:
            phone = normalize_phone(raw_phone)
            customer_id = (
                session.scalar(
                    select(Customer.id).where(Customer.phone == phone).order_by(Customer.id)
                )
                if phone
                else None
            )
            if customer_id is None:
                report.errors.append(RowError(line, "", f"no customer with phone {raw_phone!r}"))
                continue
        else:
            report.errors.append(RowError(line, "", "give 'customer' or 'phone'"))
            continue
        ttl = timedelta(days=int(raw_ttl)) if raw_ttl and int(raw_ttl) else None
        if add_tag(session, customer_id, tag, source=source[:128], now=now, ttl=ttl):
            report.added += 1
        else:
            report.refreshed += 1
        session.flush()
    return report
