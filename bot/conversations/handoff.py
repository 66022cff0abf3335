"""The staff takeover model: flag, claim, reply, note, transfer, coupon, release, resolve.

One model for every surface (the web inbox now, the Telegram staff relay group later).
Each function takes the caller's session (one transaction) and the time, and writes an
:class:`~storage.handoff.AuditEntry` for every staff action. While a conversation's
``handoff_status`` is ``waiting`` or ``staff`` the router keeps bot handlers silent; on
release the bot resumes the flow at its breakpoint.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from bot.adapters.base import Button
from bot.app.config import Config
from bot.conversations.flows import FlowLibrary, FlowRun
from bot.conversations.handoff_states import (
    HandoffStatus,
    TicketStatus,
    handoff_transition,
    ticket_transition,
)
from bot.core.events import ConversationRef
from bot.core.i18n import t
from bot.core.templating import Renderer
from bot.marketing.coupons import (
    Redemption,
    ensure_definition,
    format_code,
    issue_one,
    redeem,
    stock_left,
)
from bot.marketing.policy import customer_zone, in_range, parse_range
from bot.outbox import queue as outbox
from storage.db import rowcount
from storage.followups import cancel_pending
from storage.handoff import OPEN_STATUSES, AuditEntry, HandoffTicket, StaffNote, StaffUser
from storage.models import Conversation, Customer

__all__ = [
    "REASON_PRIORITY",
    "HandoffError",
    "audit",
    "claim",
    "escalate_overdue",
    "expected_reply",
    "flag",
    "issue_coupon",
    "open_ticket",
    "record_rating",
    "redeem_coupon",
    "release",
    "reply",
    "resolve",
    "subscribe",
    "transfer",
]

log = logging.getLogger(__name__)

#: Called as ``observer(session, entry)`` after every audit entry, in its transaction (a
#: savepoint): how other surfaces (the Telegram relay group) follow the model without this
#: module knowing them.
AuditObserver = Callable[[Session, AuditEntry], None]
_observers: list[AuditObserver] = []


def subscribe(observer: AuditObserver) -> Callable[[], None]:
    """Follow every staff action (see :data:`AuditObserver`); returns the unsubscribe."""
    _observers.append(observer)
    return lambda: _observers.remove(observer) if observer in _observers else None


#: Queue priority by reason (higher first); VIP customers get VIP_BONUS on top.
REASON_PRIORITY = {
    "complaint": 80,
    "keyword": 80,
    "human": 60,
    "manager": 60,
    "vip": 50,
    "misunderstood": 40,
}
VIP_BONUS = 20
STAFF_PREFIX = "STAFF"
SLA_BONUS = 50


class HandoffError(Exception):
    """A staff action that cannot be done now (not yours, already closed, ...).

    ``key`` is a catalogue key (templates/i18n/handoff.toml) filled with ``values``;
    :meth:`text` says it in the reader's locale, ``str()`` is the English text (logs, API).
    """

    def __init__(self, key: str, status: int = 409, **values: object) -> None:
        self.key, self.values, self.status = key, values, status
        super().__init__(t(key, "en", **values))

    def text(self, locale: str | None) -> str:
        """The refusal in the reader's locale."""
        return t(self.key, locale, **self.values)


def audit(
    session: Session,
    actor: str,
    action: str,
    now: datetime,
    *,
    ticket: HandoffTicket | None = None,
    conversation_id: int | None = None,
    **detail,
) -> None:
    entry = AuditEntry(
        actor=actor,
        action=action,
        ticket_id=ticket.id if ticket else None,
        conversation_id=conversation_id or (ticket.conversation_id if ticket else None),
        detail=detail,
        created_at=now,
    )
    session.add(entry)
    for observer in tuple(_observers):
        try:
            with session.begin_nested():
                observer(session, entry)
        except Exception:  # an observer never undoes the staff action
            log.exception("handoff: observer %r failed on %s", observer, action)


#: The claim's one atomic UPDATE moves a ticket from waiting to claimed (checked here once).
_CLAIM = ticket_transition(TicketStatus.WAITING, TicketStatus.CLAIMED)


def _hand(conversation: Conversation, status: HandoffStatus, owner: str | None) -> None:
    """The one place a conversation's handoff status changes (checked by its table)."""
    old = conversation.handoff_status or HandoffStatus.BOT
    conversation.handoff_status = handoff_transition(old, status).value
    conversation.handoff_owner = owner


def open_ticket(session: Session, conversation_id: int) -> HandoffTicket | None:
    return session.scalars(
        select(HandoffTicket)
        .where(
            HandoffTicket.conversation_id == conversation_id,
            HandoffTicket.status.in_(OPEN_STATUSES),
        )
        .order_by(HandoffTicket.id.desc())
        .limit(1)
    ).first()


def flag(
    session: Session,
    conversation: Conversation,
    *,
    reason: str,
    now: datetime,
    detail: str = "",
    vip: bool = False,
    actor: str = "bot",
) -> tuple[HandoffTicket, bool]:
    """Put a conversation in the staff queue; (ticket, created). An open ticket is reused."""
    priority = REASON_PRIORITY.get(reason, 40) + (VIP_BONUS if vip else 0)
    ticket = open_ticket(session, conversation.id)
    if ticket is not None:
        if priority > ticket.priority:
            ticket.priority, ticket.updated_at = priority, now
        return ticket, False
    ticket = HandoffTicket(
        conversation_id=conversation.id,
        customer_id=conversation.customer_id,
        reason=reason,
        detail=detail[:500],
        priority=priority,
        status=TicketStatus.WAITING.value,
        created_at=now,
        updated_at=now,
    )
    session.add(ticket)
    session.flush()
    _hand(conversation, HandoffStatus.WAITING, None)
    cancel_pending(session, conversation.id, "handoff")
    audit(session, actor, "flag", now, ticket=ticket, reason=reason, detail=detail[:200])
    return ticket, True


@dataclass(frozen=True)
class ExpectedReply:
    """When a person will answer: within minutes in business hours, else when they open."""

    in_hours: bool
    minutes: int
    opens: str


def expected_reply(config: Config, customer: Customer, now: datetime) -> ExpectedReply:
    """The expected answer time, business hours read in the brand's time zone."""
    brand = ZoneInfo(config.general.timezone)
    start, end = parse_range(config.handoff.business_hours)
    local = now.astimezone(brand)
    if in_range(local.time(), start, end):
        return ExpectedReply(True, config.handoff.expected_minutes, "")
    day = local.date() if local.time() < start else local.date() + timedelta(days=1)
    opens = datetime.combine(day, start, tzinfo=brand).astimezone(customer_zone(customer))
    fmt = "%-m月%-d日 %H:%M" if customer.locale == "zh-CN" else "%b %-d, %H:%M"
    return ExpectedReply(False, config.handoff.expected_minutes, opens.strftime(fmt))


def _ticket(session: Session, ticket_id: int) -> HandoffTicket:
    ticket = session.get(HandoffTicket, ticket_id)
    if ticket is None:
        raise HandoffError("handoff.error.no_ticket", 404, ticket_id=ticket_id)
    return ticket


def _locked_conversation(session: Session, conversation_id: int) -> Conversation:
    return session.scalars(
        select(Conversation).where(Conversation.id == conversation_id).with_for_update()
    ).one()


def _owned(session: Session, ticket_id: int, staff: StaffUser) -> HandoffTicket:
    ticket = _ticket(session, ticket_id)
    if ticket.status != "claimed" or ticket.owner != staff.username:
        raise HandoffError("handoff.error.claim_first")
    return ticket


def claim(session: Session, ticket_id: int, staff: StaffUser, now: datetime) -> bool:
    """Claim a waiting conversation: one atomic UPDATE, so exactly one claimer wins."""
    won = rowcount(
        session.execute(
            update(HandoffTicket)
            .where(HandoffTicket.id == ticket_id, HandoffTicket.status == TicketStatus.WAITING)
            .values(status=_CLAIM.value, owner=staff.username, claimed_at=now, updated_at=now)
        )
    )
    ticket = _ticket(session, ticket_id)
    if not won:
        audit(session, staff.username, "claim_refused", now, ticket=ticket, owner=ticket.owner)
        return False
    conversation = _locked_conversation(session, ticket.conversation_id)
    _hand(conversation, HandoffStatus.STAFF, staff.username)
    audit(session, staff.username, "claim", now, ticket=ticket)
    return True


def _ref(conversation: Conversation) -> ConversationRef:
    return ConversationRef(conversation.channel, conversation.chat_id, conversation.user_id)


def reply(
    session: Session, ticket_id: int, staff: StaffUser, text: str, nonce: str, now: datetime
) -> bool:
    """Queue a staff answer to the customer's own channel; False if it was sent before."""
    text = text.strip()
    if not text:
        raise HandoffError("handoff.error.reply_empty", 400)
    if len(text) > 4000:
        raise HandoffError("handoff.error.reply_too_long", 400)
    ticket = _owned(session, ticket_id, staff)
    conversation = session.get(Conversation, ticket.conversation_id)
    assert conversation is not None
    queued = outbox.enqueue(
        session,
        key=f"staff:{ticket.id}:{nonce}",
        to=_ref(conversation),
        text=text,
        customer_id=conversation.customer_id,
        purpose="staff",
        priority=10,
        now=now,
    )
    if queued:
        ticket.updated_at = now
        audit(session, staff.username, "reply", now, ticket=ticket, text=text[:500])
    return queued


def add_note(session: Session, ticket_id: int, staff: StaffUser, text: str, now: datetime) -> None:
    text = text.strip()
    if not text:
        raise HandoffError("handoff.error.note_empty", 400)
    if len(text) > 2000:
        raise HandoffError("handoff.error.note_too_long", 400)
    ticket = _ticket(session, ticket_id)
    session.add(
        StaffNote(
            conversation_id=ticket.conversation_id, author=staff.username, text=text, created_at=now
        )
    )
    audit(session, staff.username, "note", now, ticket=ticket)


def transfer(
    session: Session, ticket_id: int, staff: StaffUser, to_username: str, now: datetime
) -> StaffUser:
    """Give an owned conversation to a colleague (manager: any claimed one)."""
    ticket = _ticket(session, ticket_id)
    if ticket.status != "claimed" or (ticket.owner != staff.username and staff.role != "manager"):
        raise HandoffError("handoff.error.transfer_not_owner")
    target = session.scalars(
        select(StaffUser).where(StaffUser.username == to_username, StaffUser.active.is_(True))
    ).one_or_none()
    if target is None:
        raise HandoffError("handoff.error.no_staff", 400, name=to_username[:64])
    previous = ticket.owner
    ticket.owner, ticket.updated_at = target.username, now
    _locked_conversation(session, ticket.conversation_id).handoff_owner = target.username
    audit(session, staff.username, "transfer", now, ticket=ticket, to=target.username, frm=previous)
    return target


def issue_coupon(
    session: Session,
    ticket_id: int,
    staff: StaffUser,
    *,
    coupon: str,
    nonce: str,
    now: datetime,
    config: Config,
    renderer: Renderer | None = None,
    replace_offer: bool = False,
) -> str:
    """Issue a ``[coupons]`` coupon (code ``STAFF-…``) and tell the customer at once
    through the outbox (template ``staff_coupon``). The flow's own pending offer is kept;
    with ``replace_offer`` (or when the flow has none) the staff coupon becomes the offer
    the bot talks about at the breakpoint. The same ``nonce`` gives the same code."""
    item = next((d for d in config.coupons.definitions if d.name == coupon), None)
    if item is None:
        raise HandoffError("handoff.error.no_coupon", 400, name=coupon[:64])
    ticket = _owned(session, ticket_id, staff)
    conversation = _locked_conversation(session, ticket.conversation_id)
    definition = ensure_definition(session, item, now)
    row = issue_one(
        session,
        definition,
        conversation.customer_id,
        f"staff:{ticket.id}:{nonce}"[:200],
        now=now,
        prefix=STAFF_PREFIX,
        reuse_valid=False,
    )
    if row is None:
        if definition.total_stock and (stock_left(session, definition) or 0) <= 0:
            raise HandoffError(
                "handoff.error.out_of_stock", title=definition.title, total=definition.total_stock
            )
        raise HandoffError(
            "handoff.error.per_customer_limit",
            title=definition.title,
            per_customer=definition.per_customer,
        )
    code = format_code(row.code)
    state = dict(conversation.state or {})
    flow_state = dict(state.get("flow") or {})
    staff_offer = {
        "code": code,
        "coupon": definition.name,
        "title": {"zh-CN": definition.title, "en": definition.title},
        "expires_at": row.expires_at.isoformat(),
        "source": f"staff:{staff.username}",
        "renewed": False,
    }
    if replace_offer or not flow_state.get("offer"):
        flow_state["offer"] = staff_offer
    else:
        flow_state["staff_coupons"] = [*flow_state.get("staff_coupons", ()), staff_offer][-10:]
    state["flow"] = flow_state
    conversation.state = state
    customer = session.get(Customer, conversation.customer_id)
    assert customer is not None
    expires = row.expires_at.astimezone(customer_zone(customer))
    text = (renderer or Renderer()).render(
        "staff_coupon",
        customer.locale,
        customer=customer,
        title=definition.title,
        code=code,
        expires=expires.strftime("%Y-%m-%d %H:%M"),
        min_spend=definition.min_spend_cents / 100 if definition.min_spend_cents else None,
    )
    outbox.enqueue(
        session,
        key=f"staff_coupon:{ticket.id}:{nonce}"[:200],
        to=_ref(conversation),
        text=text,
        customer_id=customer.id,
        purpose="staff",
        priority=10,
        now=now,
    )
    audit(
        session, staff.username, "coupon", now,
        ticket=ticket, code=code, coupon=definition.name, title=definition.title,
    )  # fmt: skip
    return code


def redeem_coupon(
    session: Session,
    staff: StaffUser,
    raw_code: str,
    *,
    now: datetime,
    config: Config,
    amount_cents: int | None = None,
    ticket_id: int | None = None,
) -> Redemption:
    """Redeem a code at the web console (atomic, see bot/marketing/coupons.py); audited whatever
    the outcome. With ``ticket_id`` the code must belong to that conversation's customer."""
    ticket = _ticket(session, ticket_id) if ticket_id is not None else None
    result = redeem(
        session,
        raw_code,
        now=now,
        by=f"staff:{staff.username}",
        config=config,
        customer_id=ticket.customer_id if ticket else None,
        amount_cents=amount_cents,
        require_amount=True,
    )
    audit(
        session, staff.username, "redeem", now,
        ticket=ticket, code=format_code(result.code) if result.code else raw_code[:40],
        outcome=result.reason, amount_cents=amount_cents,
    )  # fmt: skip
    return result


def _close(
    session: Session, ticket: HandoffTicket, status: str, staff: StaffUser, now: datetime
) -> Conversation:
    if ticket.status not in OPEN_STATUSES:
        raise HandoffError("handoff.error.closed")
    if ticket.status == "claimed" and ticket.owner != staff.username and staff.role != "manager":
        raise HandoffError("handoff.error.close_not_owner")
    ticket.status = ticket_transition(ticket.status, status).value
    ticket.closed_at, ticket.updated_at = now, now
    conversation = _locked_conversation(session, ticket.conversation_id)
    _hand(conversation, HandoffStatus.BOT, None)
    action = {"released": "release", "resolved": "resolve"}[status]
    audit(session, staff.username, action, now, ticket=ticket)
    return conversation


def release(
    session: Session,
    ticket_id: int,
    staff: StaffUser,
    now: datetime,
    *,
    renderer: Renderer,
    library: FlowLibrary,
    config: Config,
) -> str | None:
    """Hand the conversation back to the bot, which resumes its flow at the breakpoint.

    Returns the bot's resume message (queued through the outbox), or None outside a flow.
    """
    ticket = _ticket(session, ticket_id)
    conversation = _close(session, ticket, "released", staff, now)
    customer = session.get(Customer, conversation.customer_id)
    assert customer is not None
    run = FlowRun(
        session,
        conversation,
        customer,
        library,
        now,
        max_misses=config.conversations.misunderstandings_before_handoff,
    )
    if run.step is None:
        return None
    turn = run.resume("staff_released")
    texts = []
    for i, message in enumerate(turn.messages):
        text, buttons = message.render(renderer, customer.locale, customer)
        outbox.enqueue(
            session,
            key=f"release:{ticket.id}:{i}",
            to=_ref(conversation),
            text=text,
            buttons=buttons,
            customer_id=customer.id,
            now=now,
        )
        texts.append(text)
    conversation.last_bot_message = texts[-1] if texts else conversation.last_bot_message
    return "\n".join(texts) or None


RATING_PREFIX = "rate:"


def resolve(
    session: Session,
    ticket_id: int,
    staff: StaffUser,
    now: datetime,
    *,
    confirmed: bool = False,
    renderer: Renderer | None = None,
) -> None:
    """Close the matter once the staff member confirmed: the customer gets a closing
    message (template ``handoff_closing``) with a one-tap rating 1–5; the breakpoint stays
    for the next contact."""
    if not confirmed:
        raise HandoffError("handoff.error.confirm_resolve", 400)
    ticket = _ticket(session, ticket_id)
    conversation = _close(session, ticket, "resolved", staff, now)
    customer = session.get(Customer, conversation.customer_id)
    assert customer is not None
    text = (renderer or Renderer()).render(
        "handoff_closing", customer.locale, customer=customer, staff=staff.display_name
    )
    outbox.enqueue(
        session,
        key=f"resolve:{ticket.id}",
        to=_ref(conversation),
        text=text,
        buttons=[Button("⭐" * n, f"{RATING_PREFIX}{ticket.id}:{n}") for n in range(1, 6)],
        customer_id=customer.id,
        purpose="staff",
        priority=10,
        now=now,
    )


def record_rating(
    session: Session, customer_id: int, data: str, now: datetime
) -> tuple[str, int | None]:
    """The customer tapped a rating button (``rate:<ticket>:<1-5>``): store it once.

    Returns (outcome, score): ``rated``, ``already_rated``, ``not_yours`` or ``invalid``.
    """
    ticket_part, _, score_part = data.removeprefix(RATING_PREFIX).partition(":")
    if not (ticket_part.isdigit() and score_part.isdigit() and len(ticket_part) < 19):
        return "invalid", None
    score = int(score_part)
    ticket = session.get(HandoffTicket, int(ticket_part))
    if ticket is None or not 1 <= score <= 5 or ticket.status != "resolved":
        return "invalid", None
    if ticket.customer_id != customer_id:
        return "not_yours", None
    if ticket.rating is not None:
        return "already_rated", ticket.rating
    ticket.rating, ticket.rated_at = score, now
    audit(session, "customer", "rating", now, ticket=ticket, rating=score, owner=ticket.owner)
    return "rated", score


def manager_flag(
    session: Session, conversation_id: int, manager: StaffUser, note: str, now: datetime
) -> HandoffTicket:
    """A manager puts any conversation in the staff queue."""
    if manager.role != "manager":
        raise HandoffError("handoff.error.managers_only", 403)
    conversation = session.get(Conversation, conversation_id)
    if conversation is None:
        raise HandoffError("handoff.error.no_conversation", 404, conversation_id=conversation_id)
    ticket, _created = flag(
        session, conversation, reason="manager", now=now, detail=note, actor=manager.username
    )
    return ticket


def escalate_overdue(session: Session, config: Config, now: datetime) -> list[HandoffTicket]:
    """Escalate conversations waiting unclaimed past the SLA (once each): priority up, audited."""
    limit = now - timedelta(minutes=config.handoff.sla_minutes)
    overdue = list(
        session.scalars(
            select(HandoffTicket)
            .where(
                HandoffTicket.status == "waiting",
                HandoffTicket.escalated_at.is_(None),
                HandoffTicket.created_at <= limit,
            )
            .with_for_update(skip_locked=True)
        )
    )
    for ticket in overdue:
        ticket.escalated_at, ticket.updated_at = now, now
        ticket.priority += SLA_BONUS
        waited = int((now - ticket.created_at).total_seconds() // 60)
        audit(session, "system", "sla_escalated", now, ticket=ticket, waited_minutes=waited)
    return overdue
