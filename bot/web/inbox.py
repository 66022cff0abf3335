"""The staff inbox: log in, see the queue, claim, answer, note, transfer, release, resolve.

Server-rendered Jinja2 (``templates/web/inbox/``) with live updates over SSE: pages listen
on ``/inbox/stream`` and re-fetch their changing part when the queue or the conversation
changes; one poller per process watches the database for all of them
(bot/web/inbox_live.py). Sessions are signed cookies (Starlette ``SessionMiddleware``, itsdangerous); every
form and API POST carries the session's CSRF token; passwords are argon2 hashes
(bot/conversations/staff.py). Staff see the queue and conversations; managers also see ``/inbox/manager``
(all conversations, manual flag, the audit log). Every action goes through bot/conversations/handoff.py,
which writes the audit log.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import secrets
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from zoneinfo import ZoneInfo

import jinja2
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import BaseRoute, Route

from bot.app.runtime import Runtime
from bot.conversations import handoff
from bot.conversations.flows import FlowLibrary, load_flows
from bot.conversations.handoff import HandoffError
from bot.conversations.staff import (
    authenticate,
    clear_login_failures,
    list_staff,
    login_blocked_until,
    record_login_failure,
)
from bot.core.templating import TEMPLATES_DIR, TemplateRenderError
from bot.marketing.coupons import Redemption, customer_codes, format_code
from bot.web.inbox_live import LiveUpdates
from storage import repos
from storage.handoff import OPEN_STATUSES, AuditEntry, HandoffTicket, StaffNote, StaffUser
from storage.models import Conversation, Customer, Interaction, OutboxMessage

__all__ = ["csrf_ok", "csrf_token", "current_staff", "inbox_middleware", "inbox_routes"]

log = logging.getLogger(__name__)

_pages = jinja2.Environment(
    loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR / "web")), autoescape=True
)
VIEWS = ("flagged", "mine", "all")


def inbox_middleware(runtime: Runtime) -> list[Middleware]:
    """The signed-cookie session the inbox needs ([handoff] secret_key, else a random one)."""
    config = runtime.config.handoff
    secret = config.secret_key
    if not secret:
        log.warning("[handoff] secret_key is not set: inbox logins end when Siyu restarts")
        secret = secrets.token_urlsafe(32)
    return [
        Middleware(
            SessionMiddleware,
            secret_key=secret,
            session_cookie="siyu_inbox",
            max_age=config.session_hours * 3600,
            same_site="strict",
        )
    ]


class _Refused(Exception):
    def __init__(self, response: Response) -> None:
        self.response = response


def inbox_routes(
    runtime: Runtime,
    *,
    library: FlowLibrary | None = None,
    shutting_down: Callable[[], bool] = lambda: False,
) -> list[BaseRoute]:
    """The inbox pages, partials, SSE stream and JSON API."""
    config = runtime.config
    brand_zone = ZoneInfo(config.general.timezone)
    flows = library or load_flows(config.conversations.flows_dir or None, runtime.renderer)
    canned = sorted(
        p.name.removeprefix("canned_").removesuffix(".zh-CN.j2")
        for p in runtime.renderer.directory.glob("canned_*.zh-CN.j2")
    )

    def local(value: datetime | None) -> str:
        return value.astimezone(brand_zone).strftime("%m-%d %H:%M") if value else "-"

    _pages.filters["local"] = local
    live = LiveUpdates(runtime.db)

    # -- session helpers -----------------------------------------------------------------

    async def staff_of(request: Request, *, api: bool = False, manager: bool = False) -> StaffUser:
        user = await current_staff(runtime, request)
        if user is None:
            if api:
                raise _Refused(JSONResponse({"error": "log in first"}, status_code=401))
            raise _Refused(RedirectResponse("/inbox/login", status_code=303))
        if manager and user.role != "manager":
            raise _Refused(
                page(request, "inbox/forbidden.html", user, status=403)
                if not api
                else JSONResponse({"error": "managers only"}, status_code=403)
            )
        return user

    async def form_of(request: Request) -> dict[str, str]:
        form = await request.form()
        data = {k: v for k, v in form.items() if isinstance(v, str)}
        if not csrf_ok(request, data.get("csrf")):
            raise _Refused(HTMLResponse("CSRF token missing or wrong", status_code=403))
        return data

    def page(
        request: Request,
        name: str,
        user: StaffUser | None,
        status: int = 200,
        headers: dict[str, str] | None = None,
        **data,
    ):
        html = _pages.get_template(name).render(
            user=user,
            csrf=csrf_token(request),
            flash=request.session.pop("flash", None),
            **data,
        )
        return HTMLResponse(html, status_code=status, headers=headers)

    def guarded(fn):
        async def endpoint(request: Request) -> Response:
            try:
                return await fn(request)
            except _Refused as refused:
                return refused.response

        return endpoint

    def back(request: Request, url: str, flash: str | None = None) -> RedirectResponse:
        if flash:
            request.session["flash"] = flash
        return RedirectResponse(url, status_code=303)

    # -- data ------------------------------------------------------------------------------

    def queue_rows(session: Session, view: str, user: StaffUser) -> list[dict]:
        stmt = select(HandoffTicket, Customer).join(
            Customer, Customer.id == HandoffTicket.customer_id
        )
        if view == "flagged":
            stmt = stmt.where(HandoffTicket.status == "waiting")
        elif view == "mine":
            stmt = stmt.where(
                HandoffTicket.status == "claimed", HandoffTicket.owner == user.username
            )
        else:
            stmt = stmt.where(HandoffTicket.status.in_(OPEN_STATUSES))
        stmt = stmt.order_by(HandoffTicket.priority.desc(), HandoffTicket.created_at).limit(200)
        now = runtime.clock.now()
        return [
            {
                "id": t.id,
                "customer": c.display_name or f"#{c.id}",
                "reason": t.reason,
                "detail": t.detail,
                "priority": t.priority,
                "status": t.status,
                "owner": t.owner,
                "escalated": t.escalated_at is not None,
                "waited": int((now - t.created_at).total_seconds() // 60),
            }
            for t, c in session.execute(stmt)
        ]

    def queue_data(view: str, user: StaffUser) -> dict:
        with runtime.db.sessions() as session:
            return {"rows": queue_rows(session, view, user), "view": view}

    def conversation_data(ticket_id: int) -> dict | None:
        now = runtime.clock.now()
        with runtime.db.sessions() as session:
            ticket = session.get(HandoffTicket, ticket_id)
            if ticket is None:
                return None
            conv = session.get(Conversation, ticket.conversation_id)
            assert conv is not None
            profile = repos.customer_profile(session, conv.channel, conv.user_id, now)
            codes = customer_codes(session, conv.customer_id)
            return {
                "ticket": ticket,
                "conversation": conv,
                "profile": profile.as_dict() if profile else None,
                "state_json": json.dumps(conv.state or {}, ensure_ascii=False, indent=1),
                "history": history(session, conv),
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
                        "source": f"campaign #{c.campaign_id}" if c.campaign_id else d.name,
                        "expires_at": c.expires_at,
                        "redeemed": c.status == "redeemed",
                    }
                    for c, d in codes
                ],
                "coupon_choices": [(d.name, d.title) for d in config.coupons.definitions],
                "orders": orders_of(session, conv.customer_id),
                "staff": [s.username for s in list_staff(session) if s.active],
                "canned": canned,
                "nonce": uuid.uuid4().hex,
            }

    def history(session: Session, conv: Conversation) -> list[dict]:
        inbound = session.scalars(
            select(Interaction)
            .where(
                Interaction.customer_id == conv.customer_id,
                Interaction.channel == conv.channel,
                Interaction.chat_id == conv.chat_id,
            )
            .order_by(Interaction.id.desc())
            .limit(100)
        )
        outbound = session.scalars(
            select(OutboxMessage)
            .where(
                OutboxMessage.channel == conv.channel,
                OutboxMessage.chat_id == conv.chat_id,
                OutboxMessage.user_id == conv.user_id,
            )
            .order_by(OutboxMessage.id.desc())
            .limit(100)
        )
        items = [
            {"at": i.occurred_at, "who": "customer", "text": i.text or f"[{i.kind}]", "meta": ""}
            for i in inbound
        ] + [
            {
                "at": o.created_at,
                "who": "staff" if o.purpose == "staff" else "bot",
                "text": (o.payload or {}).get("text", ""),
                "meta": f"{o.purpose} · {o.status}",
            }
            for o in outbound
        ]
        return sorted(items, key=lambda m: m["at"])

    def orders_of(session: Session, customer_id: int) -> dict | None:
        try:
            from storage.orders import Order
        except ImportError:  # pragma: no cover - the orders issue not merged
            return None
        count, total = session.execute(
            select(func.count(Order.id), func.coalesce(func.sum(Order.amount_cents), 0)).where(
                Order.customer_id == customer_id
            )
        ).one()
        return {"count": count, "total": total / 100}

    # -- auth pages ------------------------------------------------------------------------

    async def login_page(request: Request) -> Response:
        return page(request, "inbox/login.html", None)

    async def login(request: Request) -> Response:
        data = await form_of(request)
        username, password = data.get("username", "").strip(), data.get("password", "")
        client_ip = request.client.host if request.client else "unknown"
        limits = config.handoff
        window = timedelta(minutes=limits.login_window_minutes)

        def check() -> StaffUser | datetime | None:
            """The user, or None for a wrong login, or when to retry if throttled."""
            now = runtime.clock.now()
            with runtime.db.transaction() as session:
                blocked = login_blocked_until(
                    session,
                    username,
                    client_ip,
                    now,
                    max_failures=limits.login_max_failures,
                    window=window,
                )
                if blocked is not None:  # refused before the password is even looked at
                    handoff.audit(
                        session,
                        username[:64] or "anonymous",
                        "login_throttled",
                        now,
                        username=username[:64],
                        client_ip=client_ip,
                        retry_at=blocked.isoformat(),
                    )
                    return blocked
                user = authenticate(session, username, password, now)
                if user is None:
                    record_login_failure(session, username, client_ip, now, window=window)
                else:
                    clear_login_failures(session, username)
                return user

        result = await runtime.db.run(check) if username and password else None
        if isinstance(result, datetime):
            wait = max(1, math.ceil((result - runtime.clock.now()).total_seconds()))
            return page(
                request,
                "inbox/login.html",
                None,
                status=429,
                headers={"Retry-After": str(wait)},
                throttled={"at": local(result), "minutes": math.ceil(wait / 60)},
            )
        user = result
        if user is None:
            return page(request, "inbox/login.html", None, status=401, error=True)
        request.session.clear()
        request.session["staff_id"] = user.id
        request.session["csrf"] = secrets.token_urlsafe(24)
        await runtime.db.run(_audit_simple, runtime, user.username, "login")
        return RedirectResponse("/inbox", status_code=303)

    async def logout(request: Request) -> Response:
        user = await staff_of(request)
        await form_of(request)
        await runtime.db.run(_audit_simple, runtime, user.username, "logout")
        request.session.clear()
        return RedirectResponse("/inbox/login", status_code=303)

    # -- queue and conversation pages ------------------------------------------------------

    def view_of(request: Request) -> str:
        view = request.query_params.get("view", "flagged")
        return view if view in VIEWS else "flagged"

    async def queue_page(request: Request) -> Response:
        user = await staff_of(request)
        data = await runtime.db.run(queue_data, view_of(request), user)
        return page(request, "inbox/queue.html", user, **data)

    async def queue_partial(request: Request) -> Response:
        user = await staff_of(request)
        data = await runtime.db.run(queue_data, view_of(request), user)
        return page(request, "inbox/_queue.html", user, **data)

    def ticket_id_of(request: Request) -> int:
        try:
            return int(request.path_params["ticket_id"])
        except ValueError:
            raise _Refused(HTMLResponse("bad conversation id", status_code=400)) from None

    async def conversation_page(request: Request) -> Response:
        user = await staff_of(request)
        data = await runtime.db.run(conversation_data, ticket_id_of(request))
        if data is None:
            return HTMLResponse("no such conversation", status_code=404)
        return page(request, "inbox/conversation.html", user, **data)

    async def history_partial(request: Request) -> Response:
        user = await staff_of(request)
        data = await runtime.db.run(conversation_data, ticket_id_of(request))
        if data is None:
            return HTMLResponse("no such conversation", status_code=404)
        return page(request, "inbox/_history.html", user, **data)

    async def stream(request: Request) -> Response:
        await staff_of(request, api=True)
        raw = request.query_params.get("ticket")
        ticket_id = int(raw) if raw and raw.isdigit() else None

        async def events() -> AsyncIterator[str]:
            sub = await live.subscribe(ticket_id)
            try:
                yield ": connected\n\n"
                while not shutting_down() and not await request.is_disconnected():
                    try:
                        await asyncio.wait_for(sub.changed.wait(), 0.5)
                    except TimeoutError:
                        continue
                    sub.changed.clear()
                    yield "event: changed\ndata: {}\n\n"
            finally:
                live.unsubscribe(sub)

        return StreamingResponse(
            events(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    # -- actions ---------------------------------------------------------------------------

    async def act(request: Request) -> Response:
        user = await staff_of(request)
        ticket_id = ticket_id_of(request)
        action = request.path_params["action"]
        data = await form_of(request)
        here = f"/inbox/c/{ticket_id}"
        now = runtime.clock.now()

        def run() -> str | None:
            with runtime.db.transaction() as session:
                if action == "claim":
                    if handoff.claim(session, ticket_id, user, now):
                        return "claimed"
                    owner = session.get(HandoffTicket, ticket_id).owner
                    return f"!already taken by {owner}" if owner else "!not waiting any more"
                if action == "reply":
                    text = data.get("text", "")
                    if not text.strip() and data.get("canned") in canned:
                        text = render_canned(session, ticket_id, data["canned"], user)
                    queued = handoff.reply(
                        session, ticket_id, user, text, data.get("nonce") or uuid.uuid4().hex, now
                    )
                    return "sent" if queued else "already sent"
                if action == "note":
                    handoff.add_note(session, ticket_id, user, data.get("text", ""), now)
                    return "note saved"
                if action == "transfer":
                    target = handoff.transfer(session, ticket_id, user, data.get("to", ""), now)
                    return f"transferred to {target.username}"
                if action == "coupon":
                    code = handoff.issue_coupon(
                        session, ticket_id, user,
                        coupon=data.get("coupon", ""), nonce=data.get("nonce") or uuid.uuid4().hex,
                        now=now, config=config,
                    )  # fmt: skip
                    return f"coupon {code} issued"
                if action == "release":
                    handoff.release(
                        session, ticket_id, user, now,
                        renderer=runtime.renderer, library=flows, config=config,
                    )  # fmt: skip
                    return "released to the bot"
                if action == "resolve":
                    handoff.resolve(session, ticket_id, user, now)
                    return "resolved"
                raise HandoffError(f"unknown action {action!r}", 404)

        try:
            outcome = await runtime.db.run(run)
        except HandoffError as exc:
            return back(request, here, f"!{exc}")
        runtime.worker.wake()
        live.poke()
        if action in ("release", "resolve", "transfer"):
            return back(request, "/inbox", outcome)
        return back(request, here, outcome)

    def render_canned(session: Session, ticket_id: int, name: str, user: StaffUser) -> str:
        ticket = session.get(HandoffTicket, ticket_id)
        customer = session.get(Customer, ticket.customer_id) if ticket else None
        if customer is None:
            raise HandoffError("no such conversation", 404)
        try:
            return runtime.renderer.render(
                f"canned_{name}", customer.locale, customer=customer, staff=user.display_name
            )
        except TemplateRenderError as exc:
            raise HandoffError(str(exc), 500) from exc

    async def redeem_code(request: Request) -> Response:
        """The web console's redemption: code, optional amount, optional conversation."""
        user = await staff_of(request)
        data = await form_of(request)
        raw_ticket = data.get("ticket", "")
        here = f"/inbox/c/{raw_ticket}" if raw_ticket.isdigit() else "/inbox"
        code = data.get("code", "").strip()
        if not code or len(code) > 64:
            return back(request, here, "!type the coupon code")
        try:
            amount = parse_amount(data.get("amount", ""))
        except ValueError:
            return back(request, here, "!the amount must be a number such as 35.00")

        def run():
            with runtime.db.transaction() as session:
                return handoff.redeem_coupon(
                    session, user, code, now=runtime.clock.now(), config=config,
                    amount_cents=amount, ticket_id=int(raw_ticket) if raw_ticket.isdigit() else None,
                )  # fmt: skip

        try:
            result = await runtime.db.run(run)
        except HandoffError as exc:
            return back(request, here, f"!{exc}")
        live.poke()
        return back(request, here, redemption_flash(result))

    # -- JSON API --------------------------------------------------------------------------

    async def api_queue(request: Request) -> Response:
        user = await staff_of(request, api=True)
        data = await runtime.db.run(queue_data, view_of(request), user)
        return JSONResponse({"view": data["view"], "tickets": data["rows"]})

    async def api_claim(request: Request) -> Response:
        user = await staff_of(request, api=True)
        if not csrf_ok(request, request.headers.get("x-csrf-token")):
            return JSONResponse({"error": "CSRF token missing or wrong"}, status_code=403)
        ticket_id = ticket_id_of(request)

        def run() -> tuple[bool, str | None]:
            with runtime.db.transaction() as session:
                won = handoff.claim(session, ticket_id, user, runtime.clock.now())
                ticket = session.get(HandoffTicket, ticket_id)
                return won, ticket.owner if ticket else None

        try:
            won, owner = await runtime.db.run(run)
        except HandoffError as exc:
            return JSONResponse({"error": str(exc)}, status_code=exc.status)
        live.poke()
        if not won:
            return JSONResponse(
                {"claimed": False, "error": f"already taken by {owner}", "owner": owner},
                status_code=409,
            )
        return JSONResponse({"claimed": True, "owner": owner})

    # -- manager pages ---------------------------------------------------------------------

    def manager_data() -> dict:
        with runtime.db.sessions() as session:
            conversations = session.execute(
                select(Conversation, Customer)
                .join(Customer, Customer.id == Conversation.customer_id)
                .order_by(Conversation.updated_at.desc())
                .limit(100)
            ).all()
            audit_rows = list(
                session.scalars(select(AuditEntry).order_by(AuditEntry.id.desc()).limit(200))
            )
            return {
                "conversations": [
                    {
                        "id": c.id,
                        "customer": cu.display_name or f"#{cu.id}",
                        "ref": f"{c.channel}:{c.chat_id}",
                        "flow": c.flow,
                        "step": c.step,
                        "handoff": c.handoff_status,
                        "owner": c.handoff_owner,
                        "updated_at": c.updated_at,
                    }
                    for c, cu in conversations
                ],
                "audit": audit_rows,
                "staff": list_staff(session),
            }

    async def manager_page(request: Request) -> Response:
        user = await staff_of(request, manager=True)
        return page(request, "inbox/manager.html", user, **(await runtime.db.run(manager_data)))

    async def manager_flag(request: Request) -> Response:
        user = await staff_of(request, manager=True)
        data = await form_of(request)
        try:
            conversation_id = int(data.get("conversation_id", ""))
        except ValueError:
            return back(request, "/inbox/manager", "!choose a conversation")

        def run() -> int:
            with runtime.db.transaction() as session:
                return handoff.manager_flag(
                    session, conversation_id, user, data.get("note", ""), runtime.clock.now()
                ).id

        try:
            ticket_id = await runtime.db.run(run)
        except HandoffError as exc:
            return back(request, "/inbox/manager", f"!{exc}")
        live.poke()
        return back(request, f"/inbox/c/{ticket_id}", "flagged for staff")

    return [
        Route("/inbox/login", guarded(login_page), methods=["GET"]),
        Route("/inbox/login", guarded(login), methods=["POST"]),
        Route("/inbox/logout", guarded(logout), methods=["POST"]),
        Route("/inbox", guarded(queue_page), methods=["GET"]),
        Route("/inbox/partials/queue", guarded(queue_partial), methods=["GET"]),
        Route("/inbox/c/{ticket_id}", guarded(conversation_page), methods=["GET"]),
        Route("/inbox/partials/c/{ticket_id}", guarded(history_partial), methods=["GET"]),
        Route("/inbox/c/{ticket_id}/{action}", guarded(act), methods=["POST"]),
        Route("/inbox/stream", guarded(stream), methods=["GET"]),
        Route("/inbox/api/queue", guarded(api_queue), methods=["GET"]),
        Route("/inbox/api/tickets/{ticket_id}/claim", guarded(api_claim), methods=["POST"]),
        Route("/inbox/redeem", guarded(redeem_code), methods=["POST"]),
        Route("/inbox/manager", guarded(manager_page), methods=["GET"]),
        Route("/inbox/manager/flag", guarded(manager_flag), methods=["POST"]),
    ]


def _audit_simple(runtime: Runtime, actor: str, action: str) -> None:
    with runtime.db.transaction() as session:
        handoff.audit(session, actor, action, runtime.clock.now())


def parse_amount(text: str) -> int | None:
    """``"35.00"`` → 3500 cents; empty → None; raises ValueError for anything else."""
    text = text.strip()
    if not text:
        return None
    try:
        amount = Decimal(text)
    except InvalidOperation:
        raise ValueError(text) from None
    if not amount.is_finite() or amount < 0:
        raise ValueError(text)
    return int(amount * 100)


def redemption_flash(result: Redemption) -> str:
    """One line for the staff member at the console ("!" marks a refusal)."""
    if result.ok:
        off = f", {result.discount_cents / 100:.2f} off" if result.discount_cents else ""
        return f"redeemed {format_code(result.code)} ({result.title}{off})"
    refusals = {
        "unknown": "no such code",
        "already_redeemed": "this code was already redeemed",
        "expired": "this code has expired",
        "foreign": "this code belongs to another customer",
        "below_min_spend": f"the amount is below the minimum spend "
        f"({result.min_spend_cents / 100:.2f})",
    }
    return "!" + refusals[result.reason]


# -- the session, shared with the manager console (bot/web/console) -------------------------


def csrf_token(request: Request) -> str:
    """The session's CSRF token (made on first use); every form and POST carries it."""
    token = request.session.get("csrf")
    if not token:
        token = request.session["csrf"] = secrets.token_urlsafe(24)
    return token


def csrf_ok(request: Request, given: str | None) -> bool:
    """Whether ``given`` is this session's CSRF token."""
    expected = request.session.get("csrf")
    return bool(expected and given and secrets.compare_digest(expected, given))


def _load_staff(runtime: Runtime, staff_id: int) -> StaffUser | None:
    with runtime.db.sessions() as session:
        user = session.get(StaffUser, staff_id)
        return user if user is not None and user.active else None


async def current_staff(runtime: Runtime, request: Request) -> StaffUser | None:
    """The active staff account logged in on this request's session, or None."""
    staff_id = request.session.get("staff_id")
    if not isinstance(staff_id, int):
        return None
    return await runtime.db.run(_load_staff, runtime, staff_id)
