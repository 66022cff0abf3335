"""``POST /api/customers``: create or update customers with their profile attributes.

Same key as ``POST /api/orders`` (``Authorization: Bearer <key>`` or ``X-API-Key``). The
body is one customer object or ``{"customers": [...]}`` (at most MAX_CUSTOMERS). A
customer object names who it is about with ``"customer": "<channel>:<user id>"`` (or
``"channel"`` and ``"user_id"``) and/or ``"phone"``, and carries any of the attributes of
bot/customers/attributes.py (``name``, ``phone``, ``birthday``, ``city``, ``locale``,
``timezone``); ``null`` or ``""`` clears ``name``, ``phone``, ``birthday`` or ``city``.

The customer is found by identity, else by phone, else created (upsert); sending the same
object again changes nothing (idempotent). Answers: 200 all applied; 422 some rejected —
each with its index and reason — while the good ones are applied; 400 not JSON / wrong
shape; 401 bad key; 413 too large; 404 while no key is configured.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from bot.customers.attributes import (
    ProfileConflict,
    ProfileInputError,
    parse_identity,
    upsert_profile,
    validate_attributes,
)
from bot.web.api import ApiRequestError, error_response, read_json

if TYPE_CHECKING:
    from bot.app.runtime import Runtime

__all__ = ["MAX_CUSTOMERS", "customers_routes"]

MAX_CUSTOMERS = 1000


def _who(item: dict) -> tuple[str, str] | None:
    """The identity an item names (``customer`` or ``channel`` + ``user_id``), if any."""
    has_pair = "channel" in item or "user_id" in item
    if "customer" in item and has_pair:
        raise ProfileInputError("give 'customer' or 'channel' + 'user_id', not both")
    if has_pair:
        channel, user = item.get("channel"), item.get("user_id")
        if isinstance(user, int) and not isinstance(user, bool):
            user = str(user)
        if not isinstance(channel, str) or not isinstance(user, str):
            raise ProfileInputError("'channel' and 'user_id' must both be given as text")
        return parse_identity(f"{channel}:{user}")
    raw = item.get("customer")
    if raw is None:
        return None
    if not isinstance(raw, str):
        raise ProfileInputError("'customer' must be text such as 'telegram:4242'")
    return parse_identity(raw)


def customers_routes(runtime: Runtime) -> list[BaseRoute]:
    """The customers API route (answers 404 while ``[api] key`` is empty)."""
    config = runtime.config

    async def post_customers(request: Request) -> JSONResponse:
        try:
            data = await read_json(request, config.api.key)
        except ApiRequestError as exc:
            return exc.response()
        if isinstance(data, dict) and "customers" in data:
            if len(data) > 1:
                return error_response(400, "next to 'customers' the body takes no other keys")
            items = data["customers"]
            if not isinstance(items, list):
                return error_response(400, "'customers' must be a list of customer objects")
        elif isinstance(data, dict):
            items = [data]
        else:
            return error_response(400, 'expected a customer object or {"customers": [...]}')
        if not items:
            return error_response(400, "'customers' is empty")
        if len(items) > MAX_CUSTOMERS:
            return error_response(
                413, f"at most {MAX_CUSTOMERS} customers per call, got {len(items)}"
            )
        now = runtime.clock.now()
        today = now.astimezone(ZoneInfo(config.general.timezone)).date()
        checked: list[tuple[int, tuple[str, str] | None, dict]] = []
        rejected: list[dict] = []
        for index, item in enumerate(items):
            try:
                if not isinstance(item, dict):
                    raise ProfileInputError("a customer must be a JSON object")
                identity = _who(item)
                attrs = validate_attributes(
                    {k: v for k, v in item.items() if k not in ("customer", "channel", "user_id")},
                    today=today,
                )
                if identity is None and not attrs.get("phone"):
                    raise ProfileInputError(
                        "give 'customer' (<channel>:<user id>), 'channel' + 'user_id', or 'phone'"
                    )
            except ProfileInputError as exc:
                rejected.append({"index": index, "error": str(exc)})
                continue
            checked.append((index, identity, attrs))

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
                        conflicts.append({"index": index, "error": str(exc)})
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
        rejected = sorted(rejected + conflicts, key=lambda r: r["index"])
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
