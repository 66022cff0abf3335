"""``POST /api/customers``: create or update customers with their profile attributes.

Same key as ``POST /api/orders`` (``Authorization: Bearer <key>`` or ``X-API-Key``). The
body is one customer object or ``{"customers": [...]}`` (at most MAX_CUSTOMERS). A
customer object names who it is about with ``"customer": "<channel>:<user id>"`` (or
``"channel"`` and ``"user_id"``) and/or ``"phone"``, and carries any of the attributes of
bot/customers/attributes.py (``name``, ``phone``, ``birthday``, ``city``, ``locale``,
``timezone``); ``null`` or ``""`` clears ``name``, ``phone``, ``birthday`` or ``city``.

The customer is found by identity, else by phone, else created (upsert); sending the same
object again changes nothing (idempotent). Answers: 200 all applied; 422 some rejected —
each with its index, a stable ``code`` and the reason (``error``) in the reader's locale
(``Accept-Language``) — while the good ones are applied; 400 not JSON / wrong
shape; 401 bad key; 413 too large; 404 while no key is configured.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from bot.customers.attributes import ProfileConflict, upsert_profile
from bot.customers.import_customers import LAYOUT, parse_json
from bot.customers.intake import IntakeError, RowError
from bot.web.api import ApiRequestError, error_response, read_json, request_locale

if TYPE_CHECKING:
    from bot.app.runtime import Runtime

__all__ = ["MAX_CUSTOMERS", "customers_routes"]

MAX_CUSTOMERS = LAYOUT.max_items


def _rejected(e: RowError, locale: str) -> dict:
    return {"index": e.where, "code": e.code, "error": e.text(locale)}


def customers_routes(runtime: Runtime) -> list[BaseRoute]:
    """The customers API route (answers 404 while ``[api] key`` is empty)."""
    config = runtime.config

    async def post_customers(request: Request) -> JSONResponse:
        try:
            data = await read_json(request, config.api.key)
        except ApiRequestError as exc:
            return exc.response()
        now = runtime.clock.now()
        today = now.astimezone(ZoneInfo(config.general.timezone)).date()
        locale = request_locale(request)
        try:
            found = parse_json(data, today=today)
        except IntakeError as exc:
            return error_response(exc.status, exc.text(locale), exc.code)
        checked = [(index, identity, attrs) for index, (identity, attrs) in found.good]
        rejected = [_rejected(e, locale) for e in found.errors]

        def store() -> tuple[list[dict], list[dict]]:
            done, conflicts = [], []
            with runtime.db.transaction() as session:
                for index, identity, attrs in checked:
                    try:
                        result = upsert_profile(
                            session,
                            identity=identity,
                            attrs=attrs,
                            now=now,
                            default_locale=config.general.locale,
                            default_timezone=config.general.timezone,
                        )
                    except ProfileConflict as exc:
                        conflicts.append(_rejected(RowError.of(index, "", exc), locale))
                        continue
                    done.append(
                        {
                            "index": index,
                            "customer_id": result.customer_id,
                            "created": result.created,
                            "matched_by": result.matched_by,
                            "changed": list(result.changed),
                        }
                    )
            return done, conflicts

        done, conflicts = await runtime.db.run(store)
        rejected = sorted(rejected + conflicts, key=lambda r: int(str(r["index"])))
        return JSONResponse(
            {
                "created": sum(1 for d in done if d["created"]),
                "updated": sum(1 for d in done if not d["created"] and d["changed"]),
                "unchanged": sum(1 for d in done if not d["created"] and not d["changed"]),
                "customers": done,
                "rejected": rejected,
            },
            status_code=422 if rejected else 200,
        )

    return [Route("/api/customers", post_customers, methods=["POST"])]
