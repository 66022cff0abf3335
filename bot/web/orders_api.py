"""``POST /api/orders``: shops push orders (JSON) with the API key from ``[api] key``.

Authenticate with ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``. The body is one
order object or ``{"orders": [...]}`` (at most MAX_ORDERS), with the columns of
bot/customers/orders.py. Answers: 200 all taken (new or already known: idempotent by order_id);
422 some rejected — each with its index and reason — while the good ones are stored;
400 not JSON / wrong shape; 401 bad key; 413 too large; 404 while no key is configured.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from bot.customers.orders import OrderInputError, RowError, store_orders, validate_order
from bot.customers.rfm import refresh_customers
from bot.web.api import ApiRequestError, error_response, read_json

if TYPE_CHECKING:
    from bot.app.runtime import Runtime

__all__ = ["MAX_ORDERS", "orders_routes"]

MAX_ORDERS = 1000


def orders_routes(runtime: Runtime) -> list[BaseRoute]:
    """The orders API route (answers 404 while ``[api] key`` is empty)."""
    config = runtime.config

    async def post_orders(request: Request) -> JSONResponse:
        try:
            data = await read_json(request, config.api.key)
        except ApiRequestError as exc:
            return exc.response()
        if isinstance(data, dict) and "orders" in data:
            items = data["orders"]
            if not isinstance(items, list):
                return error_response(400, "'orders' must be a list of order objects")
        elif isinstance(data, dict):
            items = [data]
        else:
            return error_response(400, 'expected an order object or {"orders": [...]}')
        if not items:
            return error_response(400, "'orders' is empty")
        if len(items) > MAX_ORDERS:
            return error_response(413, f"at most {MAX_ORDERS} orders per call, got {len(items)}")
        now = runtime.clock.now()
        tz = ZoneInfo(config.general.timezone)
        good, errors = [], []
        seen: dict[str, int] = {}
        for index, item in enumerate(items):
            try:
                order = validate_order(item, tz=tz, now=now, default_currency=config.rfm.currency)
            except OrderInputError as exc:
                oid = item.get("order_id", "") if isinstance(item, dict) else ""
                errors.append(RowError(index, str(oid), str(exc)))
                continue
            if order.order_id in seen:
                errors.append(
                    RowError(
                        index,
                        order.order_id,
                        f"duplicate order id (first at {seen[order.order_id]})",
                    )
                )
                continue
            seen[order.order_id] = index
            good.append((index, order))

        def store():
            with runtime.db.transaction() as session:
                report = store_orders(session, good, source="api", now=now)
                refresh_customers(session, config, now, report.customers)
                return report

        report = await runtime.db.run(store)
        rejected = sorted(errors + report.errors, key=lambda e: e.where)
        return JSONResponse(
            {
                "inserted": report.inserted,
                "duplicates": report.duplicates,
                "rejected": [
                    {"index": e.where, "order_id": e.order_id, "error": e.reason} for e in rejected
                ],
            },
            status_code=422 if rejected else 200,
        )

    return [Route("/api/orders", post_orders, methods=["POST"])]
