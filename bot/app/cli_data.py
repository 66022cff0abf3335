"""``siyu customer search`` and ``siyu export customers|segment|campaign`` (CSV).

``siyu customer search QUERY [--limit N] [--json]``   by name, phone (or its last digits),
                                                     channel user id or city
``siyu export customers [-o FILE]``                  every customer with attributes, tags
``siyu export segment EXPR [-o FILE]``               the customers of a segment expression
``siyu export campaign NAME [-o FILE]``              who a campaign targeted: arm, variant,
                                                     status and reason, and what the outbox did
CSV goes through :func:`bot.app.cli_output.write_csv`; progress on stderr.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator

from sqlalchemy import ColumnElement, func, or_, select

from bot.app.cli_output import Progress, emit_json, say, write_csv
from bot.app.config import Config

__all__ = ["add_parsers", "add_search_parser", "cmd_export", "cmd_search", "search_customers"]

EXIT_USAGE = 2
MAX_QUERY = 100
CUSTOMER_HEADER = (
    "id", "display_name", "phone", "birthday", "city", "locale", "timezone",
    "marketing_opt_out", "identities", "tags", "created_at", "last_active_at",
)  # fmt: skip


def add_search_parser(csub, common: argparse.ArgumentParser) -> None:
    """``siyu customer search QUERY`` (under ``siyu customer``)."""
    search = csub.add_parser(
        "search", parents=[common], help="find customers by name, phone, user id or city"
    )
    search.add_argument("query")
    search.add_argument("--limit", type=int, default=20)


def add_parsers(sub, common: argparse.ArgumentParser) -> None:
    export = sub.add_parser("export", parents=[common], help="export customers as CSV")
    export.add_argument("kind", choices=("customers", "segment", "campaign"))
    export.add_argument("target", nargs="?", help="segment: EXPR; campaign: NAME")
    export.add_argument("-o", "--output", default="-", help="file (default: stdout)")


def search_customers(session, query: str, limit: int = 20) -> list[dict]:
    """Customers whose name, phone, channel user id or city contains ``query``."""
    from storage.models import Customer, Identity

    query = query.strip()[:MAX_QUERY]
    like = f"%{query.replace('%', '').replace('_', '')}%"
    digits = "".join(ch for ch in query if ch.isdigit())
    conditions: list[ColumnElement[bool]] = [
        Customer.display_name.like(like),
        Customer.city.like(like),
    ]
    if len(digits) >= 4:
        conditions.append(Customer.phone.like(f"%{digits}%"))
    by_identity = select(Identity.customer_id).where(
        or_(Identity.external_id == query, Identity.display_name.like(like))
    )
    if query.isdigit():
        conditions.append(Customer.id == int(query[:18]))
    customers = list(
        session.scalars(
            select(Customer)
            .where(or_(*conditions, Customer.id.in_(by_identity)))
            .order_by(Customer.id)
            .limit(max(1, min(limit, 500)))
        )
    )
    idents: dict[int, list[str]] = {}
    for cid, channel, ext in session.execute(
        select(Identity.customer_id, Identity.channel, Identity.external_id).where(
            Identity.customer_id.in_([c.id for c in customers])
        )
    ):
        idents.setdefault(cid, []).append(f"{channel}:{ext}")
    return [
        {
            "id": c.id,
            "display_name": c.display_name,
            "phone": c.phone,
            "city": c.city,
            "identities": idents.get(c.id, []),
        }
        for c in customers
    ]


def cmd_search(config: Config, args: argparse.Namespace) -> int:
    from storage.db import Database

    db = Database(config.database.url)
    try:
        with db.sessions() as session:
            found = search_customers(session, args.query, args.limit)
    finally:
        db.close()
    if args.json:
        emit_json({"query": args.query, "customers": found})
        return 0 if found else 1
    if not found:
        print("siyu: " + say("cli.no_customer", query=args.query), file=sys.stderr)
        return 1
    print(say("cli.search.header"))
    for c in found:
        print(
            f"#{c['id']}\t{c['display_name'] or '-'}\t{c['phone'] or '-'}\t{c['city'] or '-'}"
            f"\t{' '.join(c['identities'])}"
        )
    return 0


def _customer_rows(session, ids: list[int]) -> Iterator[list]:
    from storage.models import Customer, CustomerTag, Identity, Tag

    customers = session.scalars(select(Customer).where(Customer.id.in_(ids)).order_by(Customer.id))
    idents: dict[int, list[str]] = {}
    for cid, channel, ext in session.execute(
        select(Identity.customer_id, Identity.channel, Identity.external_id).where(
            Identity.customer_id.in_(ids)
        )
    ):
        idents.setdefault(cid, []).append(f"{channel}:{ext}")
    tags: dict[int, list[str]] = {}
    for cid, name in session.execute(
        select(CustomerTag.customer_id, Tag.name)
        .join(Tag, Tag.id == CustomerTag.tag_id)
        .where(CustomerTag.customer_id.in_(ids))
    ):
        tags.setdefault(cid, []).append(name)
    for c in customers:
        yield [
            c.id, c.display_name, c.phone, c.birthday.isoformat() if c.birthday else "",
            c.city, c.locale, c.timezone, "yes" if c.marketing_opt_out else "no",
            " ".join(idents.get(c.id, [])), " ".join(sorted(tags.get(c.id, []))),
            c.created_at.isoformat() if c.created_at else "",
            c.last_active_at.isoformat() if c.last_active_at else "",
        ]  # fmt: skip


def _batched(items: list[int], size: int = 1000) -> Iterator[list[int]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def cmd_export(config: Config, args: argparse.Namespace) -> int:
    """Export customers (all, a segment) or a campaign's targets as CSV."""
    from bot.core.clock import SystemClock
    from bot.customers.segment_language import SegmentError
    from bot.customers.segments import iter_segment_ids
    from storage.db import Database
    from storage.models import Customer

    if args.kind in ("segment", "campaign") and not args.target:
        print(f"siyu: export {args.kind} needs a {'EXPR' if args.kind == 'segment' else 'NAME'}",
              file=sys.stderr)  # fmt: skip
        return EXIT_USAGE
    db = Database(config.database.url)
    out = sys.stdout if args.output == "-" else open(args.output, "w", encoding="utf-8", newline="")  # noqa: SIM115
    try:
        with db.sessions() as session:
            if args.kind == "campaign":
                return _export_campaign(session, args, out)
            now = SystemClock().now()
            try:
                if args.kind == "segment":
                    ids = list(iter_segment_ids(session, args.target, config=config, now=now))
                else:
                    ids = list(session.scalars(select(Customer.id).order_by(Customer.id)))
            except SegmentError as exc:
                print(f"siyu: bad segment expression: {exc.pretty()}", file=sys.stderr)
                return EXIT_USAGE
            with Progress(say("cli.progress.export"), len(ids)) as progress:

                def rows() -> Iterator[list]:
                    for batch in _batched(ids):
                        yield from _customer_rows(session, batch)
                        progress.advance(len(batch))

                n = write_csv(CUSTOMER_HEADER, rows(), out)
    finally:
        if out is not sys.stdout:
            out.close()
        db.close()
    target = "stdout" if args.output == "-" else args.output
    print(say("cli.exported", n=n, target=target), file=sys.stderr)
    return 0


def _export_campaign(session, args: argparse.Namespace, out) -> int:
    from bot.marketing.campaigns.manage import find_campaign
    from storage.campaigns import CampaignTarget
    from storage.models import Customer, OutboxMessage

    campaign = find_campaign(session, args.target[:64])
    if campaign is None:
        print("siyu: " + say("cli.campaign.no_such", name=args.target), file=sys.stderr)
        return 1
    total = (
        session.scalar(select(func.count()).where(CampaignTarget.campaign_id == campaign.id)) or 0
    )
    outbox = dict(
        session.execute(
            select(OutboxMessage.customer_id, OutboxMessage.status).where(
                OutboxMessage.idempotency_key.like(f"campaign:{campaign.id}:%")
            )
        ).all()
    )
    query = (
        select(CampaignTarget, Customer.display_name)
        .join(Customer, Customer.id == CampaignTarget.customer_id)
        .where(CampaignTarget.campaign_id == campaign.id)
        .order_by(CampaignTarget.customer_id)
    )
    with Progress(say("cli.progress.export"), total) as progress:

        def rows() -> Iterator[list]:
            for target, name in session.execute(query):
                progress.advance()
                yield [
                    campaign.name, target.customer_id, name, target.arm, target.variant,
                    target.status, target.reason, outbox.get(target.customer_id, ""),
                ]  # fmt: skip

        n = write_csv(
            ("campaign", "customer_id", "display_name", "arm", "variant", "status", "reason",
             "delivery"), rows(), out,
        )  # fmt: skip
    target = "stdout" if args.output == "-" else args.output
    print(say("cli.exported", n=n, target=target), file=sys.stderr)
    return 0
