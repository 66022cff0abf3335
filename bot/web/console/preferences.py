"""The staff member's own console settings: the language of every page."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from bot.conversations.staff import set_locale as store_locale
from bot.core.i18n import LOCALES
from bot.web.console.common import back, endpoint, form_of, manager_of, run, runtime_of

__all__ = ["set_locale"]


@endpoint
async def set_locale(request: Request) -> Response:
    user = await manager_of(request)
    data = await form_of(request, user)
    locale = data.get("locale", "")
    target = data.get("next", "")
    if not target.startswith("/console") or "//" in target:
        target = "/console"
    if locale not in LOCALES:
        return back(request, target)
    runtime = runtime_of(request)

    def save() -> None:
        with runtime.db.transaction() as session:
            store_locale(session, user.id, locale)

    await run(request, save)
    return back(request, target)
