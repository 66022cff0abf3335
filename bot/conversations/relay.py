"""The staff relay group, platform-neutral half: what is posted there, as outbox rows.

When ``[telegram] relay_chat_id`` is set, every conversation flagged for staff (on any
channel) gets a topic in that Telegram forum supergroup. Everything posted there is an
outbox row (``purpose = "relay"``) to the relay chat whose ``extra["relay"]`` names the
customer conversation; the Telegram adapter finds (or creates) the conversation's topic
when it sends the row. So posting to the relay group is as durable and idempotent as any
other message, and this module needs no platform SDK.

What gets posted:

- every staff action of the handoff model (flag, claim, reply from the web inbox, note,
  transfer, coupon, release, resolve, SLA escalation), through a
  :func:`bot.conversations.handoff.subscribe` observer (:class:`RelayObserver`);
- the customer's own messages while the conversation waits for or is owned by staff
  (:func:`mirror_customer_message`, called by the ``relay_mirror`` handler).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from bot.app.config import Config
from bot.core.events import ConversationRef
from bot.core.templating import Renderer
from bot.outbox import queue as outbox
from storage.handoff import AuditEntry, HandoffTicket
from storage.models import Conversation, Customer

__all__ = [
    "RELAY_PURPOSE",
    "RELAY_SESSION_FLAG",
    "RelayObserver",
    "enqueue_relay",
    "mirror_customer_message",
    "relay_enabled",
]

RELAY_PURPOSE = "relay"
#: Set in ``session.info`` by the relay group's own staff actions, so that what a staff
#: member wrote in the topic is not posted there a second time.
RELAY_SESSION_FLAG = "siyu_relay_origin"
_FROM_RELAY_SKIPPED = frozenset({"reply"})
_FROM_ELSEWHERE_SKIPPED = frozenset({"claim_refused"})


def relay_enabled(config: Config) -> bool:
    return bool(config.telegram.token and config.telegram.relay_chat_id)


def topic_title(customer: Customer | None, conversation: Conversation) -> str:
    """The forum topic's name: who the customer is and on which channel (≤ 128 chars)."""
    name = (customer.display_name if customer else "") or conversation.user_id
    return f"{name} · {conversation.channel} #{conversation.customer_id}"[:128]


def enqueue_relay(
    session: Session,
    config: Config,
    conversation: Conversation,
    *,
    key: str,
    text: str,
    now: datetime,
    customer: Customer | None = None,
) -> bool:
    """Queue ``text`` for the relay topic of ``conversation``; False if queued before."""
    if customer is None:
        customer = session.get(Customer, conversation.customer_id)
    relay = {
        "channel": conversation.channel,
        "chat_id": conversation.chat_id,
        "user_id": conversation.user_id,
        "title": topic_title(customer, conversation),
    }
    return outbox.enqueue(
        session,
        key=key,
        to=ConversationRef("telegram", config.telegram.relay_chat_id, "relay"),
        text=text,
        now=now,
        purpose=RELAY_PURPOSE,
        priority=5,
        extra={"relay": relay},
    )


def mirror_customer_message(
    session: Session,
    config: Config,
    renderer: Renderer,
    conversation: Conversation,
    customer: Customer,
    *,
    event_key: str,
    text: str,
    now: datetime,
) -> bool:
    """Post a customer's message to their topic (once per inbound event)."""
    body = renderer.render(
        "relay_customer",
        config.general.locale,
        name=customer.display_name or conversation.user_id,
        text=text,
    )
    return enqueue_relay(
        session,
        config,
        conversation,
        key=f"relay:in:{event_key}",
        text=body,
        now=now,
        customer=customer,
    )


class RelayObserver:
    """Posts each audited staff action to the conversation's relay topic.

    Subscribed with :func:`bot.conversations.handoff.subscribe`; it only acts on sessions of its own
    database (tests run several Siyu instances in one process).
    """

    def __init__(self, config: Config, renderer: Renderer, engine) -> None:
        self.config = config
        self.renderer = renderer
        self.engine = engine

    def __call__(self, session: Session, entry: AuditEntry) -> None:
        if entry.ticket_id is None or session.get_bind() is not self.engine:
            return
        from_relay = bool(session.info.get(RELAY_SESSION_FLAG))
        skipped = _FROM_RELAY_SKIPPED if from_relay else _FROM_ELSEWHERE_SKIPPED
        if entry.action in skipped:
            return
        ticket = session.get(HandoffTicket, entry.ticket_id)
        if ticket is None:
            return
        conversation = session.get(Conversation, ticket.conversation_id)
        if conversation is None:
            return
        customer = session.get(Customer, conversation.customer_id)
        session.flush()  # gives the entry its id, the row's idempotency key
        text = self.renderer.render(
            "relay_event",
            self.config.general.locale,
            action=entry.action,
            actor=entry.actor,
            detail=dict(entry.detail or {}),
            ticket_id=ticket.id,
            reason=ticket.reason,
            priority=ticket.priority,
            name=(customer.display_name if customer else "") or conversation.user_id,
            channel=conversation.channel,
        )
        enqueue_relay(
            session,
            self.config,
            conversation,
            key=f"relay:audit:{entry.id}",
            text=text,
            now=entry.created_at,
            customer=customer,
        )
