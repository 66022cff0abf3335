"""The manager's page: every conversation, manual flagging, staff with their satisfaction
ratings, and the audit log in readable words."""

from __future__ import annotations

from sqlalchemy import func, select
from starlette.requests import Request
from starlette.responses import Response

from bot.conversations import handoff
from bot.conversations.handoff import HandoffError
from bot.conversations.staff import list_staff
from bot.core.i18n import normalize_locale, t
from bot.web.inbox.auth import form_of, staff_of
from bot.web.inbox.common import InboxState, back, page, state_of
from bot.web.inbox.labels import action_label, audit_detail, label
from storage.handoff import AuditEntry, HandoffTicket, StaffUser
from storage.models import Conversation, Customer

__all__ = ["manager_data", "manager_flag", "manager_page", "ratings_by_staff"]


def ratings_by_staff(session) -> dict[str, dict]:
    """Per staff member: resolved conversations, ratings given and their average."""
    rows = session.execute(
        select(
            HandoffTicket.owner,
            func.count(HandoffTicket.id),
            func.count(HandoffTicket.rating),
            func.avg(HandoffTicket.rating),
        )
        .where(HandoffTicket.status == "resolved", HandoffTicket.owner.is_not(None))
        .group_by(HandoffTicket.owner)
    ).all()
    return {
        owner: {"resolved": resolved, "count": rated, "avg": float(avg) if avg else None}
        for owner, resolved, rated, avg in rows
    }


def manager_data(state: InboxState, user: StaffUser) -> dict:
    locale = normalize_locale(user.locale)
    with state.runtime.db.sessions() as session:
        conversations = session.execute(
            select(Conversation, Customer)
            .join(Customer, Customer.id == Conversation.customer_id)
            .order_by(Conversation.updated_at.desc())
            .limit(100)
        ).all()
        audit_rows = list(
            session.scalars(select(AuditEntry).order_by(AuditEntry.id.desc()).limit(200))
        )
        ratings = ratings_by_staff(session)
        return {
            "conversations": [
                {
                    "id": c.id,
                    "customer": cu.display_name or f"#{cu.id}",
                    "ref": f"{c.channel}:{c.chat_id}",
                    "flow": c.flow,
                    "step": c.step,
                    "handoff": c.handoff_status,
                    "handoff_label": label("handoff.state", c.handoff_status, locale),
                    "owner": c.handoff_owner,
                    "updated_at": c.updated_at,
                }
                for c, cu in conversations
            ],
            "audit": [
                {
                    "at": a.created_at,
                    "actor": t(f"handoff.actor.{a.actor}", locale)
                    if a.actor in ("bot", "system", "customer")
                    else a.actor,
                    "action": action_label(a.action, locale),
                    "code": a.action,
                    "ticket_id": a.ticket_id,
                    "detail": audit_detail(a.detail, locale),
                }
                for a in audit_rows
            ],
            "staff": [
                {
                    "username": s.username,
                    "role": t(f"inbox.role.{s.role}", locale),
                    "active": s.active,
                    "ratings": ratings.get(s.username),
                }
                for s in list_staff(session)
            ],
        }


async def manager_page(request: Request) -> Response:
    state = state_of(request)
    user = await staff_of(request, manager=True)
    data = await state.runtime.db.run(manager_data, state, user)
    return page(request, "inbox/manager.html", user, **data)


async def manager_flag(request: Request) -> Response:
    state = state_of(request)
    runtime = state.runtime
    user = await staff_of(request, manager=True)
    locale = normalize_locale(user.locale)
    data = await form_of(request, user)
    raw = data.get("conversation_id", "")
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 15):
        return back(request, "/inbox/manager", "!" + t("inbox.flash.choose_conversation", locale))
    conversation_id = int(raw)

    def run() -> int:
        with runtime.db.transaction() as session:
            return handoff.manager_flag(
                session, conversation_id, user, data.get("note", "")[:500], runtime.clock.now()
            ).id

    try:
        ticket_id = await runtime.db.run(run)
    except HandoffError as exc:
        return back(request, "/inbox/manager", "!" + exc.text(locale))
    state.live.poke()
    return back(request, f"/inbox/c/{ticket_id}", t("inbox.flash.flagged", locale))
