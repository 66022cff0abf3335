"""What every inbox endpoint shares: the inbox's state on the app, pages, flashes, refusals.

Endpoints are module-level functions; they find the runtime, the flow library, the canned
replies and the live-update poller on ``request.app.state.inbox`` (an :class:`InboxState`,
installed by :func:`bot.web.inbox.install_inbox`). Every text is read through the catalogue
(templates/i18n/inbox.toml, handoff.toml) in the staff member's locale.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from bot.conversations.flows import FlowLibrary
from bot.core.i18n import normalize_locale, t
from bot.core.templating import TEMPLATES_DIR
from bot.web.inbox_live import LiveUpdates
from storage.handoff import StaffUser

if TYPE_CHECKING:
    from bot.app.runtime import Runtime

__all__ = [
    "InboxState",
    "Refused",
    "back",
    "csrf_token",
    "guarded",
    "locale_of",
    "page",
    "state_of",
]

pages = jinja2.Environment(
    loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR / "web")), autoescape=True
)


@dataclass
class InboxState:
    """The inbox's share of the process: runtime, flows, canned replies, live updates."""

    runtime: Runtime
    flows: FlowLibrary
    canned: list[str]
    live: LiveUpdates
    shutting_down: Callable[[], bool] = field(default=lambda: False)

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.runtime.config.general.timezone)

    def local(self, value: datetime | None) -> str:
        """A time as the brand's local ``MM-DD HH:MM`` (``-`` for none)."""
        return value.astimezone(self.zone).strftime("%m-%d %H:%M") if value else "-"


def state_of(request: Request) -> InboxState:
    """The inbox state installed on the app."""
    return request.app.state.inbox


class Refused(Exception):
    """Stop handling a request and answer with ``response`` (login, role, CSRF)."""

    def __init__(self, response: Response) -> None:
        self.response = response


def guarded(
    fn: Callable[[Request], Awaitable[Response]],
) -> Callable[[Request], Awaitable[Response]]:
    """An endpoint whose :class:`Refused` becomes its answer."""

    async def endpoint(request: Request) -> Response:
        try:
            return await fn(request)
        except Refused as refused:
            return refused.response

    endpoint.__name__ = fn.__name__
    endpoint.__doc__ = fn.__doc__
    return endpoint


def locale_of(request: Request, user: StaffUser | None) -> str:
    """The staff member's locale; before login, the browser's (Accept-Language)."""
    if user is not None and getattr(user, "locale", None):
        return normalize_locale(user.locale)
    accept = request.headers.get("accept-language", "")
    return "en" if accept.lower().startswith("en") else "zh-CN"


def csrf_token(request: Request) -> str:
    """The session's CSRF token (created on first use)."""
    token = request.session.get("csrf")
    if not token:
        token = request.session["csrf"] = secrets.token_urlsafe(24)
    return token


def page(
    request: Request,
    name: str,
    user: StaffUser | None,
    status: int = 200,
    headers: dict[str, str] | None = None,
    **data,
) -> HTMLResponse:
    """Render an inbox page in the staff member's locale."""
    state = state_of(request)
    locale = locale_of(request, user)
    html = pages.get_template(name).render(
        user=user,
        csrf=csrf_token(request),
        flash=request.session.pop("flash", None),
        locale=locale,
        t=lambda key, **values: t(key, locale, **values),
        local=state.local,
        **data,
    )
    return HTMLResponse(html, status_code=status, headers=headers)


def back(request: Request, url: str, flash: str | None = None) -> RedirectResponse:
    """Redirect after a form; ``flash`` (``!`` marks a refusal) shows on the next page."""
    if flash:
        request.session["flash"] = flash
    return RedirectResponse(url, status_code=303)
