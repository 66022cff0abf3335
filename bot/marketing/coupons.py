"""Coupons: unguessable codes issued idempotently, redeemed exactly once.

Codes are 12 characters from an alphabet without look-alikes (0/O, 1/I/L), drawn with
:mod:`secrets` (about 59 bits: not guessable, not enumerable). Issuing is keyed by an
``issue_key`` (``campaign:<id>:<customer>``, ``scenario:<name>:<date>:<customer>``), so a
re-run gives the same code back. Redemption is one ``UPDATE ... WHERE status = 'issued'
... RETURNING``: of any number of simultaneous attempts exactly one wins. A redemption is
an order (``coupon-<CODE>``, so it feeds RFM), an interaction, and the coupon tags.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from bot.app.config import Config, CouponDef, CouponsConfig
from bot.app.exposure import real_channels
from storage import repos
from storage.coupons import CouponCode, CouponDefinition
from storage.db import insert_ignore
from storage.followups import cancel_for_customer
from storage.orders import Order

__all__ = [
    "ALPHABET",
    "Redemption",
    "customer_codes",
    "definition",
    "ensure_definition",
    "find_code",
    "format_code",
    "is_demo_code",
    "issue_codes",
    "issue_one",
    "new_code",
    "normalize_code",
    "redeem",
    "stock_left",
    "sync_definitions",
    "valid_codes",
]

ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
CODE_LENGTH = 12
#: Codes issued to sandbox personas start with this: visibly demo codes, which the coupon
#: API, the inbox and chat /redeem on real channels refuse (reason ``demo``).
DEMO_PREFIX = "DEMO"


def new_code() -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(CODE_LENGTH))


def normalize_code(text: str) -> str:
    """What a person typed → the stored form (case, spaces and dashes do not matter)."""
    return "".join(ch for ch in text.upper() if ch.isalnum())


def format_code(code: str) -> str:
    """``ABCD2345WXYZ`` → ``ABCD-2345-WXYZ`` (easier to read out at a till); a code with a
    prefix (flows and staff issue ``WKND…``, ``STAFF…``) reads ``WKND-ABCD-2345-WXYZ``."""
    head, code = code[:-CODE_LENGTH], code[-CODE_LENGTH:]
    groups = [code[i : i + 4] for i in range(0, len(code), 4)]
    if head.startswith(DEMO_PREFIX) and len(head) > len(DEMO_PREFIX):
        groups.insert(0, head[len(DEMO_PREFIX) :])
        head = DEMO_PREFIX
    return "-".join([head, *groups] if head else groups)


def is_demo_code(code: str) -> bool:
    """Was this code issued to a sandbox persona (see ``DEMO_PREFIX``)?"""
    return normalize_code(code).startswith(DEMO_PREFIX)


def _sandbox_only(session: Session, customer_ids: set[int]) -> set[int]:
    """The customers among ``customer_ids`` known only as sandbox personas."""
    from storage.models import Identity

    if not customer_ids:
        return set()
    channels: dict[int, set[str]] = {}
    for cid, channel in session.execute(
        select(Identity.customer_id, Identity.channel).where(Identity.customer_id.in_(customer_ids))
    ):
        channels.setdefault(cid, set()).add(channel)
    return {cid for cid, found in channels.items() if found == {"sandbox"}}


def _apply(row: CouponDefinition, item: CouponDef) -> None:
    row.title = item.title or item.name
    row.amount_cents = round(item.amount * 100)
    row.percent_off = item.percent
    row.min_spend_cents = round(item.min_spend * 100)
    row.valid_days = item.valid_days
    row.total_stock = item.total_stock
    row.per_customer = item.per_customer


def sync_definitions(session: Session, config: CouponsConfig, now: datetime) -> None:
    """Create or update coupon definitions from ``[coupons]`` (the issued count is kept)."""
    existing = {d.name: d for d in session.scalars(select(CouponDefinition))}
    for item in config.definitions:
        row = existing.get(item.name)
        if row is None:
            row = CouponDefinition(name=item.name, issued=0, created_at=now)
            session.add(row)
        _apply(row, item)
    session.flush()


def ensure_definition(session: Session, item: CouponDef, now: datetime) -> CouponDefinition:
    """The stored definition of ``item`` (a flow's offer, a ``[coupons]`` entry staff
    chose), created or brought up to date on use: issuing never waits for a sync."""
    row = definition(session, item.name)
    if row is None:
        row = CouponDefinition(name=item.name, issued=0, created_at=now)
        session.add(row)
    _apply(row, item)
    session.flush()
    return row


def definition(session: Session, name: str) -> CouponDefinition | None:
    return session.scalars(
        select(CouponDefinition).where(CouponDefinition.name == name)
    ).one_or_none()


def issue_codes(
    session: Session,
    coupon: CouponDefinition,
    wanted: Sequence[tuple[int, str]],
    *,
    now: datetime,
    campaign_id: int | None = None,
    prefix: str = "",
) -> dict[str, str]:
    """Issue codes for ``(customer_id, issue_key)`` pairs; returns issue_key → code.

    A key issued before gets its old code. A customer at the per-customer limit (codes
    redeemed or still valid count; expired unused ones do not), or a definition out of
    stock, gets no code (the key is missing from the result). ``prefix`` (letters and
    digits) goes in front of the random part, e.g. ``WKND`` for a flow's offer.
    """
    keys = [k for _, k in wanted]
    result: dict[str, str] = dict(
        session.execute(
            select(CouponCode.issue_key, CouponCode.code).where(CouponCode.issue_key.in_(keys))
        ).all()
    )
    fresh = [(cid, key) for cid, key in wanted if key not in result]
    if not fresh:
        return result
    held = dict(
        session.execute(
            select(CouponCode.customer_id, func.count())
            .where(
                CouponCode.definition_id == coupon.id,
                CouponCode.customer_id.in_({cid for cid, _ in fresh}),
                or_(CouponCode.status == "redeemed", CouponCode.expires_at > now),
            )
            .group_by(CouponCode.customer_id)
        ).all()
    )
    eligible = []
    for cid, key in fresh:
        if held.get(cid, 0) < coupon.per_customer:
            held[cid] = held.get(cid, 0) + 1
            eligible.append((cid, key))
    if not eligible:
        return result
    # Reserve stock under the definition's row lock (PostgreSQL), or SQLite's write lock.
    issued, stock = session.execute(
        select(CouponDefinition.issued, CouponDefinition.total_stock)
        .where(CouponDefinition.id == coupon.id)
        .with_for_update()
    ).one()
    if stock:
        eligible = eligible[: max(stock - issued, 0)]
    if not eligible:
        return result
    expires = now + timedelta(days=coupon.valid_days)
    demo = _sandbox_only(session, {cid for cid, _ in eligible})
    rows = [
        {
            "code": (DEMO_PREFIX if cid in demo else "") + prefix + new_code(),
            "issue_key": key,
            "definition_id": coupon.id,
            "customer_id": cid,
            "campaign_id": campaign_id,
            "status": "issued",
            "issued_at": now,
            "expires_at": expires,
        }
        for cid, key in eligible
    ]
    inserted = insert_ignore(session, CouponCode, rows, ["issue_key"])
    session.execute(
        update(CouponDefinition)
        .where(CouponDefinition.id == coupon.id)
        .values(issued=CouponDefinition.issued + inserted)
    )
    result.update(
        session.execute(
            select(CouponCode.issue_key, CouponCode.code).where(
                CouponCode.issue_key.in_([r["issue_key"] for r in rows])
            )
        ).all()
    )
    return result


def stock_left(session: Session, coupon: CouponDefinition) -> int | None:
    """Codes that may still be issued of ``coupon`` (None: no ``total_stock`` limit)."""
    issued, stock = session.execute(
        select(CouponDefinition.issued, CouponDefinition.total_stock).where(
            CouponDefinition.id == coupon.id
        )
    ).one()
    return max(stock - issued, 0) if stock else None


def find_code(session: Session, raw_code: str) -> CouponCode | None:
    """The code a person typed or a breakpoint stored (any case, spaces or dashes)."""
    code = normalize_code(raw_code)
    if not code:
        return None
    return session.scalars(select(CouponCode).where(CouponCode.code == code)).one_or_none()


def issue_one(
    session: Session,
    coupon: CouponDefinition,
    customer_id: int,
    issue_key: str,
    *,
    now: datetime,
    prefix: str = "",
    reuse_valid: bool = True,
) -> CouponCode | None:
    """Issue one code (idempotent by ``issue_key``). At the per-customer limit, with
    ``reuse_valid`` the customer's newest still-valid unused code of this coupon is
    given again instead; None when the coupon is out of stock (or nothing to reuse)."""
    issued = issue_codes(session, coupon, [(customer_id, issue_key)], now=now, prefix=prefix)
    if issue_key in issued:
        return session.scalars(select(CouponCode).where(CouponCode.code == issued[issue_key])).one()
    if not reuse_valid:
        return None
    return session.scalars(
        select(CouponCode)
        .where(
            CouponCode.definition_id == coupon.id,
            CouponCode.customer_id == customer_id,
            CouponCode.status == "issued",
            CouponCode.expires_at > now,
        )
        .order_by(CouponCode.id.desc())
        .limit(1)
    ).first()


def customer_codes(
    session: Session, customer_id: int, limit: int = 20
) -> list[tuple[CouponCode, CouponDefinition]]:
    """A customer's newest codes with their definitions (the staff inbox's profile)."""
    return [
        (code, coupon)
        for code, coupon in session.execute(
            select(CouponCode, CouponDefinition)
            .join(CouponDefinition, CouponDefinition.id == CouponCode.definition_id)
            .where(CouponCode.customer_id == customer_id)
            .order_by(CouponCode.id.desc())
            .limit(limit)
        )
    ]


def valid_codes(
    session: Session, customer_id: int, now: datetime, limit: int = 20
) -> list[tuple[CouponCode, CouponDefinition]]:
    """A customer's issued, unexpired codes with their definitions, soonest expiry first
    (what "我的券" / "my coupons" lists)."""
    return [
        (code, coupon)
        for code, coupon in session.execute(
            select(CouponCode, CouponDefinition)
            .join(CouponDefinition, CouponDefinition.id == CouponCode.definition_id)
            .where(
                CouponCode.customer_id == customer_id,
                CouponCode.status == "issued",
                CouponCode.expires_at > now,
            )
            .order_by(CouponCode.expires_at)
            .limit(limit)
        )
    ]


@dataclass(frozen=True)
class Redemption:
    """The answer to a redemption: ok, or a reason a person can act on.

    reason: ``redeemed`` | ``unknown`` | ``already_redeemed`` | ``expired`` | ``foreign``
    (the code belongs to another customer) | ``below_min_spend`` | ``amount_required``
    (a minimum spend applies: ask for the order amount) | ``demo`` (a sandbox code offered
    for a real order).
    """

    ok: bool
    reason: str
    code: str
    customer_id: int | None = None
    title: str = ""
    campaign_id: int | None = None
    redeemed_at: datetime | None = None
    expires_at: datetime | None = None
    min_spend_cents: int = 0
    discount_cents: int | None = None


def _discount(coupon: CouponDefinition, amount_cents: int | None) -> int | None:
    if coupon.amount_cents:
        return (
            coupon.amount_cents if amount_cents is None else min(coupon.amount_cents, amount_cents)
        )
    if coupon.percent_off and amount_cents is not None:
        return amount_cents * coupon.percent_off // 100
    return None


def redeem(
    session: Session,
    raw_code: str,
    *,
    now: datetime,
    by: str,
    config: Config,
    customer_id: int | None = None,
    amount_cents: int | None = None,
    allow_demo: bool = False,
    require_amount: bool = False,
) -> Redemption:
    """Redeem a code once (atomically) and record the purchase; see :class:`Redemption`.

    A sandbox demo code is refused (reason ``demo``) while a real channel is configured,
    unless ``allow_demo`` (the sandbox's own /redeem): no shop redeems it for a real order.
    With the sandbox alone (a demo installation) every surface takes it.

    A coupon with a minimum spend needs the order amount: without one the answer is
    ``amount_required`` (ask for it) when ``require_amount`` (what people at a counter
    or in chat use); otherwise the rule is checked only when an amount is given."""
    code = normalize_code(raw_code)
    found = (
        session.execute(
            select(CouponCode, CouponDefinition)
            .join(CouponDefinition, CouponDefinition.id == CouponCode.definition_id)
            .where(CouponCode.code == code)
        ).one_or_none()
        if code
        else None
    )
    if found is None:
        return Redemption(False, "unknown", code)
    row, coupon = found
    base: dict[str, Any] = {
        "code": code,
        "customer_id": row.customer_id,
        "title": coupon.title,
        "campaign_id": row.campaign_id,
        "expires_at": row.expires_at,
        "min_spend_cents": coupon.min_spend_cents,
    }
    if is_demo_code(code) and not allow_demo and real_channels(config):
        return Redemption(False, "demo", **(base | {"customer_id": None}))
    if customer_id is not None and row.customer_id != customer_id:
        return Redemption(False, "foreign", **(base | {"customer_id": None}))
    if row.status == "redeemed":
        return Redemption(False, "already_redeemed", redeemed_at=row.redeemed_at, **base)
    if row.expires_at <= now:
        return Redemption(False, "expired", **base)
    if amount_cents is None and coupon.min_spend_cents and require_amount:
        return Redemption(False, "amount_required", **base)
    if amount_cents is not None and amount_cents < coupon.min_spend_cents:
        return Redemption(False, "below_min_spend", **base)
    won = session.execute(
        update(CouponCode)
        .where(
            CouponCode.id == row.id,
            CouponCode.status == "issued",
            CouponCode.expires_at > now,
        )
        .values(
            status="redeemed",
            redeemed_at=now,
            redeemed_by=by[:128],
            order_amount_cents=amount_cents,
        )
        .returning(CouponCode.id)
        .execution_options(synchronize_session=False)
    ).first()
    if won is None:
        session.expire(row)
        again = session.get_one(CouponCode, row.id)
        return Redemption(False, "already_redeemed", redeemed_at=again.redeemed_at, **base)
    _record_purchase(session, row, coupon, now=now, by=by, config=config, amount_cents=amount_cents)
    return Redemption(
        True, "redeemed", redeemed_at=now, discount_cents=_discount(coupon, amount_cents), **base
    )


def _record_purchase(
    session: Session,
    row: CouponCode,
    coupon: CouponDefinition,
    *,
    now: datetime,
    by: str,
    config: Config,
    amount_cents: int | None,
) -> None:
    """The redemption as an order (feeds RFM), an interaction, tags; follow-ups stop."""
    insert_ignore(
        session,
        Order,
        {
            "order_id": f"coupon-{row.code}",
            "customer_id": row.customer_id,
            "amount_cents": amount_cents or 0,
            "currency": config.rfm.currency,
            "ordered_at": now,
            "items": {"lines": [coupon.title], "coupon": coupon.name},
            "source": f"coupon:{by}"[:128],
            "created_at": now,
        },
        ["order_id"],
    )
    repos.record_interaction(
        session,
        row.customer_id,
        event_id=f"coupon-{row.id}",
        channel="coupon",
        chat_id=by[:128],
        kind="coupon_redeemed",
        text=row.code,
        payload={
            "coupon": coupon.name,
            "campaign_id": row.campaign_id,
            "amount_cents": amount_cents,
        },
        now=now,
    )
    for rule in config.tagging.events:
        if rule.trigger == "coupon" and rule.value in ("*", coupon.name):
            ttl = timedelta(days=rule.ttl_days) if rule.ttl_days else None
            repos.add_tag(
                session, row.customer_id, rule.tag, source=f"coupon:{coupon.name}", now=now, ttl=ttl
            )
    cancel_for_customer(session, row.customer_id, "bought")
