"""Inbox logins and sessions: the session middleware, login, logout, who is asking, CSRF.

Sessions are signed cookies (bot/web/sessions.py: revocable, Secure behind HTTPS); every form and
API POST carries the session's CSRF token; passwords are argon2 hashes and failed logins
are throttled per name and client IP (bot/conversations/staff.py).
"""

from __future__ import annotations

import logging
import math
import secrets
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from bot.conversations import handoff
from bot.conversations.staff import (
    authenticate,
    clear_login_failures,
    login_blocked_until,
    record_login_failure,
)
from bot.core.i18n import t
from bot.web.api import odd_text, request_locale
from bot.web.inbox.common import Refused, locale_of, page, state_of
from bot.web.sessions import begin_session, end_session, session_middleware, session_staff
from storage.handoff import StaffUser

if TYPE_CHECKING:
    from bot.app.runtime import Runtime

__all__ = ["csrf_ok", "form_of", "inbox_middleware", "login", "login_page", "logout", "staff_of"]

log = logging.getLogger(__name__)


def inbox_middleware(runtime: Runtime) -> list[Middleware]:
    """The inbox's session cookie (bot/web/sessions.py: Secure behind HTTPS, revocable)."""
    return session_middleware(runtime)


def csrf_ok(request: Request, given: str | None) -> bool:
    """Whether ``given`` is this session's CSRF token."""
    expected = request.session.get("csrf")
    return bool(expected and given and secrets.compare_digest(expected, given))


async def staff_of(request: Request, *, api: bool = False, manager: bool = False) -> StaffUser:
    """The logged-in, active staff member; else a redirect to the login (401 for the API)."""
    runtime = state_of(request).runtime
    user = await session_staff(runtime, request)
    if user is None:
        if api:
            locale = locale_of(request, None)
            raise Refused(JSONResponse({"error": t("inbox.login.first", locale)}, status_code=401))
        raise Refused(RedirectResponse("/inbox/login", status_code=303))
    if manager and user.role != "manager":
        raise Refused(
            page(request, "inbox/forbidden.html", user, status=403)
            if not api
            else JSONResponse({"error": t("inbox.forbidden", user.locale)}, status_code=403)
        )
    return user


async def form_of(request: Request, user: StaffUser | None = None) -> dict[str, str]:
    """The posted form's text fields, refused (403) without the session's CSRF token."""
    form = await request.form()
    data = {k: v for k, v in form.items() if isinstance(v, str)}
    if any(odd_text(k) or odd_text(v) for k, v in data.items()):  # NUL, lone surrogate
        raise Refused(HTMLResponse(t("websec.form_text", request_locale(request)), 400))
    if not csrf_ok(request, data.get("csrf")):
        raise Refused(HTMLResponse(t("inbox.csrf", locale_of(request, user)), status_code=403))
    return data


def audit_simple(runtime: Runtime, actor: str, action: str) -> None:
    """One audit entry without a conversation (login, logout, language)."""
    with runtime.db.transaction() as session:
        handoff.audit(session, actor, action, runtime.clock.now())


async def login_page(request: Request) -> Response:
    return page(request, "inbox/login.html", None)


async def login(request: Request) -> Response:
    state = state_of(request)
    runtime = state.runtime
    data = await form_of(request)
    username, password = data.get("username", "").strip(), data.get("password", "")
    client_ip = request.client.host if request.client else "unknown"
    limits = runtime.config.handoff
    window = timedelta(minutes=limits.login_window_minutes)

    def check() -> StaffUser | datetime | None:
        """The user, or None for a wrong login, or when to retry if throttled."""
        now = runtime.clock.now()
        with runtime.db.transaction() as session:
            blocked = login_blocked_until(
                session,
                username,
                client_ip,
                now,
                max_failures=limits.login_max_failures,
                window=window,
                max_per_address=limits.login_max_failures_per_address,
            )
            if blocked is not None:  # refused before the password is even looked at
                handoff.audit(
                    session,
                    username[:64] or "anonymous",
                    "login_throttled",
                    now,
                    username=username[:64],
                    client_ip=client_ip,
                    retry_at=blocked.isoformat(),
                )
                return blocked
            user = authenticate(session, username, password, now)
            if user is None:
                record_login_failure(session, username, client_ip, now, window=window)
            else:
                clear_login_failures(session, username, client_ip)
            return user

    result = await runtime.db.run(check) if username and password else None
    if isinstance(result, datetime):
        wait = max(1, math.ceil((result - runtime.clock.now()).total_seconds()))
        return page(
            request,
            "inbox/login.html",
            None,
            status=429,
            headers={"Retry-After": str(wait)},
            throttled={"at": state.local(result), "minutes": math.ceil(wait / 60)},
        )
    user = result
    if user is None:
        return page(request, "inbox/login.html", None, status=401, error=True)
    begin_session(request, user)
    await runtime.db.run(audit_simple, runtime, user.username, "login")
    return RedirectResponse("/inbox", status_code=303)


async def logout(request: Request) -> Response:
    runtime = state_of(request).runtime
    user = await staff_of(request)
    await form_of(request, user)
    await runtime.db.run(audit_simple, runtime, user.username, "logout")
    await end_session(runtime, request, user)
    return RedirectResponse("/inbox/login", status_code=303)
