"""``siyu`` customer subcommands: import orders, segments, RFM recompute, tag export.

``siyu import orders FILE.csv``      columns in bot/customers/orders.py; exit 0 all rows taken,
                                     1 some rows rejected (good ones kept), 2 unusable file
``siyu import customers FILE.csv``   columns in bot/customers/import_customers.py; exit codes the same
``siyu customer set CH ID k=v ...``  profile attributes (bot/customers/attributes.py); exit 2 bad
                                     input, 1 unknown customer or phone conflict
``siyu segment count EXPR``          count (exit 2 with the position for a bad expression)
``siyu segment preview EXPR``        the first customers
``siyu segment save NAME EXPR`` · ``siyu segment list`` · ``siyu segment delete NAME``
``siyu rfm recompute``               the nightly job, now
``siyu tags export [--tag T] [-o FILE]``  customer tags with sources as CSV (streamed)
``siyu tags import FILE.csv``        tags from CSV (source ``import:<file>``; bot/customers/import_tags.py)
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import date
from pathlib import Path
from typing import cast
from zoneinfo import ZoneInfo

from sqlalchemy import select

from bot.app.config import Config
from bot.core.csv_export import csv_writer
from bot.core.i18n import t

__all__ = ["COMMANDS", "add_parsers"]

EXIT_USAGE = 2


def add_parsers(sub, common: argparse.ArgumentParser) -> None:
    imp = sub.add_parser("import", parents=[common], help="import data (orders)")
    isub = imp.add_subparsers(dest="import_command", required=True, metavar="WHAT")
    orders = isub.add_parser(
        "orders",
        parents=[common],
        help="import orders from CSV (order_id, customer|phone, amount, currency, time, items)",
    )
    orders.add_argument("file", metavar="FILE.csv")
    customers = isub.add_parser(
        "customers",
        parents=[common],
        help="create or update customers from CSV (customer|phone, name, birthday, city, "
        "locale, timezone)",
    )
    customers.add_argument("file", metavar="FILE.csv")

    seg = sub.add_parser("segment", parents=[common], help="customer segments (docs/segments.md)")
    ssub = seg.add_subparsers(dest="segment_command", required=True, metavar="ACTION")
    count = ssub.add_parser("count", parents=[common], help="count customers in a segment")
    count.add_argument("expression", metavar="EXPR")
    preview = ssub.add_parser("preview", parents=[common], help="show the first customers")
    preview.add_argument("expression", metavar="EXPR")
    preview.add_argument("--limit", type=int, default=20)
    save = ssub.add_parser("save", parents=[common], help="save a segment by name")
    save.add_argument("name")
    save.add_argument("expression", metavar="EXPR")
    ssub.add_parser("list", parents=[common], help="list saved segments")
    delete = ssub.add_parser("delete", parents=[common], help="delete a saved segment")
    delete.add_argument("name")

    rfm = sub.add_parser("rfm", parents=[common], help="RFM scores, lifecycle and tiers")
    rsub = rfm.add_subparsers(dest="rfm_command", required=True, metavar="ACTION")
    rsub.add_parser("recompute", parents=[common], help="recompute now (normally nightly)")

    tags = sub.add_parser("tags", parents=[common], help="customer tags")
    tsub = tags.add_subparsers(dest="tags_command", required=True, metavar="ACTION")
    export = tsub.add_parser("export", parents=[common], help="export customer tags as CSV")
    export.add_argument("--tag", default=None, help="only this tag")
    export.add_argument("-o", "--output", default="-", help="file (default: stdout)")
    export.add_argument("--include-expired", action="store_true")
    timport = tsub.add_parser(
        "import", parents=[common], help="import tags from CSV (customer|phone, tag, ttl_days)"
    )
    timport.add_argument("file", metavar="FILE.csv")


def _db(config: Config):
    from storage.db import Database

    return Database(config.database.url)


def _now():
    from bot.core.clock import SystemClock

    return SystemClock().now()


def add_customer_parsers(csub, common: argparse.ArgumentParser) -> None:
    """``siyu customer set <channel> <user id> key=value ...`` (under ``siyu customer``)."""
    from bot.app.config import CHANNELS
    from bot.customers.attributes import ATTRIBUTES

    cset = csub.add_parser(
        "set",
        parents=[common],
        help=f"set profile attributes ({', '.join(ATTRIBUTES)}); key= clears",
    )
    cset.add_argument("channel", choices=CHANNELS)
    cset.add_argument("user_id")
    cset.add_argument("pairs", nargs="+", metavar="key=value")
    _add_forget_parser(csub, common)


def _add_forget_parser(csub, common: argparse.ArgumentParser) -> None:
    """``siyu customer forget <channel> <user id> --yes [--by NAME]`` (PIPL erasure)."""
    from bot.app.config import CHANNELS
    from bot.core.i18n import t

    forget = csub.add_parser("forget", parents=[common], help=t("privacy.forget.help", "en"))
    forget.add_argument("channel", choices=CHANNELS)
    forget.add_argument("user_id")
    forget.add_argument("--yes", action="store_true", help="confirm the erasure")
    forget.add_argument("--by", default="", help="who asks (for the audit log); default: $USER")


def cmd_customer_forget(config: Config, args: argparse.Namespace) -> int:
    """Erase a customer's personal data; exit 2 without --yes, 1 for an unknown customer."""
    import getpass

    from bot.core.i18n import t
    from bot.customers.forget import NoSuchCustomer, forget_customer

    locale = config.general.locale
    who = f"{args.channel}:{args.user_id}"
    if not args.yes:
        print(t("privacy.forget.confirm", locale, who=who), file=sys.stderr)
        return EXIT_USAGE
    by = f"cli:{(args.by or getpass.getuser())[:100]}"
    db = _db(config)
    try:
        with db.transaction() as session:
            report = forget_customer(session, args.channel, args.user_id, by=by, now=_now())
    except NoSuchCustomer:
        print(t("privacy.forget.unknown", locale, who=who), file=sys.stderr)
        return 1
    finally:
        db.close()
    print(
        t(
            "privacy.forget.done",
            locale,
            customer_id=report.customer_id,
            identities=report.identities,
            by=by,
        )
    )
    return 0


def cmd_customer_set(config: Config, args: argparse.Namespace) -> int:
    """Set attributes of an existing customer; exit 2 on bad input, 1 if not applied."""
    from bot.customers.attributes import (
        ProfileConflict,
        ProfileInputError,
        format_birthday,
        upsert_profile,
        validate_attributes,
    )

    now = _now()
    raw: dict[str, str] = {}
    try:
        for pair in args.pairs:
            key, sep, value = pair.partition("=")
            if not sep or not key.strip():
                raise ProfileInputError(f"expected key=value, got {pair!r}")
            if key.strip() in raw:
                raise ProfileInputError(f"'{key.strip()}' is given twice")
            raw[key.strip()] = value
        local_today = now.astimezone(ZoneInfo(config.general.timezone)).date()
        attrs = validate_attributes(raw, today=local_today)
    except ProfileInputError as exc:
        print(f"siyu: {exc}", file=sys.stderr)
        return EXIT_USAGE
    db = _db(config)
    try:
        db.migrate()
        with db.transaction() as session:
            result = upsert_profile(
                session,
                identity=(args.channel, args.user_id),
                attrs=attrs,
                now=now,
                default_locale=config.general.locale,
                default_timezone=config.general.timezone,
                create=False,
            )
    except LookupError as exc:
        print(
            f"siyu: {exc.args[0]} (customers appear on first contact, or by "
            "POST /api/customers and siyu import customers)",
            file=sys.stderr,
        )
        return 1
    except ProfileConflict as exc:
        print(f"siyu: not changed: {exc}", file=sys.stderr)
        return 1
    finally:
        db.close()
    shown = {
        k: (format_birthday(cast("date | None", v)) if k == "birthday" else v)
        for k, v in attrs.items()
        if k in result.changed
    }
    if getattr(args, "json", False):
        print(json.dumps({"customer_id": result.customer_id, "changed": shown}, ensure_ascii=False))
        return 0
    if not result.changed:
        print(f"customer #{result.customer_id}: nothing changed")
        return 0
    text = ", ".join(f"{k}={'' if v is None else v}" for k, v in shown.items())
    print(f"customer #{result.customer_id}: set {text}")
    return 0


def cmd_import(config: Config, args: argparse.Namespace) -> int:
    if args.import_command == "customers":
        return cmd_import_customers(config, args)
    from bot.core.templating import Renderer
    from bot.customers.intake import IntakeError
    from bot.customers.orders import parse_csv, store_orders
    from bot.customers.rfm import refresh_customers
    from bot.measures.referrals import settle_first_orders as settle_referrals

    path = Path(args.file)
    text = _read(path)
    if text is None:
        return EXIT_USAGE
    now = _now()
    try:
        good, errors = parse_csv(
            text,
            tz=ZoneInfo(config.general.timezone),
            now=now,
            default_currency=config.rfm.currency,
        )
    except IntakeError as exc:
        print(f"siyu: {path}: {_text_of(exc)}", file=sys.stderr)
        return EXIT_USAGE
    from bot.app.cli_output import Progress, emit_json, say
    from bot.customers.orders import ImportReport

    db = _db(config)
    try:
        db.migrate()
        report = ImportReport()
        with (
            db.transaction() as session,
            Progress(say("cli.progress.import_orders"), len(good)) as progress,
        ):
            for start in range(0, len(good), 1000):
                part = store_orders(
                    session, good[start : start + 1000], source=f"csv:{path.name}", now=now
                )
                report.inserted += part.inserted
                report.duplicates += part.duplicates
                report.errors += part.errors
                report.customers |= part.customers
                progress.advance(len(good[start : start + 1000]))
            refresh_customers(session, config, now, report.customers)
            settle_referrals(session, config=config, renderer=Renderer(), now=now)
    finally:
        db.close()
    rejected = sorted(errors + report.errors, key=lambda e: e.where)
    _print_rejected(path, rejected, "cli.import.rejected_order")
    if getattr(args, "json", False):
        emit_json(
            {
                "file": str(path),
                "inserted": report.inserted,
                "duplicates": report.duplicates,
                "rejected": [
                    {"line": e.where, "order_id": e.order_id, **_reason(e)} for e in rejected
                ],
            }
        )
        return 1 if rejected else 0
    print(
        say(
            "cli.import.orders_done",
            path=path,
            inserted=report.inserted,
            duplicates=report.duplicates,
            rejected=len(rejected),
        )
    )
    return 1 if rejected else 0


def cmd_import_customers(config: Config, args: argparse.Namespace) -> int:
    from bot.customers.import_customers import CustomerImportError, import_customers

    path = Path(args.file)
    text = _read(path)
    if text is None:
        return EXIT_USAGE
    from bot.app.cli_output import Progress, emit_json, say

    now = _now()
    db = _db(config)
    try:
        db.migrate()
        with db.transaction() as session, Progress(say("cli.progress.import_customers")):
            report = import_customers(
                session,
                text,
                now=now,
                today=now.astimezone(ZoneInfo(config.general.timezone)).date(),
                default_locale=config.general.locale,
                default_timezone=config.general.timezone,
            )
    except CustomerImportError as exc:
        print(f"siyu: {path}: {_text_of(exc)}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        db.close()
    _print_rejected(path, report.errors, "cli.import.rejected_named")
    if getattr(args, "json", False):
        emit_json(
            {
                "file": str(path),
                "created": report.created,
                "updated": report.updated,
                "unchanged": report.unchanged,
                "rejected": [{"line": e.where, **_reason(e)} for e in report.errors],
            }
        )
        return 1 if report.errors else 0
    print(
        say(
            "cli.import.customers_done",
            path=path,
            created=report.created,
            updated=report.updated,
            unchanged=report.unchanged,
            rejected=len(report.errors),
        )
    )
    return 1 if report.errors else 0


def cmd_segment(config: Config, args: argparse.Namespace) -> int:
    from bot.customers import segments
    from bot.customers.segment_language import SegmentError

    db = _db(config)
    now = _now()
    try:
        db.migrate()
        with db.transaction() as session:
            action = args.segment_command
            as_json = getattr(args, "json", False)
            if action == "count":
                n = segments.count_segment(session, args.expression, config=config, now=now)
                print(json.dumps({"expression": args.expression, "count": n}, ensure_ascii=False)
                      if as_json else n)  # fmt: skip
            elif action == "preview":
                found = segments.preview_segment(
                    session, args.expression, config=config, now=now, limit=max(args.limit, 1)
                )
                if as_json:
                    print(json.dumps(
                        [{"id": c.id, "display_name": c.display_name, "city": c.city} for c in found],
                        ensure_ascii=False,
                    ))  # fmt: skip
                for c in [] if as_json else found:
                    print(f"#{c.id}\t{c.display_name}\t{c.city or '-'}")
            elif action == "save":
                segments.save_segment(
                    session, args.name, args.expression, config=config, now=now, created_by="cli"
                )
                print(f"saved segment {args.name}")
            elif action == "list":
                saved = segments.list_segments(session)
                if as_json:
                    print(json.dumps([{"name": s.name, "expression": s.expression} for s in saved],
                                     ensure_ascii=False))  # fmt: skip
                for s in [] if as_json else saved:
                    print(f"{s.name}\t{s.expression}")
            elif action == "delete":
                if not segments.delete_segment(session, args.name):
                    print(f"siyu: no saved segment named {args.name!r}", file=sys.stderr)
                    return 1
                print(f"deleted segment {args.name}")
    except SegmentError as exc:
        print(f"siyu: bad segment expression: {exc.pretty()}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        db.close()
    return 0


def cmd_rfm(config: Config, args: argparse.Namespace) -> int:
    from bot.app.cli_output import Progress, emit_json, say
    from bot.customers.rfm import recompute_scores

    db = _db(config)
    try:
        db.migrate()
        with db.transaction() as session, Progress(say("cli.progress.rfm")):
            result = recompute_scores(session, config, _now())
    finally:
        db.close()
    if getattr(args, "json", False):
        emit_json(
            {
                "scored": result.scored,
                "tier_changes": result.tier_changes,
                "stage_changes": result.stage_changes,
                "seconds": round(result.seconds, 3),
            }
        )
        return 0
    print(
        f"scored {result.scored} customer(s); {result.tier_changes} tier and "
        f"{result.stage_changes} stage change(s); {result.seconds:.1f} s"
    )
    return 0


def _reason(e) -> dict:
    """A rejected row's reason for ``--json``: its stable code, parameters and text (in the
    CLI reader's locale)."""
    from bot.app.cli_output import cli_locale

    return {"code": e.code, "params": e.params, "reason": e.text(cli_locale())}


def _text_of(exc: Exception) -> str:
    """A refused file's reason in the CLI reader's locale."""
    from bot.app.cli_output import cli_locale

    text = getattr(exc, "text", None)
    return text(cli_locale()) if callable(text) else str(exc)


def _print_rejected(path: Path, rejected, key: str) -> None:
    """Each rejected row on stderr, with its reason in the CLI reader's locale."""
    from bot.app.cli_output import cli_locale

    locale = cli_locale()
    for e in rejected:
        print(
            t(key, locale, place=f"{path}:{e.where}", name=e.key, reason=e.text(locale))
            if e.key
            else t("cli.import.rejected", locale, place=f"{path}:{e.where}", reason=e.text(locale)),
            file=sys.stderr,
        )


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        print(f"siyu: {path}: no such file", file=sys.stderr)
    except UnicodeDecodeError:
        print(f"siyu: {path}: not UTF-8 text", file=sys.stderr)
    except OSError as exc:
        print(f"siyu: {path}: {exc.strerror}", file=sys.stderr)
    return None


def cmd_tags_import(config: Config, args: argparse.Namespace) -> int:
    from bot.app.cli_output import say
    from bot.customers.import_tags import TagImportError, import_tags

    path = Path(args.file)
    text = _read(path)
    if text is None:
        return EXIT_USAGE
    db = _db(config)
    try:
        db.migrate()
        with db.transaction() as session:
            report = import_tags(session, text, source=f"import:{path.name}", now=_now())
    except TagImportError as exc:
        print(f"siyu: {path}: {_text_of(exc)}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        db.close()
    _print_rejected(path, report.errors, "cli.import.rejected_named")
    if getattr(args, "json", False):
        print(json.dumps({
            "file": str(path), "added": report.added, "refreshed": report.refreshed,
            "rejected": [{"line": e.where, **_reason(e)} for e in report.errors],
        }, ensure_ascii=False))  # fmt: skip
        return 1 if report.errors else 0
    print(
        say(
            "cli.import.tags_done",
            path=path,
            added=report.added,
            refreshed=report.refreshed,
            rejected=len(report.errors),
        )
    )
    return 1 if report.errors else 0


def cmd_tags(config: Config, args: argparse.Namespace) -> int:
    if args.tags_command == "import":
        return cmd_tags_import(config, args)
    if args.output == "-":
        rows = _export_tags(config, args, sys.stdout)
    else:
        with open(args.output, "w", newline="", encoding="utf-8") as out:
            rows = _export_tags(config, args, out)
    print(f"exported {rows} customer tag(s)", file=sys.stderr)
    return 0


def _export_tags(config: Config, args: argparse.Namespace, out) -> int:
    """Stream customer tags with their sources as CSV (constant memory)."""
    from sqlalchemy import or_

    from storage.models import Customer, CustomerTag, Tag

    now = _now()
    db = _db(config)
    rows = 0
    try:
        writer = csv_writer(out)
        writer.writerow(
            [
                "customer_id",
                "display_name",
                "tag",
                "source",
                "first_seen_at",
                "last_seen_at",
                "expires_at",
            ]
        )
        stmt = (
            select(
                CustomerTag.customer_id,
                Customer.display_name,
                Tag.name,
                CustomerTag.source,
                CustomerTag.first_seen_at,
                CustomerTag.last_seen_at,
                CustomerTag.expires_at,
            )
            .join(Tag, Tag.id == CustomerTag.tag_id)
            .join(Customer, Customer.id == CustomerTag.customer_id)
            .order_by(CustomerTag.customer_id, Tag.name)
        )
        if args.tag:
            stmt = stmt.where(Tag.name == args.tag)
        if not args.include_expired:
            stmt = stmt.where(or_(CustomerTag.expires_at.is_(None), CustomerTag.expires_at > now))
        with db.engine.connect() as conn:
            for row in conn.execution_options(yield_per=5000).execute(stmt):
                writer.writerow(
                    [
                        v.isoformat() if hasattr(v, "isoformat") else ("" if v is None else v)
                        for v in row
                    ]
                )
                rows += 1
    finally:
        db.close()
    return rows


def profile_lines(p: dict) -> list[str]:
    """Attributes, value (RFM, lifecycle, tier) and recent orders for ``customer show``."""
    v = p.get("value") or {}
    rfm = "".join(str(x) for x in v["rfm"]) if v.get("rfm") and None not in v["rfm"] else "-"
    lines = [
        f"  phone: {p.get('phone') or '-'}  city: {p.get('city') or '-'}  "
        f"birthday: {p.get('birthday') or '-'}",
        f"  stage: {v.get('lifecycle', 'new')}  tier: {v.get('tier') or '-'}  "
        f"RFM: {rfm} {v.get('rfm_group') or ''}".rstrip(),
        f"  orders: {v.get('orders', 0)}, spend {v.get('spend', 0):.2f} "
        f"(12 months {v.get('spend_12m', 0):.2f}), last order {v.get('last_order_at') or '-'}",
    ]
    if p.get("interests"):
        shown = ", ".join(f"{i['tag']} {i['score']:g} ({i['hits']} hits)" for i in p["interests"])
        lines.append(f"  interests: {shown}")
    for o in (p.get("orders") or [])[:5]:
        items = "; ".join(o["items"])
        lines.append(f"    {o['at']}  {o['order_id']}  {o['amount']:.2f} {o['currency']}  {items}")
    return lines


COMMANDS = {"import": cmd_import, "segment": cmd_segment, "rfm": cmd_rfm, "tags": cmd_tags}
