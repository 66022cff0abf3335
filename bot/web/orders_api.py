"""``POST /api/orders``: shops push orders (JSON) with the API key from ``[api] key``.

Authenticate with ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``. The body is one
order object or ``{"orders": [...]}`` (at most MAX_ORDERS), with the columns of
bot/customers/orders.py. Answers: 200 all taken (new or already known: idempotent by order_id);
422 some rejected — each with its index, a stable ``code`` and the reason (``error``) in the
reader's locale (``Accept-Language``) — while the good ones are stored;
400 not JSON / wrong shape; 401 bad key; 413 too large; 404 while no key is configured.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from bot.customers.intake import IntakeError
from bot.customers.orders import LAYOUT, parse_json, store_orders
from bot.customers.rfm import refresh_customers
from bot.measures.referrals import settle_first_orders
from bot.web.api import ApiRequestError, error_response, read_json, request_locale

if TYPE_CHECKING:
    from bot.app.runtime import Runtime

__all__ = ["MAX_ORDERS", "orders_routes"]

MAX_ORDERS = LAYOUT.max_items


def orders_routes(runtime: Runtime) -> list[BaseRoute]:
    """The orders API route (answers 404 while ``[api] key`` is empty)."""
    config = runtime.config

    async def post_orders(request: Request) -> JSONResponse:
        try:
            data = await read_json(request, config.api.key)
        except ApiRequestError as exc:
            return exc.response()
        now = runtime.clock.now()
        try:
            good, errors = parse_json(
                data,
                tz=ZoneInfo(config.general.timezone),
                now=now,
                default_currency=config.rfm.currency,
            )
        except IntakeError as exc:
            return error_response(exc.status, exc.text(request_locale(request)), exc.code)

        def store():
            with runtime.db.transaction() as session:
                report = store_orders(session, good, source="api", now=now)
                refresh_customers(session, config, now, report.customers)
                settle_first_orders(session, config=config, renderer=runtime.renderer, now=now)
                return report

        report = await runtime.db.run(store)
        rejected = sorted(errors + report.errors, key=lambda e: e.where)
        locale = request_locale(request)
        return JSONResponse(
            {
                "inserted": report.inserted,
                "duplicates": report.duplicates,
                "rejected": [
                    {"index": e.where, "order_id": e.key, "code": e.code, "error": e.text(locale)}
                    for e in rejected
                ],
            },
            status_code=422 if rejected else 200,
        )

    return [Route("/api/orders", post_orders, methods=["POST"])]
