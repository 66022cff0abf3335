"""Periodic work of conversations: send due follow-ups and escalate overdue handoffs.

It runs on the one scheduler (scheduler/service.py registers ``conversations:due`` every
``[conversations] followup_interval_seconds``; the job is ``scheduler.jobs:conversations_due``),
so only the process holding the scheduler lock does it. Each follow-up is still handled in
its own transaction with its conversation row locked, and SLA escalation takes its tickets
``FOR UPDATE SKIP LOCKED`` and only once, so an overlapping run (a leader change) never
sends twice (the outbox keys ``followup:<id>`` and ``sla:<ticket>:<manager>`` make it
idempotent anyway).
"""

from __future__ import annotations

import logging
from collections import Counter
from datetime import timedelta
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.app.config import Config
from bot.conversations.flows import FlowLibrary, FlowRun, load_flows
from bot.conversations.handoff import escalate_overdue, expected_reply
from bot.core.clock import Clock
from bot.core.events import ConversationRef
from bot.core.i18n import catalogue, t
from bot.core.templating import Renderer
from bot.marketing.policy import check
from bot.outbox import queue as outbox
from storage.db import Database
from storage.followups import FollowUp
from storage.handoff import HandoffTicket
from storage.models import Conversation, Customer
from storage.orders import Order

if TYPE_CHECKING:
    from bot.app.services import Services

__all__ = ["escalate_sla", "run_conversation_jobs", "send_due_followups"]

log = logging.getLogger(__name__)


def _bought_since(session: Session, customer_id: int, since) -> bool:
    """Whether the customer has ordered since a moment."""
    return (
        session.scalar(
            select(Order.id)
            .where(Order.customer_id == customer_id, Order.ordered_at >= since)
            .limit(1)
        )
        is not None
    )


def _has_pending(session: Session, conversation_id: int) -> bool:
    return (
        session.scalar(
            select(FollowUp.id)
            .where(FollowUp.conversation_id == conversation_id, FollowUp.status == "pending")
            .limit(1)
        )
        is not None
    )


def _send_one(
    session: Session,
    followup_id: int,
    config: Config,
    renderer: Renderer,
    library: FlowLibrary,
    now,
) -> str:
    fu = session.get(FollowUp, followup_id)
    if fu is None or fu.status != "pending" or fu.due_at > now:
        return "gone"
    conversation = session.scalars(
        select(Conversation).where(Conversation.id == fu.conversation_id).with_for_update()
    ).one()
    session.refresh(fu)
    if fu.status != "pending":
        return "gone"
    customer = session.get(Customer, fu.customer_id)
    assert customer is not None

    def close(status: str, reason: str) -> str:
        fu.status, fu.reason = status, reason
        # The conversation row is locked: its marker may say "none pending" again.
        conversation.followups_pending = _has_pending(session, conversation.id)
        return reason

    if (conversation.flow, conversation.step) != (fu.flow, fu.step):
        return close("cancelled", "breakpoint_moved")
    if conversation.handoff_status != "bot":
        return close("cancelled", "in_handoff")
    if _bought_since(session, customer.id, fu.created_at):
        return close("cancelled", "bought")
    decision = check(
        session, customer, now, config.marketing, default_timezone=config.general.timezone
    )
    if not decision.allowed:
        if decision.retry_at is None:
            return close("skipped", decision.reason)
        fu.due_at, fu.reason = decision.retry_at, f"deferred: {decision.reason}"
        return f"deferred_{decision.reason}"
    run = FlowRun(session, conversation, customer, library, now)
    message = run.followup(fu.template)
    if message is None:
        return close("cancelled", "nothing_to_follow_up")
    text, buttons = message.render(renderer, customer.locale, customer)
    outbox.enqueue(
        session,
        key=f"followup:{fu.id}",
        to=ConversationRef(conversation.channel, conversation.chat_id, conversation.user_id),
        text=text,
        buttons=buttons,
        customer_id=customer.id,
        purpose="followup",
        now=now,
    )
    conversation.last_bot_message = text
    fu.sent_at = now
    return close("sent", "sent")


def send_due_followups(
    db: Database,
    config: Config,
    clock: Clock,
    *,
    renderer: Renderer | None = None,
    library: FlowLibrary | None = None,
    limit: int = 500,
) -> Counter:
    """Send (or cancel, skip, defer) every due follow-up; returns counts by outcome."""
    renderer = renderer or Renderer()
    library = library or load_flows(config.conversations.flows_dir or None, renderer)
    now = clock.now()
    with db.sessions() as session:
        due = list(
            session.scalars(
                select(FollowUp.id)
                .where(FollowUp.status == "pending", FollowUp.due_at <= now)
                .order_by(FollowUp.due_at)
                .limit(limit)
            )
        )
    outcomes: Counter = Counter()
    for followup_id in due:
        try:
            with db.transaction() as session:
                outcomes[_send_one(session, followup_id, config, renderer, library, now)] += 1
        except Exception:
            log.exception("follow-up %s failed; it stays pending", followup_id)
            outcomes["error"] += 1
    return outcomes


def escalate_sla(
    db: Database, config: Config, clock: Clock, *, renderer: Renderer | None = None
) -> list[int]:
    """Escalate handoffs waiting past the SLA and alert the managers; returns ticket ids."""
    renderer = renderer or Renderer()
    now = clock.now()
    with db.transaction() as session:
        tickets: list[HandoffTicket] = escalate_overdue(session, config, now)
        for ticket in tickets:
            customer = session.get(Customer, ticket.customer_id)
            for manager in config.roles.managers:
                channel, _, user = manager.partition(":")
                text = renderer.render(
                    "handoff_escalated",
                    config.general.locale,
                    ticket_id=ticket.id,
                    customer=customer.display_name if customer else "?",
                    reason=reason_text(ticket.reason, config.general.locale),
                    minutes=int((now - ticket.created_at) / timedelta(minutes=1)),
                )
                outbox.enqueue(
                    session,
                    key=f"sla:{ticket.id}:{manager}",
                    to=ConversationRef(channel, user, user),
                    text=text,
                    purpose="staff_alert",
                    priority=20,
                    now=now,
                )
            tell_customer_of_delay(session, ticket, customer, config, renderer, now)
        return [t.id for t in tickets]


def reason_text(reason: str, locale: str) -> str:
    """A handoff reason in words (``keyword`` → 关键词), unknown codes as "other"."""
    key = f"handoff.reason.{reason}"
    return t(key if key in catalogue() else "handoff.reason.other", locale)


def tell_customer_of_delay(
    session, ticket: HandoffTicket, customer: Customer | None, config: Config, renderer, now
) -> None:
    """The SLA passed with nobody on it: the customer hears it too (once), not only managers."""
    conversation = session.get(Conversation, ticket.conversation_id)
    if conversation is None or customer is None:
        return
    when = expected_reply(config, customer, now)
    outbox.enqueue(
        session,
        key=f"sla:{ticket.id}:customer",
        to=ConversationRef(conversation.channel, conversation.chat_id, conversation.user_id),
        text=renderer.render(
            "handoff_delayed",
            customer.locale,
            customer=customer,
            in_hours=when.in_hours,
            opens=when.opens,
        ),
        customer_id=customer.id,
        purpose="staff",
        priority=20,
        now=now,
    )


_cached: tuple[Services, FlowLibrary] | None = None


def run_conversation_jobs(services: Services) -> tuple[Counter, list[int]]:
    """One run of the ``conversations:due`` scheduler job: follow-ups, then SLA escalation.

    The flow library is parsed once per bound services (the scheduler's process).
    """
    global _cached
    if _cached is None or _cached[0] is not services:
        flows_dir = services.config.conversations.flows_dir or None
        _cached = (services, load_flows(flows_dir, services.renderer))
    library = _cached[1]
    sent = send_due_followups(
        services.db, services.config, services.clock, renderer=services.renderer, library=library
    )
    escalated = escalate_sla(
        services.db, services.config, services.clock, renderer=services.renderer
    )
    if sent or escalated:
        log.info("conversations: follow-ups %s; %d escalated", dict(sent), len(escalated))
    return sent, escalated
