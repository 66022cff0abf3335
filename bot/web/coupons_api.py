"""``POST /api/coupons/redeem``: a till or shop system redeems a coupon code.

Authenticate like the orders API (``Authorization: Bearer <key>`` or ``X-API-Key``, the
``[api] key``). Body: ``{"code": "ABCD-2345-WXYZ", "amount": "35.00", "customer":
"telegram:4242", "by": "store-12"}`` (only ``code`` is required; ``customer`` makes a code
of someone else ``foreign``). Answers: 200 redeemed; 404 unknown code; 409 already
redeemed; 410 expired; 403 foreign; 422 below the minimum spend; 400 bad body; 401 bad
key; 404 while no key is configured. Every answer says why in ``reason``/``error``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from bot.core.amounts import AmountError, parse_amount
from bot.marketing.coupons import Redemption, format_code, redeem
from bot.web.api import ApiRequestError, error_response, read_json
from storage import repos

if TYPE_CHECKING:
    from bot.app.runtime import Runtime

__all__ = ["coupon_routes"]

STATUS = {
    "redeemed": 200,
    "unknown": 404,
    "already_redeemed": 409,
    "expired": 410,
    "foreign": 403,
    "below_min_spend": 422,
    "demo": 403,
    "amount_required": 422,
}
MESSAGES = {
    "redeemed": "redeemed",
    "unknown": "no such code",
    "already_redeemed": "this code was already redeemed",
    "expired": "this code has expired",
    "foreign": "this code belongs to another customer",
    "below_min_spend": "the amount is below the coupon's minimum spend",
    "demo": "this is a sandbox demo code; it is not valid for real orders",
    "amount_required": "this coupon has a minimum spend: send the order 'amount'",
}


def _answer(result: Redemption) -> JSONResponse:
    body = {
        "ok": result.ok,
        "reason": result.reason,
        "message": MESSAGES[result.reason],
        "code": format_code(result.code) if result.code else "",
    }
    if result.reason != "unknown":
        body["title"] = result.title
        body["expires_at"] = result.expires_at.isoformat() if result.expires_at else None
    if result.redeemed_at is not None:
        body["redeemed_at"] = result.redeemed_at.isoformat()
    if result.reason in ("below_min_spend", "amount_required"):
        body["min_spend"] = f"{result.min_spend_cents / 100:.2f}"
    if result.ok and result.discount_cents is not None:
        body["discount"] = f"{result.discount_cents / 100:.2f}"
    return JSONResponse(body, status_code=STATUS[result.reason])


def coupon_routes(runtime: Runtime) -> list[BaseRoute]:
    """The coupon redemption route (404 while ``[api] key`` is empty)."""
    config = runtime.config

    async def post_redeem(request: Request) -> JSONResponse:
        try:
            data = await read_json(request, config.api.key)
        except ApiRequestError as exc:
            return exc.response()
        if not isinstance(data, dict):
            return error_response(400, "the body must be a JSON object with 'code'")
        code = data.get("code")
        if not isinstance(code, str) or not code.strip() or len(code) > 64:
            return error_response(400, "'code' is required (a string)")
        amount_cents = None
        if data.get("amount") is not None:
            try:
                amount_cents = parse_amount(data["amount"])
            except AmountError as exc:
                return error_response(400, str(exc))
        customer = data.get("customer")
        if customer is not None and (not isinstance(customer, str) or ":" not in customer):
            return error_response(400, "'customer' must be '<channel>:<user id>'")
        by = data.get("by") or "api"
        if not isinstance(by, str):
            return error_response(400, "'by' must be a string")

        def work() -> Redemption | None:
            with runtime.db.transaction() as session:
                customer_id = None
                if customer:
                    channel, _, user = customer.partition(":")
                    identity = repos.find_identity(session, channel, user)
                    if identity is None:
                        return None
                    customer_id = identity.customer_id
                return redeem(
                    session,
                    code,
                    now=runtime.clock.now(),
                    by=f"api:{by}"[:128],
                    config=config,
                    customer_id=customer_id,
                    amount_cents=amount_cents,
                )

        result = await runtime.db.run(work)
        if result is None:
            return error_response(404, f"no customer {customer!r}")
        return _answer(result)

    return [Route("/api/coupons/redeem", post_redeem, methods=["POST"])]
