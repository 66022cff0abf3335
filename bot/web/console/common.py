"""What every console page shares: the manager check, the reader's language, CSRF-checked
forms, rendering a page of ``templates/web/console/`` and running database work off the loop.

Endpoints are module-level functions; they find the process in ``request.app.state.runtime``.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import datetime
from functools import wraps
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import jinja2
from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from bot.app.services import Services
from bot.core.i18n import LOCALES, catalogue, normalize_locale, t
from bot.core.templating import TEMPLATES_DIR
from bot.web.console import charts
from bot.web.inbox.auth import csrf_ok
from bot.web.inbox.common import csrf_token
from bot.web.sessions import session_staff as current_staff
from storage.handoff import StaffUser

if TYPE_CHECKING:
    from bot.app.runtime import Runtime

__all__ = [
    "MAX_FORM_FIELD",
    "Refused",
    "back",
    "endpoint",
    "finished",
    "form_of",
    "int_param",
    "label",
    "locale_of",
    "manager_of",
    "page",
    "render_partial",
    "run",
    "runtime_of",
    "services_of",
]

#: the longest text any console form field takes (a segment or a message body is shorter)
MAX_FORM_FIELD = 4000

NAV = (
    "dashboard",
    "measures",
    "campaigns",
    "segments",
    "customers",
    "tags",
    "imports",
    "coupons",
    "flows",
    "groups",
    "staff",
)

_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR / "web")),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)
_env.filters["tojson_safe"] = lambda value: Markup(
    json.dumps(value, ensure_ascii=False, default=str)
    .replace("<", "\\u003c")
    .replace(">", "\\u003e")
    .replace("&", "\\u0026")
)


class Refused(Exception):
    """Stops an endpoint with this response (login redirect, 403, 400)."""

    def __init__(self, response: Response) -> None:
        self.response = response


def runtime_of(request: Request) -> Runtime:
    return request.app.state.runtime


def services_of(request: Request) -> Services:
    runtime = runtime_of(request)
    return Services(runtime.db, runtime.config, runtime.renderer, runtime.clock)


async def run(request: Request, fn: Callable[..., Any], *args: Any) -> Any:
    """Database work in the thread pool, so the event loop never waits on it."""
    return await runtime_of(request).db.run(fn, *args)


def locale_of(request: Request, user: StaffUser | None) -> str:
    """The staff member's chosen language, else the browser's first supported one."""
    if user is not None and user.locale in LOCALES:
        return user.locale
    header = request.headers.get("accept-language", "")
    first = header.split(",")[0].split(";")[0].strip()
    return normalize_locale(first) if first else LOCALES[0]


async def manager_of(request: Request, *, api: bool = False) -> StaffUser:
    """The logged-in manager; anonymous → the inbox login, staff → 403."""
    runtime = runtime_of(request)
    user = await current_staff(runtime, request)
    if user is None:
        if api:
            raise Refused(JSONResponse({"error": t("console.login_first", None)}, 401))
        raise Refused(RedirectResponse("/inbox/login", status_code=303))
    if user.role != "manager":
        locale = locale_of(request, user)
        if api:
            raise Refused(JSONResponse({"error": t("console.managers_only", locale)}, 403))
        raise Refused(page(request, "console/forbidden.html", user, status=403, section=""))
    return user


async def form_of(request: Request, user: StaffUser) -> dict[str, str]:
    """The POSTed form's text fields, after the CSRF check; each field is bounded."""
    form = await request.form()
    data = {k: v for k, v in form.items() if isinstance(v, str)}
    if not csrf_ok(request, data.get("csrf")):
        raise Refused(
            HTMLResponse(t("console.csrf_wrong", locale_of(request, user)), status_code=403)
        )
    too_long = [k for k, v in data.items() if len(v) > MAX_FORM_FIELD]
    if too_long:
        raise Refused(
            HTMLResponse(
                t("console.field_too_long", locale_of(request, user), limit=MAX_FORM_FIELD),
                status_code=400,
            )
        )
    return data


def render_partial(request: Request, name: str, user: StaffUser, **data: Any) -> str:
    """A fragment of a page (a table the page refreshes) in the user's language."""
    locale = locale_of(request, user)
    return _env.get_template(name).render(
        t=lambda key, **values: t(key, locale, **values),
        label=lambda prefix, value: label(prefix, str(value), locale),
        **data,
    )


def page(
    request: Request, name: str, user: StaffUser, *, status: int = 200, section: str, **data: Any
) -> HTMLResponse:
    """Render a console page for ``user`` in their language."""
    locale = locale_of(request, user)
    zone = ZoneInfo(runtime_of(request).config.general.timezone)
    if "charts" in data:
        data["charts"] = finished(data["charts"], locale)

    def local(value: datetime | None, fmt: str = "%Y-%m-%d %H:%M") -> str:
        return value.astimezone(zone).strftime(fmt) if value else "-"

    html = _env.get_template(name).render(
        user=user,
        csrf=csrf_token(request),
        locale=locale,
        locales=LOCALES,
        t=lambda key, **values: t(key, locale, **values),
        label=lambda prefix, value: label(prefix, str(value), locale),
        local=local,
        nav=NAV,
        section=section,
        path=request.url.path,
        flash=request.session.pop("console_flash", None),
        **data,
    )
    return HTMLResponse(html, status_code=status)


def back(request: Request, url: str, flash: str | None = None, *, error: bool = False) -> Response:
    """Redirect after a POST, with a one-time message (``error`` shows it as a refusal)."""
    if flash:
        request.session["console_flash"] = {"text": flash, "error": error}
    return RedirectResponse(url, status_code=303)


def endpoint(
    fn: Callable[[Request], Awaitable[Response]],
) -> Callable[[Request], Awaitable[Response]]:
    """Turn :class:`Refused` into its response."""

    @wraps(fn)
    async def wrapped(request: Request) -> Response:
        try:
            return await fn(request)
        except Refused as refused:
            return refused.response

    return wrapped


def int_param(request: Request, name: str) -> int:
    """A path parameter that must be a positive id (400 otherwise)."""
    raw = request.path_params.get(name, "")
    if not str(raw).isdigit() or len(str(raw)) > 18:
        raise Refused(HTMLResponse("bad id", status_code=400))
    return int(raw)


def label(prefix: str, value: str, locale: str) -> str:
    """The catalogue's name for a stored value (a status, a stage), else the value itself."""
    key = f"{prefix}.{value}"
    return t(key, locale) if key in catalogue() else value


def finished(options: dict[str, dict], locale: str) -> dict[str, dict]:
    """Every chart of a page with the page's fonts and an empty-chart note."""
    empty = t("console.no_data", locale)
    return {key: charts.finish(option, empty) for key, option in options.items()}
