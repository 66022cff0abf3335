"""What staff do to a conversation: claim, reply, note, transfer, coupon, release, resolve,
and redeem a coupon at the counter. Every action is one call into
bot/conversations/handoff.py (the same functions the Telegram relay group uses)."""

from __future__ import annotations

import uuid

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bot.conversations import handoff
from bot.conversations.handoff import HandoffError
from bot.core.amounts import AmountError, parse_amount
from bot.core.i18n import normalize_locale, t
from bot.core.templating import TemplateRenderError
from bot.marketing.coupons import Redemption, format_code
from bot.web.inbox.auth import csrf_ok, form_of, staff_of
from bot.web.inbox.common import back, state_of
from bot.web.inbox.conversation import ticket_id_of
from storage.handoff import HandoffTicket
from storage.models import Customer

__all__ = ["act", "api_claim", "redeem_code", "redemption_flash"]

ACTIONS = ("claim", "reply", "note", "transfer", "coupon", "release", "resolve")


async def act(request: Request) -> Response:
    """``POST /inbox/c/{id}/{action}``: one staff action; the answer is a flash."""
    state = state_of(request)
    runtime, config = state.runtime, state.runtime.config
    user = await staff_of(request)
    locale = normalize_locale(user.locale)
    ticket_id = ticket_id_of(request, locale)
    action = request.path_params["action"]
    data = await form_of(request, user)
    here = f"/inbox/c/{ticket_id}"
    now = runtime.clock.now()

    def run() -> str:
        with runtime.db.transaction() as session:
            if action == "claim":
                if handoff.claim(session, ticket_id, user, now):
                    return t("inbox.flash.claimed", locale)
                owner = session.get_one(HandoffTicket, ticket_id).owner
                if owner:
                    return "!" + t("inbox.flash.taken", locale, owner=owner)
                return "!" + t("inbox.flash.not_waiting", locale)
            if action == "reply":
                text = data.get("text", "")
                if not text.strip() and data.get("canned"):
                    text = _render_canned(state, session, ticket_id, data["canned"], user)
                queued = handoff.reply(
                    session, ticket_id, user, text, data.get("nonce") or uuid.uuid4().hex, now
                )
                return t("inbox.flash.sent" if queued else "inbox.flash.already_sent", locale)
            if action == "note":
                handoff.add_note(session, ticket_id, user, data.get("text", ""), now)
                return t("inbox.flash.note_saved", locale)
            if action == "transfer":
                target = handoff.transfer(session, ticket_id, user, data.get("to", ""), now)
                return t("inbox.flash.transferred", locale, name=target.username)
            if action == "coupon":
                code = handoff.issue_coupon(
                    session, ticket_id, user,
                    coupon=data.get("coupon", ""), nonce=data.get("nonce") or uuid.uuid4().hex,
                    now=now, config=config, renderer=runtime.renderer,
                    replace_offer=data.get("replace_offer") == "yes",
                )  # fmt: skip
                return t("inbox.flash.coupon_issued", locale, code=code)
            if action == "release":
                handoff.release(
                    session, ticket_id, user, now,
                    renderer=runtime.renderer, library=state.flows, config=config,
                )  # fmt: skip
                return t("inbox.flash.released", locale)
            if action == "resolve":
                handoff.resolve(
                    session, ticket_id, user, now,
                    confirmed=data.get("confirm") == "yes", renderer=runtime.renderer,
                )  # fmt: skip
                return t("inbox.flash.resolved", locale)
            raise HandoffError("handoff.error.unknown_action", 404, action=action[:32])

    try:
        outcome = await runtime.db.run(run)
    except HandoffError as exc:
        return back(request, here, "!" + exc.text(locale))
    runtime.worker.wake()
    state.live.poke()
    if action in ("release", "resolve", "transfer"):
        return back(request, "/inbox", outcome)
    return back(request, here, outcome)


def _render_canned(state, session, ticket_id: int, name: str, user) -> str:
    if name not in state.canned:
        raise HandoffError("handoff.error.canned_unknown", 400, name=name[:40])
    ticket = session.get(HandoffTicket, ticket_id)
    customer = session.get(Customer, ticket.customer_id) if ticket else None
    if customer is None:
        raise HandoffError("handoff.error.no_ticket", 404, ticket_id=ticket_id)
    try:
        return state.runtime.renderer.render(
            f"canned_{name}", customer.locale, customer=customer, staff=user.display_name
        )
    except TemplateRenderError as exc:
        raise HandoffError("handoff.error.template", 500, problem=str(exc)[:200]) from exc


async def redeem_code(request: Request) -> Response:
    """The counter's redemption: code, amount (asked for when a minimum spend applies),
    optional conversation."""
    state = state_of(request)
    runtime = state.runtime
    user = await staff_of(request)
    locale = normalize_locale(user.locale)
    data = await form_of(request, user)
    raw_ticket = data.get("ticket", "")
    ticket_id = (
        int(raw_ticket)
        if raw_ticket.isascii() and raw_ticket.isdigit() and len(raw_ticket) <= 15
        else None
    )
    here = f"/inbox/c/{ticket_id}" if ticket_id else "/inbox"
    code = data.get("code", "").strip()
    if not code or len(code) > 64:
        return back(request, here, "!" + t("inbox.redeem.need_code", locale))
    raw_amount = data.get("amount", "")
    try:
        amount = parse_amount(raw_amount) if raw_amount.strip() else None
    except AmountError as exc:
        return back(
            request, here, "!" + t("inbox.redeem.bad_amount", locale) + " " + exc.message(locale)
        )

    def run() -> Redemption:
        with runtime.db.transaction() as session:
            return handoff.redeem_coupon(
                session, user, code, now=runtime.clock.now(), config=runtime.config,
                amount_cents=amount, ticket_id=ticket_id,
            )  # fmt: skip

    try:
        result = await runtime.db.run(run)
    except HandoffError as exc:
        return back(request, here, "!" + exc.text(locale))
    state.live.poke()
    return back(request, here, redemption_flash(result, locale))


async def api_claim(request: Request) -> Response:
    """``POST /inbox/api/tickets/{id}/claim`` (header ``X-CSRF-Token``): 200 won, 409 taken."""
    state = state_of(request)
    runtime = state.runtime
    user = await staff_of(request, api=True)
    locale = normalize_locale(user.locale)
    if not csrf_ok(request, request.headers.get("x-csrf-token")):
        return JSONResponse({"error": t("inbox.csrf", locale)}, status_code=403)
    ticket_id = ticket_id_of(request, locale)

    def run() -> tuple[bool, str | None]:
        with runtime.db.transaction() as session:
            won = handoff.claim(session, ticket_id, user, runtime.clock.now())
            ticket = session.get(HandoffTicket, ticket_id)
            return won, ticket.owner if ticket else None

    try:
        won, owner = await runtime.db.run(run)
    except HandoffError as exc:
        return JSONResponse({"error": exc.text(locale)}, status_code=exc.status)
    state.live.poke()
    if not won:
        return JSONResponse(
            {
                "claimed": False,
                "error": t("inbox.flash.taken", locale, owner=owner),
                "owner": owner,
            },
            status_code=409,
        )
    return JSONResponse({"claimed": True, "owner": owner})


def redemption_flash(result: Redemption, locale: str) -> str:
    """One line for the staff member at the counter (``!`` marks a refusal)."""
    code = format_code(result.code) if result.code else ""
    if result.ok:
        if result.discount_cents:
            off = f"{result.discount_cents / 100:.2f}"
            return t("inbox.redeem.ok_off", locale, code=code, title=result.title, off=off)
        return t("inbox.redeem.ok", locale, code=code, title=result.title)
    return "!" + t(
        f"inbox.redeem.{result.reason}", locale, min=f"{result.min_spend_cents / 100:.2f}"
    )
