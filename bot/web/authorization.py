"""The HTTP side of the authorization table: every request is allowed or refused by it.

:class:`RouteAuthorization` is ASGI middleware placed inside the session middleware. For
each request it finds the route that will answer (the app's own routes, in order), looks
the route up in :data:`bot.core.authz.ROUTES` and lets the request through only if the
caller holds one of the roles the table grants, within its scope. A route missing from
the table is refused (403), so a new route cannot be reachable by accident.

Refusals say what is missing, in the reader's language (``Accept-Language``): an inbox page
sends an anonymous visitor to the login page, JSON routes answer 401/403 with
``{"error": ...}``, the APIs answer 404 while no API key is configured.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Receive, Scope, Send

from bot.core.authz import Role, RouteRule, route_rule
from bot.core.authz import Scope as Reach
from bot.core.i18n import t
from bot.web.api import check_api_key

if TYPE_CHECKING:
    from bot.app.runtime import Runtime

__all__ = ["REFUSED_HEADER", "RouteAuthorization"]

LOGIN_PAGE = "/inbox/login"
#: Set on every refusal of the table, so a refusal is told apart from an endpoint's answer.
REFUSED_HEADER = "X-Siyu-Refused"
_OPEN = frozenset({Role.ANONYMOUS, Role.PLATFORM})


class RouteAuthorization:
    """ASGI middleware enforcing :data:`bot.core.authz.ROUTES` on ``routes``."""

    def __init__(
        self, app: ASGIApp, *, routes: Sequence[BaseRoute], runtime: Runtime, sandbox: bool
    ) -> None:
        self.app, self.routes, self.runtime, self.sandbox = app, routes, runtime, sandbox

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        found = self._match(scope)
        if found is None:  # no route: the router answers 404 / 405
            await self.app(scope, receive, send)
            return
        path, params = found
        rule = route_rule(path, scope["method"])
        request = Request(scope)
        if rule is None:
            refusal: Response | None = _json(403, "authz.http.unlisted", request)
        else:
            refusal = await self._refusal(request, rule, params)
        if refusal is not None:
            refusal.headers[REFUSED_HEADER] = "authz"
            await refusal(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _match(self, scope: Scope) -> tuple[str, dict] | None:
        for route in self.routes:
            match, child = route.matches(scope)
            if match is Match.FULL:
                return getattr(route, "path", ""), child.get("path_params", {})
        return None

    async def _refusal(self, request: Request, rule: RouteRule, params: dict) -> Response | None:
        """None when the caller may go on; else the response that refuses them."""
        grants = rule.grants
        if _OPEN & grants.keys():
            return None
        if (
            Role.SANDBOX in grants
            and self.sandbox
            and (
                grants[Role.SANDBOX] is not Reach.SANDBOX_DATA
                or params.get("channel", "sandbox") == "sandbox"
            )
        ):
            return None
        api_key = self.runtime.config.api.key
        if Role.API_KEY in grants and api_key and check_api_key(request, api_key):
            return None
        role = None
        if Role.STAFF in grants or Role.MANAGER in grants:
            role = await self._inbox_role(request)
            if role is not None and role in grants:
                return None
        if Role.STAFF in grants or (Role.MANAGER in grants and Role.API_KEY not in grants):
            if role is None:
                if rule.json:
                    return _json(401, "authz.http.login", request)
                return RedirectResponse(LOGIN_PAGE, status_code=303)
            if rule.json:
                return _json(403, "authz.http.managers", request)
            return HTMLResponse(
                f'<!doctype html><h1 id="forbidden">403</h1>'
                f"<p>{t('authz.http.managers', _locale(request))}</p>"
                f'<p><a href="/inbox">/inbox</a></p>',
                status_code=403,
            )
        if Role.API_KEY in grants and Role.MANAGER in grants:
            return _json(401, "authz.http.api_key", request)
        if Role.API_KEY in grants:
            if not api_key:
                return JSONResponse(
                    {"error": "the API is disabled: set [api] key (or SIYU_API_KEY)"},
                    status_code=404,
                )
            return JSONResponse(
                {"error": "missing or wrong API key (Authorization: Bearer <key>)"},
                status_code=401,
            )
        return Response(status_code=404)  # the sandbox is off

    async def _inbox_role(self, request: Request) -> Role | None:
        """The logged-in inbox account's role, if the session holds an active one."""
        from storage.handoff import StaffUser

        staff_id = request.session.get("staff_id") if "session" in request.scope else None
        if not isinstance(staff_id, int):
            return None

        def load() -> str | None:
            with self.runtime.db.sessions() as session:
                user = session.get(StaffUser, staff_id)
                return user.role if user is not None and user.active else None

        found = await self.runtime.db.run(load)
        return Role(found) if found in (Role.STAFF, Role.MANAGER) else None


def _locale(request: Request) -> str:
    return request.headers.get("accept-language", "").split(",")[0].strip()


def _json(status: int, key: str, request: Request) -> JSONResponse:
    return JSONResponse({"error": t(key, _locale(request))}, status_code=status)
