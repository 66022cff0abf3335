"""What a batch of inbound events needs from the database, loaded in a few queries.

The inbound pipeline routes a batch of events in one transaction. Instead of looking each
event's rows up one by one, :func:`prefetch` does it for the whole batch at its start:

- **dedupe claims** — one ``INSERT .. ON CONFLICT DO NOTHING RETURNING`` for every platform
  id of the batch (a retry inside the batch is a duplicate of its first delivery);
- **identities and their customers** — one query per channel; the customers of first
  contacts are created together (one ``INSERT .. RETURNING`` for the customers, one
  ``INSERT .. ON CONFLICT DO NOTHING`` for their identities);
- **conversations** — one query per channel, ``FOR UPDATE`` on PostgreSQL, in id order so two
  processes' batches lock shared rows in the same order; the conversations the batch opens
  are created with one ``INSERT .. ON CONFLICT DO NOTHING`` and loaded the same way;
- **the customers' tags and interest scores** — one query each for the whole batch when
  tagging first needs them (storage/batch_rows.py); then tagging finds a customer's row
  (or knows there is none) without a query.

The result is kept in ``session.info`` for the transaction (:func:`current`); the
repositories read from it and fall back to their own queries for what it does not hold
(a customer or conversation created by an earlier event of the batch is added to it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import bindparam, delete, insert, select
from sqlalchemy.orm import Session, joinedload

from storage.batch_rows import expect_customers, mark_new
from storage.db import insert_ignore, insert_ignore_returning
from storage.models import Conversation, Customer, Identity, ProcessedInbound

__all__ = ["Claim", "InboundBatch", "current", "prefetch"]

_INFO_KEY = "siyu.inbound_batch"


@dataclass(frozen=True)
class Claim:
    """An inbound event as the batch sees it: its dedupe key, id, sender and conversation."""

    key: str
    event_id: str
    channel: str
    external_id: str
    chat_id: str
    user_id: str
    display_name: str = ""
    locale: str = "zh-CN"
    timezone: str = "Asia/Shanghai"

    @property
    def conversation_key(self) -> tuple[str, str, str]:
        return self.channel, self.chat_id, self.user_id


@dataclass
class InboundBatch:
    """The batch's rows: claimed event ids, identities, conversations, per-customer rows."""

    events: set[str] = field(default_factory=set)
    claimed: set[str] = field(default_factory=set)
    identities: dict[tuple[str, str], Identity] = field(default_factory=dict)
    conversations: dict[tuple[str, str, str], Conversation] = field(default_factory=dict)

    def claim(self, event_id: str) -> bool | None:
        """Whether this event (not an earlier delivery of the same platform id) holds its
        claim; None if the event is not one of the batch's. A claim is handed out once:
        the same event routed twice in a batch is a duplicate the second time."""
        if event_id not in self.events:
            return None
        if event_id in self.claimed:
            self.claimed.discard(event_id)
            return True
        return False


def current(session: Session) -> InboundBatch | None:
    """The batch the session's transaction is routing, if any."""
    return session.info.get(_INFO_KEY)


def prefetch(session: Session, claims: list[Claim], now: datetime) -> InboundBatch:
    """Claim the batch's platform ids and load (or create) its rows; see the module
    docstring."""
    batch = InboundBatch(events={c.event_id for c in claims})
    session.info[_INFO_KEY] = batch
    first: dict[str, Claim] = {}
    for claim in claims:
        first.setdefault(claim.key, claim)
    if first:
        inserted = insert_ignore_returning(
            session,
            ProcessedInbound,
            [{"key": c.key, "event_id": c.event_id, "processed_at": now} for c in first.values()],
            ["key"],
        )
        batch.claimed = {first[key].event_id for key in inserted}
    mine = [c for c in claims if c.event_id in batch.claimed]
    _load_identities(session, batch, {(c.channel, c.external_id) for c in mine})
    _create_customers(session, batch, mine, now)
    expect_customers(session, (i.customer_id for i in batch.identities.values()))
    wanted = {(c.channel, c.chat_id, c.user_id) for c in mine}
    _load_conversations(session, batch, wanted)
    _create_conversations(session, batch, [c for c in mine if c.conversation_key in wanted], now)
    return batch


def _load_identities(session: Session, batch: InboundBatch, keys: set[tuple[str, str]]) -> None:
    for channel in sorted({channel for channel, _ in keys}):
        externals = sorted(ext for ch, ext in keys if ch == channel)
        for identity in session.scalars(_IDENTITIES, {"channel": channel, "externals": externals}):
            batch.identities[(channel, identity.external_id)] = identity


def _create_customers(
    session: Session, batch: InboundBatch, claims: list[Claim], now: datetime
) -> None:
    """Create the customers (and identities) of first contacts, one statement each; a
    customer whose identity another process created meanwhile is removed again."""
    new: dict[tuple[str, str], Claim] = {}
    for claim in claims:
        if (claim.channel, claim.external_id) not in batch.identities:
            new.setdefault((claim.channel, claim.external_id), claim)
    if not new:
        return
    connection = session.connection()
    customer_ids = list(
        connection.execute(
            _INSERT_CUSTOMERS,
            [
                {
                    "display_name": c.display_name,
                    "locale": c.locale,
                    "timezone": c.timezone,
                    "created_at": now,
                }
                for c in new.values()
            ],
        ).scalars()
    )
    owner = dict(zip(new, customer_ids, strict=True))
    inserted = set(
        insert_ignore_returning(
            session,
            Identity,
            [
                {
                    "customer_id": owner[key],
                    "channel": key[0],
                    "external_id": key[1],
                    "display_name": c.display_name,
                    "unreachable": False,
                    "created_at": now,
                }
                for key, c in new.items()
            ],
            ["channel", "external_id"],
            returning="customer_id",
        )
    )
    orphans = [i for i in customer_ids if i not in inserted]
    if orphans:
        connection.execute(delete(Customer).where(Customer.id.in_(orphans)))
    for customer_id in inserted:
        mark_new(session, customer_id)
    _load_identities(session, batch, set(new))


def _load_conversations(
    session: Session, batch: InboundBatch, keys: set[tuple[str, str, str]]
) -> None:
    """Load (and lock, in id order) the conversations of ``keys``."""
    for channel in sorted({channel for channel, _, _ in keys}):
        pairs = {(chat, user) for ch, chat, user in keys if ch == channel}
        for conversation in session.scalars(
            _CONVERSATIONS,
            {
                "channel": channel,
                "chats": sorted({chat for chat, _ in pairs}),
                "users": sorted({user for _, user in pairs}),
            },
        ):
            if (conversation.chat_id, conversation.user_id) in pairs:
                batch.conversations[(channel, conversation.chat_id, conversation.user_id)] = (
                    conversation
                )


def _create_conversations(
    session: Session, batch: InboundBatch, claims: list[Claim], now: datetime
) -> None:
    """Create the conversations the batch opens, one statement, then load them."""
    new: dict[tuple[str, str, str], dict[str, object]] = {}
    for claim in claims:
        key = claim.conversation_key
        identity = batch.identities.get((claim.channel, claim.external_id))
        if key in batch.conversations or key in new or identity is None:
            continue
        new[key] = {
            "channel": claim.channel,
            "chat_id": claim.chat_id,
            "user_id": claim.user_id,
            "customer_id": identity.customer_id,
            "state": {},
            "handoff_status": "bot",
            "updated_at": now,
            "followups_pending": False,  # a new conversation has none
        }
    if new:
        insert_ignore(session, Conversation, list(new.values()), ["channel", "chat_id", "user_id"])
        _load_conversations(session, batch, set(new))


#: Built once (every batch runs them): the lists are bound per call.
_IDENTITIES = (
    select(Identity)
    .options(joinedload(Identity.customer))
    .where(
        Identity.channel == bindparam("channel"),
        Identity.external_id.in_(bindparam("externals", expanding=True)),
    )
)
_CONVERSATIONS = (
    select(Conversation)
    .where(
        Conversation.channel == bindparam("channel"),
        Conversation.chat_id.in_(bindparam("chats", expanding=True)),
        Conversation.user_id.in_(bindparam("users", expanding=True)),
    )
    .order_by(Conversation.id)
    .with_for_update()
)
_INSERT_CUSTOMERS = insert(Customer).returning(Customer.id, sort_by_parameter_order=True)
