"""Repositories: the small storage operations handlers and the router use.

Each function takes the caller's ``Session`` (so one inbound event is one transaction) and
a time ``now`` (so tests control the clock).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import bindparam, delete, func, select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.orm import Session, joinedload

from storage import inbound_batch
from storage.batch_rows import get_row, hold, mark_new
from storage.birthdays import format_birthday
from storage.coupons import CouponCode, CouponDefinition
from storage.db import insert_ignore
from storage.models import (
    Conversation,
    Customer,
    CustomerTag,
    Group,
    Identity,
    Interaction,
    Membership,
    OutboxMessage,
    ProcessedInbound,
    Tag,
)
from storage.orders import Order
from storage.row_writes import insert_interaction as record_interaction
from storage.row_writes import write_columns
from storage.scores import CustomerScore
from storage.tag_ids import forget_cached_ids, tag_id
from storage.tag_scores import Interest, interests_of

__all__ = [
    "CustomerProfile",
    "add_tag",
    "claim_inbound",
    "customer_profile",
    "ensure_group",
    "ensure_membership",
    "find_identity",
    "forget_cached_ids",
    "load_conversation",
    "mask_phone",
    "previous_interaction_id",
    "record_interaction",
    "remove_tag",
    "tags_of",
    "upsert_customer",
    "write_columns",
]


def claim_inbound(session: Session, key: str, event_id: str, now: datetime) -> bool:
    """Record an inbound platform id; False if it was processed before (a retry)."""
    return (
        insert_ignore(
            session,
            ProcessedInbound,
            {"key": key, "event_id": event_id, "processed_at": now},
            ["key"],
        )
        == 1
    )


#: Built once (the inbound path runs them for every event): parameters are bound per call.
_FIND_IDENTITY = (
    select(Identity)
    .options(joinedload(Identity.customer))
    .where(Identity.channel == bindparam("channel"), Identity.external_id == bindparam("ext"))
)
_LOAD_CONVERSATION = (
    select(Conversation)
    .where(
        Conversation.channel == bindparam("channel"),
        Conversation.chat_id == bindparam("chat_id"),
        Conversation.user_id == bindparam("user_id"),
    )
    .with_for_update()
)


def find_identity(session: Session, channel: str, external_id: str) -> Identity | None:
    """The identity and its customer (loaded in the same query)."""
    return session.scalars(_FIND_IDENTITY, {"channel": channel, "ext": external_id}).one_or_none()


def upsert_customer(
    session: Session,
    channel: str,
    external_id: str,
    *,
    display_name: str,
    locale: str,
    timezone: str,
    now: datetime,
    reachable: bool = False,
) -> tuple[Customer, Identity]:
    """The customer behind a channel identity, created on first contact.

    ``reachable``: the customer just wrote to us 1:1, so a block recorded earlier (403,
    unfollow) is over; the identity is marked reachable again.
    """
    batch = inbound_batch.current(session)
    if batch is not None and (channel, external_id) in batch.identities:
        identity: Identity | None = batch.identities[(channel, external_id)]
    else:
        identity = find_identity(session, channel, external_id)
    if identity is None:
        with session.begin_nested() as savepoint:
            customer = Customer(
                display_name=display_name, locale=locale, timezone=timezone, created_at=now
            )
            session.add(customer)
            session.flush()
            inserted = insert_ignore(
                session,
                Identity,
                {
                    "customer_id": customer.id,
                    "channel": channel,
                    "external_id": external_id,
                    "display_name": display_name,
                    "unreachable": False,
                    "created_at": now,
                },
                ["channel", "external_id"],
            )
            if not inserted:  # another process created it meanwhile
                savepoint.rollback()
            else:
                mark_new(session, customer.id)  # a new customer has no tags yet
        identity = find_identity(session, channel, external_id)
        assert identity is not None
    if batch is not None:
        batch.identities[(channel, external_id)] = identity
    customer = identity.customer
    if reachable and identity.unreachable:
        identity.unreachable, identity.unreachable_reason = False, None
    if display_name and identity.display_name != display_name:
        identity.display_name = display_name
        if not customer.display_name or customer.display_name == identity.display_name:
            customer.display_name = display_name
    if not customer.display_name and display_name:
        customer.display_name = display_name
    write_columns(session, customer, last_active_at=now)
    return customer, identity


def ensure_group(session: Session, channel: str, external_id: str, title: str) -> Group:
    group = session.scalars(
        select(Group).where(Group.channel == channel, Group.external_id == external_id)
    ).one_or_none()
    if group is None:
        insert_ignore(
            session,
            Group,
            {"channel": channel, "external_id": external_id, "title": title, "active": True},
            ["channel", "external_id"],
        )
        group = session.scalars(
            select(Group).where(Group.channel == channel, Group.external_id == external_id)
        ).one()
    elif title and group.title != title:
        group.title = title
    return group


def ensure_membership(
    session: Session, group_id: int, customer_id: int, now: datetime, *, active: bool = True
) -> Membership:
    membership = session.get(Membership, (group_id, customer_id))
    if membership is None:
        membership = Membership(
            group_id=group_id, customer_id=customer_id, active=active, joined_at=now
        )
        session.add(membership)
    elif membership.active != active:
        membership.active = active
        if active:
            membership.joined_at, membership.left_at = now, None
        else:
            membership.left_at = now
    return membership


def add_tag(
    session: Session,
    customer_id: int,
    tag: str,
    *,
    source: str,
    now: datetime,
    ttl: timedelta | None = None,
) -> bool:
    """Tag a customer (or refresh the tag's last-seen and expiry); True if it is new."""
    found_id = tag_id(session, tag)
    expires = now + ttl if ttl else None
    row = get_row(session, CustomerTag, (customer_id, found_id))
    if row is None:
        session.add(
            CustomerTag(
                customer_id=customer_id,
                tag_id=found_id,
                source=source,
                first_seen_at=now,
                last_seen_at=now,
                expires_at=expires,
            )
        )
        hold(session, CustomerTag, (customer_id, found_id))
        return True
    row.last_seen_at = now
    if row.expires_at is not None or expires is None:
        row.expires_at = expires
    return False


def remove_tag(session: Session, customer_id: int, tag: str) -> bool:
    tag_id = session.scalar(select(Tag.id).where(Tag.name == tag))
    if tag_id is None:
        return False
    result = cast(
        "CursorResult[Any]",
        session.execute(
            delete(CustomerTag).where(
                CustomerTag.customer_id == customer_id, CustomerTag.tag_id == tag_id
            )
        ),
    )
    return bool(result.rowcount)


def tags_of(session: Session, customer_id: int, now: datetime) -> list[CustomerTag]:
    """A customer's tags that have not expired, oldest first."""
    return list(
        session.scalars(
            select(CustomerTag)
            .join(CustomerTag.tag)
            .where(CustomerTag.customer_id == customer_id)
            .where((CustomerTag.expires_at.is_(None)) | (CustomerTag.expires_at > now))
            .order_by(CustomerTag.first_seen_at, Tag.name)
        )
    )


def load_conversation(
    session: Session, channel: str, chat_id: str, user_id: str, customer_id: int, now: datetime
) -> Conversation:
    """The conversation row for a ConversationRef, locked for this transaction."""
    batch = inbound_batch.current(session)
    if batch is not None and (found := batch.conversations.get((channel, chat_id, user_id))):
        return found
    params = {"channel": channel, "chat_id": chat_id, "user_id": user_id}
    conversation = session.scalars(_LOAD_CONVERSATION, params).one_or_none()
    if conversation is None:
        insert_ignore(
            session,
            Conversation,
            {
                "channel": channel,
                "chat_id": chat_id,
                "user_id": user_id,
                "customer_id": customer_id,
                "state": {},
                "handoff_status": "bot",
                "updated_at": now,
                "followups_pending": False,  # a new conversation has none
            },
            ["channel", "chat_id", "user_id"],
        )
        conversation = session.scalars(_LOAD_CONVERSATION, params).one()
    if batch is not None:
        batch.conversations[(channel, chat_id, user_id)] = conversation
    return conversation


def mark_unreachable(session: Session, channel: str, external_id: str, reason: str) -> None:
    session.execute(
        update(Identity)
        .where(Identity.channel == channel, Identity.external_id == external_id)
        .values(unreachable=True, unreachable_reason=reason)
    )


@dataclass
class CustomerProfile:
    """What Siyu knows about one customer, for the CLI, the sandbox panel and managers."""

    customer: Customer
    identities: list[Identity]
    tags: list[CustomerTag]
    interactions: list[Interaction]
    conversations: list[Conversation]
    outbox: list[OutboxMessage]
    orders: list[Order] = field(default_factory=list)
    order_count: int = 0
    order_total_cents: int = 0
    score: CustomerScore | None = None
    coupons: list[dict[str, Any]] = field(default_factory=list)
    interests: list[Interest] = field(default_factory=list)

    def as_dict(self, *, reveal_phone: bool = False) -> dict[str, Any]:
        """The profile as JSON-able data; the phone is masked unless ``reveal_phone``
        (managers and the operator's CLI only)."""
        c = self.customer
        s = self.score
        return {
            "id": c.id,
            "display_name": c.display_name,
            "locale": c.locale,
            "timezone": c.timezone,
            "phone": (c.phone if reveal_phone else mask_phone(c.phone)) if c.phone else None,
            "birthday": format_birthday(c.birthday),
            "city": c.city,
            "marketing_opt_out": c.marketing_opt_out,
            "consent": {"marketing": not c.marketing_opt_out},
            "created_at": _iso(c.created_at),
            "last_active_at": _iso(c.last_active_at),
            "value": {
                "orders": self.order_count,
                "spend": self.order_total_cents / 100,
                "lifecycle": s.lifecycle if s else "new",
                "tier": s.tier if s else None,
                "rfm_group": s.rfm_group if s else None,
                "rfm": [s.r_score, s.f_score, s.m_score] if s else None,
                "spend_12m": s.spend_12m_cents / 100 if s else 0,
                "last_order_at": _iso(s.last_order_at) if s else None,
                "computed_at": _iso(s.computed_at) if s else None,
            },
            "orders": [
                {
                    "order_id": o.order_id,
                    "amount": o.amount_cents / 100,
                    "currency": o.currency,
                    "at": _iso(o.ordered_at),
                    "items": (o.items or {}).get("lines", []),
                    "source": o.source,
                }
                for o in self.orders
            ],
            "coupons": self.coupons,
            "identities": [
                {
                    "channel": i.channel,
                    "user_id": i.external_id,
                    "display_name": i.display_name,
                    "unreachable": i.unreachable,
                    "unreachable_reason": i.unreachable_reason,
                }
                for i in self.identities
            ],
            "tags": [
                {
                    "tag": t.tag.name,
                    "source": t.source,
                    "first_seen_at": _iso(t.first_seen_at),
                    "last_seen_at": _iso(t.last_seen_at),
                    "expires_at": _iso(t.expires_at),
                }
                for t in self.tags
            ],
            "interests": [
                {
                    "tag": i.tag,
                    "score": round(i.score, 2),
                    "hits": i.hits,
                    "first_hit_at": _iso(i.first_hit_at),
                    "last_hit_at": _iso(i.last_hit_at),
                }
                for i in self.interests
            ],
            "interactions": [
                {
                    "at": _iso(i.occurred_at),
                    "channel": i.channel,
                    "chat_id": i.chat_id,
                    "kind": i.kind,
                    "text": i.text,
                    "error": i.error,
                }
                for i in self.interactions
            ],
            "conversations": [
                {
                    "channel": c.channel,
                    "chat_id": c.chat_id,
                    "flow": c.flow,
                    "step": c.step,
                    "state": c.state,
                    "handoff_status": c.handoff_status,
                    "handoff_owner": c.handoff_owner,
                    "last_customer_message": c.last_customer_message,
                    "last_bot_message": c.last_bot_message,
                    "updated_at": _iso(c.updated_at),
                }
                for c in self.conversations
            ],
            "outbox": [
                {
                    "id": o.id,
                    "status": o.status,
                    "purpose": o.purpose,
                    "text": (o.payload or {}).get("text", ""),
                    "attempts": o.attempts,
                    "last_error": o.last_error,
                }
                for o in self.outbox
            ],
        }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def mask_phone(phone: str) -> str:
    """``13812345678`` → ``138****5678``: only the head and the last 4 digits show."""
    if len(phone) <= 4:
        return "*" * len(phone)
    head = 3 if len(phone) >= 8 else 0
    return phone[:head] + "*" * (len(phone) - head - 4) + phone[-4:]


def customer_profile(
    session: Session, channel: str, external_id: str, now: datetime, *, recent: int = 20
) -> CustomerProfile | None:
    identity = find_identity(session, channel, external_id)
    if identity is None:
        return None
    cid = identity.customer_id
    count, total = session.execute(
        select(func.count(Order.id), func.sum(Order.amount_cents)).where(Order.customer_id == cid)
    ).one()
    return CustomerProfile(
        customer=identity.customer,
        identities=list(
            session.scalars(
                select(Identity).where(Identity.customer_id == cid).order_by(Identity.id)
            )
        ),
        tags=tags_of(session, cid, now),
        interactions=list(
            session.scalars(
                select(Interaction)
                .where(Interaction.customer_id == cid)
                .order_by(Interaction.occurred_at.desc(), Interaction.id.desc())
                .limit(recent)
            )
        ),
        conversations=list(
            session.scalars(
                select(Conversation)
                .where(Conversation.customer_id == cid)
                .order_by(Conversation.updated_at.desc())
            )
        ),
        outbox=list(
            session.scalars(
                select(OutboxMessage)
                .where(OutboxMessage.customer_id == cid)
                .order_by(OutboxMessage.id.desc())
                .limit(recent)
            )
        ),
        orders=list(
            session.scalars(
                select(Order)
                .where(Order.customer_id == cid)
                .order_by(Order.ordered_at.desc(), Order.id.desc())
                .limit(recent)
            )
        ),
        order_count=count,
        order_total_cents=int(total or 0),
        score=session.get(CustomerScore, cid),
        coupons=_coupons(session, cid, recent),
        interests=interests_of(session, cid, now),
    )


def _coupons(session: Session, customer_id: int, limit: int) -> list[dict[str, Any]]:
    """The customer's most recent coupon codes with their definition and status."""
    rows = session.execute(
        select(CouponCode, CouponDefinition.name, CouponDefinition.title)
        .join(CouponDefinition, CouponDefinition.id == CouponCode.definition_id)
        .where(CouponCode.customer_id == customer_id)
        .order_by(CouponCode.issued_at.desc(), CouponCode.id.desc())
        .limit(limit)
    )
    return [
        {
            "coupon": name,
            "title": title,
            "code": c.code,
            "status": c.status,
            "issued_at": _iso(c.issued_at),
            "expires_at": _iso(c.expires_at),
            "redeemed_at": _iso(c.redeemed_at),
        }
        for c, name, title in rows
    ]


def previous_interaction_id(session: Session, interaction: Interaction) -> int | None:
    """The id of the customer's interaction before this one in the same chat, if any."""
    return session.scalar(
        select(Interaction.id)
        .where(
            Interaction.customer_id == interaction.customer_id,
            Interaction.channel == interaction.channel,
            Interaction.chat_id == interaction.chat_id,
            Interaction.id < interaction.id,
        )
        .order_by(Interaction.id.desc())
        .limit(1)
    )
