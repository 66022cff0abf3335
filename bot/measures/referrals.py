"""Referrals (老带新): personal invites, first-touch attribution, and rewards with caps.

Every customer can get an invite code. A newcomer who arrives through it — a Telegram
deep link ``/start ref_<code>``, an Official Account QR scene ``ref_<code>``, a WeCom
contact-way ``State`` ``ref_<code>`` — is attributed to the inviter once: the first invite
wins, an invite of one's own is refused, so is a loop (inviting the person who invited
you), and so is anyone who was already a customer before (first seen more than
``[referrals] newcomer_hours`` ago). Rules (``[[referrals.rules]]``) reward the referrer
and/or the newcomer with a coupon when the newcomer joins or first orders; a referrer's
rewards are capped per period. Each reward is a row unique per (referral, rule, side), so
settling again never rewards twice; its message goes through the outbox.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from bot.app.config import Config, ReferralRule
from bot.core.events import ConversationRef
from bot.core.templating import Renderer
from bot.marketing import coupons
from bot.marketing.policy import customer_zone
from bot.outbox import queue as outbox
from storage.db import rowcount
from storage.measures import InviteCode, Referral, ReferralReward
from storage.models import Customer, Identity
from storage.orders import Order

__all__ = [
    "PREFIX",
    "Attribution",
    "attribute",
    "invite_code",
    "invite_link",
    "invite_summary",
    "settle_first_orders",
]

log = logging.getLogger(__name__)

#: What marks an invite in a deep-link payload, QR scene or contact state.
PREFIX = "ref_"
ALPHABET = "23456789abcdefghjkmnpqrstuvwxyz"  # no 0/o, 1/l/i: read aloud without doubt
CODE_LENGTH = 8
VIA = {
    "telegram": "deep_link",
    "sandbox": "deep_link",
    "wechat": "qr_scene",
    "wecom": "contact_state",
}


def _new_code() -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(CODE_LENGTH))


def invite_code(session: Session, customer_id: int, now: datetime) -> str:
    """The customer's invite code, created on first use."""
    code = session.scalar(select(InviteCode.code).where(InviteCode.customer_id == customer_id))
    if code:
        return code
    for _ in range(5):
        candidate = _new_code()
        if session.scalar(select(InviteCode.customer_id).where(InviteCode.code == candidate)):
            continue
        with session.begin_nested():
            session.add(InviteCode(customer_id=customer_id, code=candidate, created_at=now))
        return candidate
    raise RuntimeError("could not find a free invite code")  # 31^8 codes: not in practice


def invite_link(config: Config, channel: str, code: str) -> str | None:
    """The link a customer shares on ``channel``; None where the invite is the code itself."""
    if channel == "telegram" and config.referrals.telegram_bot_username:
        username = config.referrals.telegram_bot_username.lstrip("@")
        return f"https://t.me/{username}?start={PREFIX}{code}"
    return None


@dataclass(frozen=True)
class Attribution:
    """What happened to one arrival by invite: ``attributed`` or why not."""

    outcome: str  # attributed | unknown_code | self | loop | already_referred | not_new
    referral: Referral | None = None


def invite_from(value: str) -> str | None:
    """The invite code in a deep-link payload, QR scene or contact state, if any."""
    value = (value or "").strip()
    if not value.lower().startswith(PREFIX):
        return None
    code = value[len(PREFIX) :].lower()
    if len(code) != CODE_LENGTH or any(c not in ALPHABET for c in code):
        return None
    return code


def attribute(
    session: Session,
    *,
    config: Config,
    renderer: Renderer,
    newcomer: Customer,
    channel: str,
    code: str,
    now: datetime,
) -> Attribution:
    """Attribute ``newcomer`` to the owner of ``code`` (once; see the module docstring)."""
    referrer_id = session.scalar(select(InviteCode.customer_id).where(InviteCode.code == code))
    if referrer_id is None:
        return Attribution("unknown_code")
    if referrer_id == newcomer.id:
        return Attribution("self")
    if session.scalar(select(Referral.id).where(Referral.referred_id == newcomer.id)):
        return Attribution("already_referred")
    loop = session.scalar(
        select(Referral.id).where(
            Referral.referrer_id == newcomer.id, Referral.referred_id == referrer_id
        )
    )
    if loop:
        return Attribution("loop")
    if newcomer.created_at < now - timedelta(hours=config.referrals.newcomer_hours):
        return Attribution("not_new")
    referral = Referral(
        referrer_id=referrer_id,
        referred_id=newcomer.id,
        code=code,
        channel=channel,
        via=VIA.get(channel, "deep_link"),
        created_at=now,
    )
    with session.begin_nested():
        session.add(referral)
    _settle(session, config, renderer, referral, "joined", now)
    return Attribution("attributed", referral)


def settle_first_orders(
    session: Session, *, config: Config, renderer: Renderer, now: datetime, limit: int = 1000
) -> int:
    """Reward referrals whose newcomer has ordered since; returns how many were settled.

    Runs after order imports and on the scheduler; a referral is settled once
    (``first_order_at`` is set in the same transaction as its rewards).
    """
    first = (
        select(Order.customer_id, func.min(Order.ordered_at).label("first_at"))
        .group_by(Order.customer_id)
        .subquery()
    )
    rows = session.execute(
        select(Referral, first.c.first_at)
        .join(first, first.c.customer_id == Referral.referred_id)
        .where(Referral.first_order_at.is_(None))
        .order_by(Referral.id)
        .limit(limit)
    ).all()
    settled = 0
    for referral, first_at in rows:
        claimed = rowcount(
            session.execute(
                update(Referral)
                .where(Referral.id == referral.id, Referral.first_order_at.is_(None))
                .values(first_order_at=first_at)
            )
        )
        if not claimed:  # another process settled it first
            continue
        _settle(session, config, renderer, referral, "first_order", now)
        settled += 1
    return settled


def _settle(
    session: Session,
    config: Config,
    renderer: Renderer,
    referral: Referral,
    when: str,
    now: datetime,
) -> None:
    for rule in config.referrals.rules:
        if rule.when != when:
            continue
        sides = ("referrer", "newcomer") if rule.reward == "both" else (rule.reward,)
        for side in sides:
            _reward(session, config, renderer, referral, rule, side, now)


def _coupon(session: Session, config: Config, name: str, now: datetime):
    """The coupon definition a rule gives, stored from ``[coupons]`` if not yet."""
    found = coupons.definition(session, name)
    if found is None:
        item = next((d for d in config.coupons.definitions if d.name == name), None)
        if item is not None:
            found = coupons.ensure_definition(session, item, now)
    return found


def _capped(session: Session, config: Config, referrer_id: int, now: datetime) -> bool:
    since = now - timedelta(days=config.referrals.cap_period_days)
    given = session.scalar(
        select(func.count())
        .select_from(ReferralReward)
        .where(
            ReferralReward.customer_id == referrer_id,
            ReferralReward.beneficiary == "referrer",
            ReferralReward.status == "issued",
            ReferralReward.created_at > since,
        )
    )
    return int(given or 0) >= config.referrals.cap_per_referrer


def _reward(
    session: Session,
    config: Config,
    renderer: Renderer,
    referral: Referral,
    rule: ReferralRule,
    side: str,
    now: datetime,
) -> None:
    exists = session.scalar(
        select(ReferralReward.id).where(
            ReferralReward.referral_id == referral.id,
            ReferralReward.rule == rule.name,
            ReferralReward.beneficiary == side,
        )
    )
    if exists:
        return
    customer_id = referral.referrer_id if side == "referrer" else referral.referred_id
    status, code = "issued", None
    if side == "referrer" and _capped(session, config, customer_id, now):
        status = "capped"
    else:
        definition = _coupon(session, config, rule.coupon, now)
        issued = (
            coupons.issue_one(
                session,
                definition,
                customer_id,
                f"referral:{referral.id}:{rule.name}:{side}",
                now=now,
                prefix="REF",
                reuse_valid=False,
            )
            if definition is not None
            else None
        )
        if issued is None:
            status = "no_coupon" if definition is None else "out_of_stock"
            log.warning("referral %s: rule %s gave no coupon (%s)", referral.id, rule.name, status)
        else:
            code = issued.code
            _announce(session, config, renderer, referral, side, issued, now)
    with session.begin_nested():
        session.add(
            ReferralReward(
                referral_id=referral.id,
                rule=rule.name,
                beneficiary=side,
                customer_id=customer_id,
                status=status,
                coupon_code=code,
                created_at=now,
            )
        )


def customer_ref(session: Session, customer_id: int, prefer: str | None = None):
    """Where to reach a customer 1:1: their reachable identity (``prefer`` channel first)."""
    identities = list(
        session.scalars(
            select(Identity)
            .where(Identity.customer_id == customer_id, Identity.unreachable.is_(False))
            .order_by(Identity.id)
        )
    )
    if not identities:
        return None
    chosen = next((i for i in identities if i.channel == prefer), identities[0])
    return ConversationRef(chosen.channel, chosen.external_id, chosen.external_id)


def _announce(
    session: Session,
    config: Config,
    renderer: Renderer,
    referral: Referral,
    side: str,
    code,
    now: datetime,
) -> None:
    customer_id = referral.referrer_id if side == "referrer" else referral.referred_id
    customer = session.get(Customer, customer_id)
    other = session.get(
        Customer, referral.referred_id if side == "referrer" else referral.referrer_id
    )
    ref = customer_ref(session, customer_id, prefer=referral.channel)
    if customer is None or ref is None:
        return
    text = renderer.render(
        "referral_reward",
        customer.locale,
        customer=customer,
        side=side,
        friend=(other.display_name if other else "") or "",
        code=coupons.format_code(code.code),
        expires=code.expires_at.astimezone(
            customer_zone(customer, config.general.timezone)
        ).strftime("%Y-%m-%d"),
    )
    outbox.enqueue(
        session,
        key=f"referral:{referral.id}:{side}:{code.code}",
        to=ref,
        text=text,
        customer_id=customer_id,
        purpose="reply",
        now=now,
    )


@dataclass(frozen=True)
class InviteSummary:
    """What a customer sees when asking for their invites."""

    code: str
    link: str | None
    invited: int
    ordered: int
    rewards: int


def invite_summary(
    session: Session, config: Config, customer_id: int, channel: str, now: datetime
) -> InviteSummary:
    """The customer's code and link, how many came by it, ordered, and rewards earned."""
    code = invite_code(session, customer_id, now)
    invited, ordered = session.execute(
        select(func.count(), func.count(Referral.first_order_at)).where(
            Referral.referrer_id == customer_id
        )
    ).one()
    rewards = session.scalar(
        select(func.count())
        .select_from(ReferralReward)
        .where(ReferralReward.customer_id == customer_id, ReferralReward.status == "issued")
    )
    return InviteSummary(
        code, invite_link(config, channel, code), int(invited), int(ordered), int(rewards or 0)
    )
