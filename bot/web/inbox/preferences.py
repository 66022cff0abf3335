"""A staff member's own settings: the language of the inbox (zh-CN or en)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from bot.core.i18n import LOCALES, t
from bot.web.inbox.auth import form_of, staff_of
from bot.web.inbox.common import back, state_of
from storage.handoff import StaffUser

__all__ = ["set_locale"]


def save_locale(runtime, staff_id: int, locale: str) -> None:
    with runtime.db.transaction() as session:
        user = session.get(StaffUser, staff_id)
        if user is not None:
            user.locale = locale


async def set_locale(request: Request) -> Response:
    """``POST /inbox/locale`` (``locale`` = zh-CN | en): the inbox speaks it from now on."""
    runtime = state_of(request).runtime
    user = await staff_of(request)
    data = await form_of(request, user)
    locale = data.get("locale", "")
    if locale not in LOCALES:
        return back(request, "/inbox", "!" + t("inbox.flash.language", user.locale))
    await runtime.db.run(save_locale, runtime, user.id, locale)
    target = data.get("next", "/inbox")
    if not target.startswith("/inbox") or "//" in target:
        target = "/inbox"
    return back(request, target, t("inbox.flash.language", locale))
