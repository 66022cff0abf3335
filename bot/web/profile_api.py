"""``GET /api/customers/{channel}/{user_id}``: one customer's profile, for the operator only.

Answered only with the API key (``Authorization: Bearer <key>`` or ``X-API-Key``) or a
*manager's* inbox session: 401 without either, 403 for a staff (non-manager) session.
What it returns never carries a secret: delivery and handler errors show a redacted
reason (no URLs, no query strings, none of the configured secrets), and coupon codes are
shown in full to managers only (the API key sees the last four characters).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from bot.app.config import Config
from bot.core.i18n import t
from bot.web.api import ApiRequestError, check_api_key, check_text, error_response, request_locale
from bot.web.sessions import session_staff
from storage import repos

if TYPE_CHECKING:
    from bot.app.runtime import Runtime

__all__ = ["profile_routes", "redacted_reason"]

MAX_ID = 128
MAX_REASON = 160
_URL = re.compile(r"\b(?:https?|wss?)://\S+", re.IGNORECASE)
_ASSIGNMENT = re.compile(
    r"\b(secret|token|access_token|key|password|passwd|signature|sig|auth\w*)"
    r"(\s*[=:]\s*)\S+",
    re.IGNORECASE,
)
_TELEGRAM_TOKEN = re.compile(r"\b\d{5,}:[A-Za-z0-9_-]{20,}\b")


def _secrets(config: Config) -> list[str]:
    values = [
        config.api.key,
        config.handoff.secret_key,
        config.telegram.token,
        config.telegram.webhook_secret,
        config.wechat.app_secret,
        config.wechat.token,
        config.wechat.encoding_aes_key,
        config.wecom.secret,
        config.wecom.token,
        config.wecom.encoding_aes_key,
    ]
    return sorted({v for v in values if isinstance(v, str) and len(v) >= 4}, key=len, reverse=True)


def redacted_reason(text: str | None, config: Config) -> str | None:
    """An error as people may read it: URLs, ``secret=...`` and known secrets replaced."""
    if not text:
        return text
    for secret in _secrets(config):
        text = text.replace(secret, "[secret]")
    text = _URL.sub("[url]", text)
    text = _TELEGRAM_TOKEN.sub("[secret]", text)
    text = _ASSIGNMENT.sub(lambda m: f"{m.group(1)}{m.group(2)}[secret]", text)
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 1] + "…"


def _mask_code(code: str) -> str:
    return "•" * max(0, len(code) - 4) + code[-4:]


def profile_routes(runtime: Runtime) -> list[BaseRoute]:
    """The customer profile route (API key or manager session)."""
    config = runtime.config

    async def who(request: Request) -> str | JSONResponse:
        locale = request_locale(request)
        if config.api.key and check_api_key(request, config.api.key):
            return "api"
        staff = await session_staff(runtime, request)
        if staff is None:
            return error_response(401, t("websec.customer_data_login", locale), "login_required")
        if staff.role != "manager":
            return error_response(403, t("websec.managers_only", locale), "managers_only")
        return "manager"

    async def profile(request: Request) -> JSONResponse:
        caller = await who(request)
        if isinstance(caller, JSONResponse):
            return caller
        locale = request_locale(request)
        channel, user_id = request.path_params["channel"], request.path_params["user_id"]
        for name, value in (("channel", channel), ("user_id", user_id)):
            try:
                check_text(value, name, locale)
            except ApiRequestError as exc:
                return exc.response()
            if len(value) > MAX_ID:
                message = t("websec.bad_id", locale, name=name, limit=MAX_ID)
                return error_response(400, message, "bad_id")

        def load() -> dict | None:
            with runtime.db.sessions() as session:
                found = repos.customer_profile(session, channel, user_id, runtime.clock.now())
                return found.as_dict() if found else None

        data = await runtime.db.run(load)
        if data is None:
            return error_response(
                404, t("websec.no_customer", locale, channel=channel, user=user_id), "not_found"
            )
        data["role"] = "manager" if f"{channel}:{user_id}" in config.roles.managers else "customer"
        for row in data.get("outbox", []):
            row["last_error"] = redacted_reason(row.get("last_error"), config)
        for row in data.get("interactions", []):
            row["error"] = redacted_reason(row.get("error"), config)
        for identity in data.get("identities", []):
            identity["unreachable_reason"] = redacted_reason(
                identity.get("unreachable_reason"), config
            )
        if caller != "manager":
            for coupon in data.get("coupons", []):
                coupon["code"] = _mask_code(coupon.get("code") or "")
        return JSONResponse(data, headers={"Cache-Control": "no-store"})

    return [Route("/api/customers/{channel}/{user_id}", profile, methods=["GET"])]
