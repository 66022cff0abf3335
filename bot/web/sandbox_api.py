"""The sandbox page and its JSON/SSE API, guarded so no other site can drive it.

Anyone who reaches the sandbox can act as any customer or manager, so every sandbox route
checks that the request is addressed to this server (``Host`` is a loopback name, the
``[web] host`` or the host of ``[links] base_url``: a DNS-rebinding page is refused) and,
when the browser says where it comes from (``Origin``, ``Sec-Fetch-Site``), that it comes
from the same origin — 403 otherwise. Posts take ``application/json`` only (415), at most
``MAX_SANDBOX_BODY`` bytes (413), and a handler's failure is reported as "a handler
failed" with the event id, never with its exception text. At most ``MAX_STREAMS`` live
streams are open at once (503 beyond); a dropped stream releases everything it held.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from bot.adapters.sandbox import CHANNEL, SandboxAdapter, SandboxInputError
from bot.app.exposure import is_loopback
from bot.core.i18n import t
from bot.core.templating import TEMPLATES_DIR
from bot.web.api import ApiRequestError, check_text, query_int, read_json_body, request_locale
from storage import repos

if TYPE_CHECKING:
    from bot.app.runtime import Runtime

__all__ = ["MAX_SANDBOX_BODY", "MAX_STREAMS", "sandbox_routes"]

log = logging.getLogger(__name__)

MAX_SANDBOX_BODY = 16 * 1024
MAX_STREAMS = 100
MAX_ID = 128

_pages = jinja2.Environment(
    loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR / "web")), autoescape=True
)


def _hostname(authority: str) -> str:
    """``127.0.0.1:8080`` → ``127.0.0.1``; ``[::1]:8080`` → ``::1``."""
    return (urlsplit(f"//{authority}").hostname or "").lower()


class _Guard:
    """The Host/Origin checks of the sandbox routes (see the module docstring)."""

    def __init__(self, runtime: Runtime) -> None:
        config = runtime.config
        self.hosts = {config.web.host.lower().strip("[]")}
        if config.links.base_url:
            self.hosts.add(_hostname(urlsplit(config.links.base_url).netloc))

    def host_ok(self, host: str) -> bool:
        name = _hostname(host)
        return bool(name) and (is_loopback(name) or name in self.hosts)

    def refusal(self, request: Request, *, api: bool) -> Response | None:
        locale = request_locale(request)
        host = request.headers.get("host", "")
        if not self.host_ok(host):
            return _error(403, t("websec.sandbox_host", locale), "sandbox_host")
        origin = request.headers.get("origin")
        if origin is not None and urlsplit(origin).netloc.lower() != host.lower():
            return _error(403, t("websec.sandbox_origin", locale), "sandbox_origin")
        fetch_site = request.headers.get("sec-fetch-site", "same-origin")
        if api and fetch_site not in ("same-origin", "none"):
            return _error(403, t("websec.sandbox_origin", locale), "sandbox_origin")
        return None


def _error(status: int, message: str, code: str, **headers: str) -> JSONResponse:
    return JSONResponse({"error": message, "code": code}, status_code=status, headers=headers)


def sandbox_routes(
    runtime: Runtime, sandbox: SandboxAdapter, shutting_down: Callable[[], bool]
) -> list[BaseRoute]:
    """The sandbox page and the JSON/SSE API it (and tests) use."""
    guard = _Guard(runtime)
    streams = {"open": 0}

    def guarded(fn, *, api: bool = True):
        async def endpoint(request: Request) -> Response:
            refused = guard.refusal(request, api=api)
            if refused is not None:
                return refused
            try:
                return await fn(request)
            except ApiRequestError as exc:
                return exc.response()

        return endpoint

    def id_param(request: Request, value: str, name: str) -> str:
        check_text(value, name, request_locale(request))
        if not value or len(value) > MAX_ID:
            raise ApiRequestError(
                400, t("websec.bad_id", request_locale(request), name=name, limit=MAX_ID), "bad_id"
            )
        return value

    async def page(request: Request) -> HTMLResponse:
        html = _pages.get_template("sandbox.html").render(
            groups=[{"chat_id": g.chat_id, "title": g.title} for g in sandbox.groups],
            managers=list(runtime.config.roles.managers),
        )
        return HTMLResponse(html)

    async def post_message(request: Request) -> JSONResponse:
        data = await read_json_body(request, limit=MAX_SANDBOX_BODY, require_json_type=True)
        try:
            result = await sandbox.receive(data)
        except SandboxInputError as exc:
            return _error(400, str(exc), "sandbox_input")
        locale = request_locale(request)
        return JSONResponse(
            {
                "event_id": result.event_id,
                "duplicate": result.duplicate,
                "handlers": result.handlers,
                # What failed is in the server's log under the event id; never the
                # exception text (it can carry SQL, parameters or secrets).
                "errors": [
                    t("websec.handler_failed", locale, event=result.event_id) for _ in result.errors
                ],
                "queued": result.queued,
            },
            status_code=202,
        )

    async def transcript(request: Request) -> JSONResponse:
        chat_id = id_param(request, request.path_params["chat_id"], "chat_id")
        after = query_int(request, "after", 0)
        return JSONResponse({"messages": await sandbox.transcript(chat_id, after)})

    async def stream(request: Request) -> Response:
        chat_id = id_param(request, request.query_params.get("chat_id", ""), "chat_id")
        after = query_int(request, "after", 0)
        if streams["open"] >= MAX_STREAMS:
            locale = request_locale(request)
            return _error(
                503,
                t("websec.too_many_streams", locale),
                "too_many_streams",
                **{"Retry-After": "5"},
            )

        async def events() -> AsyncIterator[str]:
            streams["open"] += 1  # counted from its first step, released in its finally
            try:
                last = after
                yield ": connected\n\n"
                while not shutting_down() and not await request.is_disconnected():
                    messages = await sandbox.transcript(chat_id, last)
                    for m in messages:
                        last = m["id"]
                        data = json.dumps(m, ensure_ascii=False)
                        yield f"event: message\nid: {m['id']}\ndata: {data}\n\n"
                    if not messages:
                        await sandbox.wait_for_change(1.0)
            finally:
                streams["open"] -= 1

        return StreamingResponse(
            events(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    async def profile(request: Request) -> JSONResponse:
        """What the page's side panel shows of a sandbox persona (sandbox data only)."""
        user_id = id_param(request, request.path_params["user_id"], "user_id")

        def load() -> dict | None:
            with runtime.db.sessions() as session:
                found = repos.customer_profile(session, CHANNEL, user_id, runtime.clock.now())
                return found.as_dict() if found else None

        data = await runtime.db.run(load)
        if data is None:
            locale = request_locale(request)
            return _error(404, t("websec.no_persona", locale, user=user_id), "not_found")
        managers = runtime.config.roles.managers
        return JSONResponse(
            {
                "display_name": data["display_name"],
                "locale": data["locale"],
                "timezone": data["timezone"],
                "role": "manager" if f"{CHANNEL}:{user_id}" in managers else "customer",
                "tags": data["tags"],
                "conversations": [c for c in data["conversations"] if c["channel"] == CHANNEL],
                "identities": [i for i in data["identities"] if i["channel"] == CHANNEL],
            }
        )

    return [
        Route("/", guarded(page, api=False)),
        Route("/sandbox/api/messages", guarded(post_message), methods=["POST"]),
        Route("/sandbox/api/chats/{chat_id}/messages", guarded(transcript)),
        Route("/sandbox/api/stream", guarded(stream)),
        Route("/sandbox/api/profile/{user_id}", guarded(profile)),
    ]
