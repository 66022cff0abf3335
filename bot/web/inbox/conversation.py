"""One conversation: history (newest at the bottom), profile, coupons, readable breakpoint."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from bot.conversations.flows import FlowLibrary
from bot.conversations.flows.definition import pick
from bot.core.i18n import normalize_locale, t
from bot.core.templating import TemplateRenderError
from bot.marketing.coupons import customer_codes, format_code
from bot.web.inbox.auth import staff_of
from bot.web.inbox.common import InboxState, Refused, page, state_of
from bot.web.inbox.labels import label, reason_label, status_label
from storage import repos
from storage.handoff import HandoffTicket, StaffNote, StaffUser
from storage.models import Conversation, Customer, Interaction, OutboxMessage

__all__ = ["breakpoint_steps", "conversation_data", "conversation_page", "history_partial"]


def ticket_id_of(request: Request, locale: str) -> int:
    raw = request.path_params["ticket_id"]
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 15):
        raise Refused(HTMLResponse(t("inbox.bad_id", locale), status_code=400))
    return int(raw)


def history(session: Session, conv: Conversation, locale: str) -> list[dict]:
    """The last 100 messages each way, oldest first; pressed buttons shown by their label."""
    inbound = list(
        session.scalars(
            select(Interaction)
            .where(
                Interaction.customer_id == conv.customer_id,
                Interaction.channel == conv.channel,
                Interaction.chat_id == conv.chat_id,
            )
            .order_by(Interaction.id.desc())
            .limit(100)
        )
    )
    outbound = list(
        session.scalars(
            select(OutboxMessage)
            .where(
                OutboxMessage.channel == conv.channel,
                OutboxMessage.chat_id == conv.chat_id,
                OutboxMessage.user_id == conv.user_id,
            )
            .order_by(OutboxMessage.id.desc())
            .limit(100)
        )
    )
    labels: dict[str, str] = {}
    for o in reversed(outbound):  # newest label wins
        for b in (o.payload or {}).get("buttons", ()):
            labels[b.get("data", "")] = b.get("label", "")
    items = []
    for i in inbound:
        text = i.text
        if i.kind == "button":
            data = (i.payload or {}).get("button_data") or ""
            text = t("inbox.pressed", locale, label=labels.get(data) or data or "?")
        elif not text:
            text = (
                t("inbox.kind.join", locale)
                if i.kind == "join"
                else t("inbox.kind.other", locale, kind=i.kind)
            )
        items.append(
            {"at": i.occurred_at, "who": "customer", "text": text, "meta": "", "buttons": []}
        )
    for o in outbound:
        payload = o.payload or {}
        items.append(
            {
                "at": o.created_at,
                "who": "staff" if o.purpose == "staff" else "bot",
                "text": payload.get("text", ""),
                "meta": f"{label('inbox.purpose', o.purpose, locale)} · "
                + label(
                    "inbox.outbox",
                    "held" if o.status == "pending" and o.last_error == "in_handoff" else o.status,
                    locale,
                ),
                "buttons": [b.get("label", "") for b in payload.get("buttons", ())],
            }
        )
    return sorted(items, key=lambda m: m["at"])


def breakpoint_steps(library: FlowLibrary, conv: Conversation, locale: str, local) -> dict | None:
    """The breakpoint as a person reads it: the flow, its steps in order with the answers
    given, the step it waits at, and the pending offer. None outside a flow."""
    state = conv.state or {}
    flow_state = state.get("flow") or {}
    flow = library.get(conv.flow or flow_state.get("name"))
    if flow is None:
        return None
    answers = flow_state.get("answers") or {}
    steps: list[dict] = []
    seen: set[str] = set()
    step_id: str | None = flow.start
    while step_id and step_id not in seen and step_id in flow.steps:
        seen.add(step_id)
        step = flow.steps[step_id]
        if step.expects_answer:
            key = step.save_as or step.id
            value = answers.get(key)
            if value is not None:
                choice = next((c for c in step.choices if c.value == value), None)
                shown = choice.label(locale) if choice else str(value)
            else:
                shown = ""
            steps.append(
                {
                    "title": pick(step.title, locale) if step.title else step.id,
                    "answer": shown,
                    "current": step.id == conv.step,
                }
            )
        step_id = step.next_step(answers)
    offer = flow_state.get("offer")
    offer_text = None
    if offer:
        title = offer.get("title")
        title = pick(title, locale) if isinstance(title, dict) else str(title or "")
        try:
            expires = local(datetime.fromisoformat(offer["expires_at"]))
        except (KeyError, TypeError, ValueError):
            expires = "-"
        offer_text = t(
            "inbox.breakpoint.offer", locale, title=title, code=offer.get("code", ""), at=expires
        )
    return {
        "flow": pick(flow.title, locale),
        "flow_name": flow.name,
        "step": conv.step,
        "steps": steps,
        "done": conv.step is None,
        "offer": offer_text,
    }


def orders_of(session: Session, customer_id: int) -> dict | None:
    from storage.orders import Order

    count, total = session.execute(
        select(func.count(Order.id), func.coalesce(func.sum(Order.amount_cents), 0)).where(
            Order.customer_id == customer_id
        )
    ).one()
    return {"count": count, "total": f"{total / 100:.2f}"}


def canned_previews(state: InboxState, customer: Customer, user: StaffUser) -> list[dict]:
    """Every canned reply rendered for this customer, to preview and edit before sending."""
    out = []
    for name in state.canned:
        try:
            text = state.runtime.renderer.render(
                f"canned_{name}", customer.locale, customer=customer, staff=user.display_name
            )
        except TemplateRenderError:
            continue
        out.append({"name": name, "text": text, "label": text.splitlines()[0][:24]})
    return out


def conversation_data(state: InboxState, ticket_id: int, user: StaffUser) -> dict | None:
    """Everything the conversation page shows, read in one session."""
    runtime = state.runtime
    config = runtime.config
    locale = normalize_locale(user.locale)
    now = runtime.clock.now()
    with runtime.db.sessions() as session:
        ticket = session.get(HandoffTicket, ticket_id)
        if ticket is None:
            return None
        conv = session.get(Conversation, ticket.conversation_id)
        customer = session.get(Customer, ticket.customer_id)
        assert conv is not None and customer is not None
        profile = repos.customer_profile(session, conv.channel, conv.user_id, now)
        codes = customer_codes(session, conv.customer_id)
        return {
            "ticket": ticket,
            "reason_label": reason_label(ticket.reason, locale),
            "status_label": status_label(ticket.status, locale),
            "conversation": conv,
            "profile": profile.as_dict() if profile else None,
            "breakpoint": breakpoint_steps(state.flows, conv, locale, state.local),
            "history": history(session, conv, locale),
            "notes": list(
                session.scalars(
                    select(StaffNote)
                    .where(StaffNote.conversation_id == conv.id)
                    .order_by(StaffNote.id)
                )
            ),
            "coupons": [
                {
                    "code": format_code(c.code),
                    "title": d.title,
                    "source": t("inbox.profile.from_campaign", locale, id=c.campaign_id)
                    if c.campaign_id
                    else d.title,
                    "expires_at": c.expires_at,
                    "redeemed": c.status == "redeemed",
                }
                for c, d in codes
            ],
            "coupon_choices": [(d.name, d.title) for d in config.coupons.definitions],
            "orders": orders_of(session, conv.customer_id),
            "staff": [s.username for s in session.scalars(select(StaffUser)) if s.active],
            "canned": canned_previews(state, customer, user),
            "nonce": uuid.uuid4().hex,
        }


async def _load(request: Request) -> tuple[StaffUser, dict]:
    state = state_of(request)
    user = await staff_of(request)
    ticket_id = ticket_id_of(request, user.locale)
    data = await state.runtime.db.run(conversation_data, state, ticket_id, user)
    if data is None:
        raise Refused(HTMLResponse(t("inbox.not_found", user.locale), status_code=404))
    return user, data


async def conversation_page(request: Request) -> Response:
    user, data = await _load(request)
    return page(request, "inbox/conversation.html", user, **data)


async def history_partial(request: Request) -> Response:
    user, data = await _load(request)
    return page(request, "inbox/_history.html", user, **data)
