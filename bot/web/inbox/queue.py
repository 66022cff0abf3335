"""The queue: the page, its live partial, the JSON queue and the SSE stream of changes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from sqlalchemy import select
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from bot.core.i18n import normalize_locale
from bot.web.inbox.auth import staff_of
from bot.web.inbox.common import InboxState, page, state_of
from bot.web.inbox.labels import reason_label, status_label
from storage.handoff import OPEN_STATUSES, HandoffTicket, StaffUser
from storage.models import Customer

__all__ = ["api_queue", "queue_data", "queue_page", "queue_partial", "stream"]

VIEWS = ("flagged", "mine", "all")


def view_of(request: Request) -> str:
    view = request.query_params.get("view", "flagged")
    return view if view in VIEWS else "flagged"


def queue_data(state: InboxState, view: str, user: StaffUser) -> dict:
    """The tickets of one tab (flagged, mine, all), highest priority first."""
    runtime = state.runtime
    locale = normalize_locale(user.locale)
    stmt = select(HandoffTicket, Customer).join(Customer, Customer.id == HandoffTicket.customer_id)
    if view == "flagged":
        stmt = stmt.where(HandoffTicket.status == "waiting")
    elif view == "mine":
        stmt = stmt.where(HandoffTicket.status == "claimed", HandoffTicket.owner == user.username)
    else:
        stmt = stmt.where(HandoffTicket.status.in_(OPEN_STATUSES))
    stmt = stmt.order_by(HandoffTicket.priority.desc(), HandoffTicket.created_at).limit(200)
    now = runtime.clock.now()
    with runtime.db.sessions() as session:
        rows = [
            {
                "id": t.id,
                "customer": c.display_name or f"#{c.id}",
                "reason": t.reason,
                "reason_label": reason_label(t.reason, locale),
                "detail": t.detail,
                "priority": t.priority,
                "status": t.status,
                "status_label": status_label(t.status, locale),
                "owner": t.owner,
                "escalated": t.escalated_at is not None,
                "waited": int((now - t.created_at).total_seconds() // 60),
            }
            for t, c in session.execute(stmt)
        ]
    return {"rows": rows, "view": view}


async def queue_page(request: Request) -> Response:
    state = state_of(request)
    user = await staff_of(request)
    data = await state.runtime.db.run(queue_data, state, view_of(request), user)
    return page(request, "inbox/queue.html", user, **data)


async def queue_partial(request: Request) -> Response:
    state = state_of(request)
    user = await staff_of(request)
    data = await state.runtime.db.run(queue_data, state, view_of(request), user)
    return page(request, "inbox/_queue.html", user, **data)


async def api_queue(request: Request) -> Response:
    state = state_of(request)
    user = await staff_of(request, api=True)
    data = await state.runtime.db.run(queue_data, state, view_of(request), user)
    return JSONResponse({"view": data["view"], "tickets": data["rows"]})


async def stream(request: Request) -> Response:
    """Server-sent ``changed`` events for the queue and (``?ticket=``) one conversation."""
    state = state_of(request)
    await staff_of(request, api=True)
    raw = request.query_params.get("ticket")
    ticket_id = int(raw) if raw and raw.isascii() and raw.isdigit() and len(raw) <= 15 else None

    async def events() -> AsyncIterator[str]:
        sub = await state.live.subscribe(ticket_id)
        try:
            yield ": connected\n\n"
            while not state.shutting_down() and not await request.is_disconnected():
                try:
                    await asyncio.wait_for(sub.changed.wait(), 0.5)
                except TimeoutError:
                    continue
                sub.changed.clear()
                yield "event: changed\ndata: {}\n\n"
        finally:
            state.live.unsubscribe(sub)

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
