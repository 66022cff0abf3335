"""Erasing a customer's personal data on request (PIPL 个人信息删除), keeping the counts.

:func:`forget_customer` is the one implementation behind ``siyu customer forget <channel>
<id>``. Given any one identity it forgets the whole person, on every channel:

* who they are: every platform id (Telegram user id, OpenID, external userid, sandbox id)
  is replaced by a random placeholder (``forgotten-<hex>``, not derived from the id, so it
  cannot be reversed), in identities, conversations, outbox rows, delivery records, source
  attributions, the callback journal and the idempotency / dedupe keys that embed it;
* what they are: name, phone, birthday, city, tags and interest scores, the unionid link,
  WeCom contact and tag-sync rows, the customer-service window, relay topics;
* what they said and were told: interaction texts and raw payloads, conversation state
  and last messages, outbox texts and errors, sandbox transcripts, handoff details, staff
  notes about the conversation, texts quoted in audit entries, the words of their opt-out.

What reports count stays, anonymously: the customer row itself (its id), interactions
(kind, channel, time), orders (amounts, times), coupons, campaign targets and events,
scenario events, scores and memberships. Nothing queued is sent to them any more (pending
outbox rows fail with reason ``forgotten``; pending follow-ups are cancelled). If the person
writes again later they are a new customer: their platform id no longer matches anything.
The erasure is audited (who, when, which customer id) without the erased data.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Text, cast, delete, or_, select, tuple_, update
from sqlalchemy.orm import Session

from bot.conversations.handoff import audit
from storage import repos
from storage.campaigns import ConsentChange
from storage.db import rowcount
from storage.followups import FollowUp
from storage.handoff import AuditEntry, HandoffTicket, StaffNote
from storage.models import (
    Conversation,
    Customer,
    CustomerTag,
    Identity,
    Interaction,
    OutboxMessage,
    ProcessedInbound,
    SandboxMessage,
)
from storage.tag_scores import TagInterest
from storage.telegram import TelegramRelayTopic as RelayTopic
from storage.wechat import (
    ServiceWindow,
    SourceAttribution,
    UnionId,
    WechatDelivery,
    WecomContact,
    WecomMassTask,
    WecomTagSync,
)
from storage.wechat_inbound import InboundCallback

__all__ = ["FORGOTTEN_PREFIX", "ForgetReport", "NoSuchCustomer", "forget_customer"]

FORGOTTEN_PREFIX = "forgotten-"


class NoSuchCustomer(LookupError):
    """No customer has the given identity."""


@dataclass
class ForgetReport:
    """What was erased for one customer (counts only: the data itself is gone)."""

    customer_id: int
    identities: int = 0
    rows: dict[str, int] = field(default_factory=dict)

    def add(self, what: str, count: int | None) -> None:
        if count:
            self.rows[what] = self.rows.get(what, 0) + count


def _placeholder() -> str:
    return FORGOTTEN_PREFIX + secrets.token_hex(8)


def _token(external_id: str) -> re.Pattern[str]:
    """The id as one ``:``-delimited part of a key (``reply:wechat:<openid>:…``)."""
    return re.compile(rf"(?<=:){re.escape(external_id)}(?=:|$)")


def _rewrite_keys(session: Session, column, external_id: str, placeholder: str) -> int:
    """Replace the id inside the keys of ``column`` (a unique string column)."""
    table = column.class_
    pk = table.__mapper__.primary_key[0]
    token = _token(external_id)
    candidates = session.execute(
        select(pk, column).where(column.contains(f":{external_id}", autoescape=True))
    ).all()
    changed = 0
    for key, value in candidates:
        new = token.sub(placeholder, value or "")
        if new != value:
            session.execute(update(table).where(pk == key).values({column.key: new}))
            changed += 1
    return changed


def forget_customer(
    session: Session, channel: str, external_id: str, *, by: str, now: datetime
) -> ForgetReport:
    """Erase the personal data of the customer with this identity (see the module docstring).

    Runs in the caller's transaction; raises NoSuchCustomer if the identity is unknown.
    """
    identity = repos.find_identity(session, channel, external_id)
    if identity is None:
        raise NoSuchCustomer(f"{channel}:{external_id}")
    customer_id = identity.customer_id
    report = ForgetReport(customer_id)
    identities = list(session.scalars(select(Identity).where(Identity.customer_id == customer_id)))
    report.identities = len(identities)
    pairs = [(i.channel, i.external_id) for i in identities]

    customer = session.get(Customer, customer_id)
    assert customer is not None
    customer.display_name, customer.phone, customer.birthday, customer.city = "", None, None, None
    customer.marketing_opt_out = True

    report.add("tags", _delete(session, CustomerTag, CustomerTag.customer_id == customer_id))
    report.add("interest", _delete(session, TagInterest, TagInterest.customer_id == customer_id))
    report.add(
        "interactions",
        rowcount(
            session.execute(
                update(Interaction)
                .where(Interaction.customer_id == customer_id)
                .values(text="", payload={}, error=None)
            )
        ),
    )
    conversations = list(
        session.scalars(select(Conversation).where(Conversation.customer_id == customer_id))
    )
    conversation_ids = [c.id for c in conversations]
    for conv in conversations:
        conv.state, conv.flow, conv.step = {}, None, None
        conv.last_customer_message = conv.last_bot_message = None
    report.add("conversations", len(conversations))
    if conversation_ids:
        report.add(
            "staff notes",
            _delete(session, StaffNote, StaffNote.conversation_id.in_(conversation_ids)),
        )
    ticket_ids = list(
        session.scalars(select(HandoffTicket.id).where(HandoffTicket.customer_id == customer_id))
    )
    report.add("audit texts", _scrub_audit(session, ticket_ids, conversation_ids))
    report.add(
        "handoff details",
        rowcount(
            session.execute(
                update(HandoffTicket)
                .where(HandoffTicket.customer_id == customer_id)
                .values(detail="")
            )
        ),
    )
    report.add(
        "opt-out texts",
        rowcount(
            session.execute(
                update(ConsentChange)
                .where(ConsentChange.customer_id == customer_id)
                .values(text="")
            )
        ),
    )
    report.add(
        "follow-ups cancelled",
        rowcount(
            session.execute(
                update(FollowUp)
                .where(FollowUp.customer_id == customer_id, FollowUp.status == "pending")
                .values(status="cancelled", reason="forgotten")
            )
        ),
    )
    mine = or_(
        OutboxMessage.customer_id == customer_id,
        tuple_(OutboxMessage.channel, OutboxMessage.user_id).in_(pairs),
    )
    report.add(
        "outbox withdrawn",
        rowcount(
            session.execute(
                update(OutboxMessage)
                .where(mine, OutboxMessage.status.in_(("pending", "sending", "awaiting_confirm")))
                .values(status="failed", claimed_by=None, lease_until=None)
            )
        ),
    )
    report.add(
        "outbox texts",
        rowcount(
            session.execute(
                update(OutboxMessage)
                .where(mine)
                .values(payload={"text": ""}, last_error="forgotten")
            )
        ),
    )

    for identity in identities:
        _forget_identity(session, identity, customer_id, report)

    audit(
        session,
        by,
        "customer.forget",
        now,
        customer_id=customer_id,
        identities=report.identities,
    )
    return report


def _forget_identity(
    session: Session, identity: Identity, customer_id: int, report: ForgetReport
) -> None:
    """Replace one platform id everywhere it is stored, and drop what only it keys."""
    channel, ext = identity.channel, identity.external_id
    placeholder = _placeholder()
    identity.external_id, identity.display_name = placeholder, ""
    identity.unreachable, identity.unreachable_reason = True, "forgotten"

    for model, chat, user in (
        (Conversation, Conversation.chat_id, Conversation.user_id),
        (OutboxMessage, OutboxMessage.chat_id, OutboxMessage.user_id),
    ):
        session.execute(
            update(model)
            .where(model.channel == channel, user == ext, chat == ext)
            .values({chat.key: placeholder, user.key: placeholder})
        )
        session.execute(
            update(model)
            .where(model.channel == channel, user == ext)
            .values({user.key: placeholder})
        )
    session.execute(
        update(Interaction)
        .where(Interaction.customer_id == customer_id, Interaction.chat_id == ext)
        .values(chat_id=placeholder)
    )
    session.execute(
        update(WechatDelivery)
        .where(WechatDelivery.channel == channel, WechatDelivery.user_id == ext)
        .values(user_id=placeholder, detail=None)
    )
    session.execute(
        update(SourceAttribution)
        .where(SourceAttribution.channel == channel, SourceAttribution.external_id == ext)
        .values(external_id=placeholder)
    )
    report.add(
        "transcript lines",
        _delete(
            session,
            SandboxMessage,
            or_(SandboxMessage.user_id == ext, SandboxMessage.chat_id == ext),
        )
        if channel == "sandbox"
        else 0,
    )
    report.add(
        "relay topics",
        _delete(session, RelayTopic, (RelayTopic.channel == channel) & (RelayTopic.user_id == ext)),
    )
    report.add(
        "service windows",
        _delete(
            session,
            ServiceWindow,
            (ServiceWindow.channel == channel) & (ServiceWindow.openid == ext),
        ),
    )
    report.add(
        "unionid links",
        _delete(session, UnionId, (UnionId.channel == channel) & (UnionId.external_id == ext)),
    )
    report.add(
        "callbacks",
        _delete(
            session,
            InboundCallback,
            (InboundCallback.channel == channel) & (InboundCallback.user_id == ext),
        ),
    )
    if channel == "wecom":
        report.add(
            "wecom contacts",
            _delete(session, WecomContact, WecomContact.external_userid == ext),
        )
        _delete(session, WecomTagSync, WecomTagSync.external_userid == ext)
        _forget_in_mass_tasks(session, ext, placeholder)
    for column in (
        OutboxMessage.idempotency_key,
        ProcessedInbound.key,
        SourceAttribution.event_key,
        SandboxMessage.outbox_key,
    ):
        report.add("keys", _rewrite_keys(session, column, ext, placeholder))


def _forget_in_mass_tasks(session: Session, ext: str, placeholder: str) -> None:
    """WeCom mass-send tasks list their targets: replace the external userid there."""
    tasks = session.scalars(
        select(WecomMassTask).where(
            cast(WecomMassTask.targets, Text).contains(ext, autoescape=True)
        )
    )
    for task in tasks:
        task.targets = _replace_in(task.targets, ext, placeholder)


def _replace_in(value, old: str, new: str):
    if isinstance(value, str):
        return new if value == old else value
    if isinstance(value, list):
        return [_replace_in(v, old, new) for v in value]
    if isinstance(value, dict):
        return {k: _replace_in(v, old, new) for k, v in value.items()}
    return value


#: Audit detail keys that hold what the customer or staff wrote (kept: who, what, when).
AUDIT_TEXT_KEYS = ("detail", "text")


def _scrub_audit(session: Session, ticket_ids: list[int], conversation_ids: list[int]) -> int:
    """Blank the message texts quoted in audit entries about the customer's conversations."""
    conditions = []
    if ticket_ids:
        conditions.append(AuditEntry.ticket_id.in_(ticket_ids))
    if conversation_ids:
        conditions.append(AuditEntry.conversation_id.in_(conversation_ids))
    if not conditions:
        return 0
    changed = 0
    for entry in session.scalars(select(AuditEntry).where(or_(*conditions))):
        detail = dict(entry.detail or {})
        if any(detail.get(k) for k in AUDIT_TEXT_KEYS):
            entry.detail = {k: ("" if k in AUDIT_TEXT_KEYS else v) for k, v in detail.items()}
            changed += 1
    return changed


def _delete(session: Session, model, condition) -> int:
    return rowcount(session.execute(delete(model).where(condition))) or 0
