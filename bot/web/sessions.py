"""Inbox sessions: signed cookies that are ``Secure`` behind HTTPS and revocable.

The cookie (Starlette ``SessionMiddleware``, signed with ``[handoff] secret_key``) holds the
staff id and the staff member's session version at login. Every request compares that
version with ``staff_users.session_version``; logging out bumps it, so a copied cookie
stops working at once. The cookie is ``Secure`` when ``[links] base_url`` (the public URL
of this server) is HTTPS, ``HttpOnly`` and ``SameSite=Strict`` always.
"""

from __future__ import annotations

import logging
import secrets
from typing import TYPE_CHECKING

from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request

from bot.app.config import Config
from bot.conversations.staff import revoke_sessions
from storage.handoff import StaffUser

if TYPE_CHECKING:
    from bot.app.runtime import Runtime

__all__ = ["begin_session", "end_session", "secure_cookies", "session_middleware", "session_staff"]

log = logging.getLogger(__name__)

COOKIE = "siyu_inbox"


def secure_cookies(config: Config) -> bool:
    """Is the public URL HTTPS (so browsers must send the cookie over TLS only)?"""
    return config.links.base_url.lower().startswith("https://")


def session_middleware(runtime: Runtime) -> list[Middleware]:
    """The signed-cookie session ([handoff] secret_key, else a random one per process)."""
    config = runtime.config
    secret = config.handoff.secret_key
    if not secret:
        log.warning("[handoff] secret_key is not set: inbox logins end when Siyu restarts")
        secret = secrets.token_urlsafe(32)
    return [
        Middleware(
            SessionMiddleware,
            secret_key=secret,
            session_cookie=COOKIE,
            max_age=config.handoff.session_hours * 3600,
            same_site="strict",
            https_only=secure_cookies(config),
        )
    ]


def begin_session(request: Request, user: StaffUser) -> None:
    """A fresh session for ``user`` (new CSRF token, the current session version)."""
    request.session.clear()
    request.session["staff_id"] = user.id
    request.session["sv"] = user.session_version
    request.session["csrf"] = secrets.token_urlsafe(24)


def _load(runtime: Runtime, staff_id: int, version: int) -> StaffUser | None:
    with runtime.db.sessions() as session:
        user = session.get(StaffUser, staff_id)
        if user is None or not user.active or user.session_version != version:
            return None
        return user


async def session_staff(runtime: Runtime, request: Request) -> StaffUser | None:
    """The active staff member of this request's session, if it is still valid."""
    staff_id, version = request.session.get("staff_id"), request.session.get("sv")
    if not isinstance(staff_id, int) or not isinstance(version, int):
        return None
    return await runtime.db.run(_load, runtime, staff_id, version)


def _revoke(runtime: Runtime, staff_id: int) -> None:
    with runtime.db.transaction() as session:
        revoke_sessions(session, staff_id)


async def end_session(runtime: Runtime, request: Request, user: StaffUser) -> None:
    """Log out: every session of ``user`` ends on the server, and this cookie is cleared."""
    await runtime.db.run(_revoke, runtime, user.id)
    request.session.clear()
