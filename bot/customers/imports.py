"""Imports started from the console: a CSV or JSON file of customers, orders or tags, run
as a batch job by a worker process.

The console checks the upload (kind, format, size, UTF-8) and queues it with
:func:`enqueue_import`; the file travels in the job's payload. The worker runs
:func:`run_import`: the file is read by the one intake (bot/customers/intake.py, through
the kind's own parser — the same as ``siyu import`` and the APIs), a file that cannot be
used as a whole fails the job with the intake's reason, and the good rows are applied in
chunks of :data:`CHUNK` rows, one transaction each, with the job's progress after each.
Every kind is idempotent (an order id is stored once, a customer is upserted, a tag is
refreshed), so a job resumed after a crash applies nothing twice. The result keeps the
counts and the first :data:`MAX_ERRORS_KEPT` rejected rows with their line (CSV) or index
(JSON) and reason (its catalogue code and parameters, said in each reader's locale when
shown); the file itself is dropped from the job when it ends.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from sqlalchemy.orm import Session

from bot.customers import import_customers, import_tags, orders
from bot.customers.intake import IntakeError, RowError
from bot.customers.rfm import refresh_customers
from bot.jobs import queue
from bot.jobs.worker import JobContext, JobRefused

if TYPE_CHECKING:
    from bot.app.services import Services

__all__ = [
    "CHUNK",
    "FORMATS",
    "KIND",
    "MAX_ERRORS_KEPT",
    "MAX_FILE_BYTES",
    "MAX_JSON_ITEMS",
    "WHAT",
    "ImportRefused",
    "Upload",
    "check_upload",
    "enqueue_import",
    "failure_text",
    "run_import",
]

#: The job kind of a console import.
KIND = "import"
#: What can be imported, and in which formats.
WHAT = ("customers", "orders", "tags")
FORMATS = ("csv", "json")
#: The largest file the console takes (the job payload carries it).
MAX_FILE_BYTES = 1024 * 1024
#: The most objects one JSON file may hold.
MAX_JSON_ITEMS = 20_000
#: Rows applied per transaction (and per progress report).
CHUNK = 500
#: Rejected rows kept in the job's result (the count is always whole).
MAX_ERRORS_KEPT = 50


class ImportRefused(ValueError):
    """An upload refused before it is queued; ``key`` and ``values`` name the reason in
    the i18n catalogue (``console.imports.error.<key>``)."""

    def __init__(self, key: str, **values: object) -> None:
        super().__init__(key)
        self.key, self.values = key, values


@dataclass(frozen=True)
class Upload:
    """A checked upload: what it holds, its format, its file name and its text."""

    what: str
    format: str
    name: str
    text: str


def check_upload(what: str, name: str, data: bytes) -> Upload:
    """Check an uploaded file before it is queued: a known kind, a ``.csv`` or ``.json``
    name, not empty, at most :data:`MAX_FILE_BYTES`, UTF-8 text. Raises
    :class:`ImportRefused`."""
    if what not in WHAT:
        raise ImportRefused("what")
    name = (name or "").strip()[-128:]
    fmt = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    if fmt not in FORMATS:
        raise ImportRefused("format", name=name or "-")
    if len(data) > MAX_FILE_BYTES:
        raise ImportRefused("too_large", limit=MAX_FILE_BYTES // 1024, size=len(data) // 1024)
    if not data.strip():
        raise ImportRefused("empty")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ImportRefused("encoding") from None
    if "\x00" in text:
        raise ImportRefused("encoding")
    return Upload(what, fmt, name, text)


def enqueue_import(
    session: Session, upload: Upload, *, token: str, now: datetime, created_by: str
) -> queue.Enqueued:
    """Queue the import of ``upload``; ``token`` is the form's one-time token, so a form
    sent twice queues one job."""
    return queue.enqueue(
        session,
        kind=KIND,
        key=f"import:{created_by}:{token}",
        payload={
            "what": upload.what,
            "format": upload.format,
            "file": upload.name,
            queue.INPUT: upload.text,  # dropped when the job ends
        },
        now=now,
        created_by=created_by,
        max_attempts=3,
    )


def _refused(refusal: IntakeError) -> JobRefused:
    """A file that cannot be used fails the job: the error in English, and the result
    keeps the reason's code and parameters (``failure``) to be said in a reader's locale."""
    failure = RowError.of(0, "", refusal).as_dict()
    return JobRefused(str(refusal), {"failure": {k: failure[k] for k in ("code", "params")}})


def failure_text(result: dict[str, Any] | None, locale: str | None) -> str | None:
    """Why a failed import could not use its file, for a reader of ``locale`` (None when
    the result keeps no reason)."""
    failure = (result or {}).get("failure")
    return RowError.load(failure).text(locale) if isinstance(failure, dict) else None


def _json(text: str) -> object:
    try:
        return json.loads(text.lstrip("\ufeff"))
    except json.JSONDecodeError as exc:
        raise _refused(
            IntakeError("intake.file.json", detail=exc.msg, line=exc.lineno, column=exc.colno)
        ) from None
    except RecursionError:
        raise _refused(IntakeError("intake.file.json_deep")) from None


def _chunks(items: list[Any]) -> list[list[Any]]:
    return [items[i : i + CHUNK] for i in range(0, len(items), CHUNK)]


def run_import(services: Services, job: JobContext) -> dict[str, Any]:
    """Run one import job (see the module docstring); returns the counts and the first
    rejected rows."""
    what, fmt = str(job.payload["what"]), str(job.payload["format"])
    text, name = str(job.payload[queue.INPUT]), str(job.payload.get("file", ""))
    config, now = services.config, services.clock.now()
    zone = ZoneInfo(config.general.timezone)
    source = f"console:{name}"[:128]
    counts: dict[str, int] = {}
    errors: list[RowError] = []
    try:
        if what == "orders":
            data = _json(text) if fmt == "json" else None
            if data is None:
                good, rejected = orders.parse_csv(
                    text, tz=zone, now=now, default_currency=config.rfm.currency
                )
            else:
                good, rejected = orders.parse_json(
                    data,
                    tz=zone,
                    now=now,
                    default_currency=config.rfm.currency,
                    max_items=MAX_JSON_ITEMS,
                )
            errors += rejected
            counts = {"inserted": 0, "duplicates": 0}

            def apply_orders(session: Session, part: list[Any]) -> list[RowError]:
                report = orders.store_orders(session, part, source=source, now=now)
                refresh_customers(session, config, now, report.customers)
                counts["inserted"] += report.inserted
                counts["duplicates"] += report.duplicates
                return report.errors

            _apply(services, job, good, apply_orders, errors)
        elif what == "customers":
            today = now.astimezone(zone).date()
            found = (
                import_customers.parse_json(_json(text), today=today, max_items=MAX_JSON_ITEMS)
                if fmt == "json"
                else import_customers.parse_csv(text, today=today)
            )
            errors += found.errors
            counts = {"created": 0, "updated": 0, "unchanged": 0}

            def apply_customers(session: Session, part: list[Any]) -> list[RowError]:
                report = import_customers.apply_customers(
                    session,
                    part,
                    now=now,
                    default_locale=config.general.locale,
                    default_timezone=config.general.timezone,
                )
                counts["created"] += report.created
                counts["updated"] += report.updated
                counts["unchanged"] += report.unchanged
                return report.errors

            _apply(services, job, found.good, apply_customers, errors)
        elif what == "tags":
            found_tags = (
                import_tags.parse_json(_json(text), max_items=MAX_JSON_ITEMS)
                if fmt == "json"
                else import_tags.parse_csv(text)
            )
            errors += found_tags.errors
            counts = {"added": 0, "refreshed": 0}

            def apply_tags(session: Session, part: list[Any]) -> list[RowError]:
                report = import_tags.apply_tags(session, part, source=source, now=now)
                counts["added"] += report.added
                counts["refreshed"] += report.refreshed
                return report.errors

            _apply(services, job, found_tags.good, apply_tags, errors)
        else:
            raise JobRefused(f"unknown import {what!r}")
    except IntakeError as exc:
        raise _refused(exc) from None
    errors.sort(key=lambda e: e.where)
    return {
        "what": what,
        "format": fmt,
        "file": name,
        "counts": counts,
        "rejected": len(errors),
        "errors": [e.as_dict() for e in errors[:MAX_ERRORS_KEPT]],
    }


def _apply(
    services: Services,
    job: JobContext,
    good: list[Any],
    apply: Any,
    errors: list[RowError],
) -> None:
    """Apply ``good`` rows in chunks, one transaction each, reporting progress."""
    total = len(good)
    job.progress(0, total, force=True)
    done = 0
    for part in _chunks(good):
        with services.db.transaction() as session:
            errors += apply(session, part)
        done += len(part)
        job.progress(done, total, force=done == total)
