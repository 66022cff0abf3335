"""Siyu's HTTP app (Starlette): the sandbox page and its API, health, and channel routes.

The app's lifespan starts and stops the runtime, so ``uvicorn`` handling SIGTERM gives a
clean stop: no new events, in-flight deliveries finish or go back to the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Protocol

import jinja2
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from bot.adapters.sandbox import SandboxAdapter, SandboxInputError
from bot.app.runtime import Runtime
from bot.core.templating import TEMPLATES_DIR
from storage import repos

__all__ = ["Service", "create_app"]

log = logging.getLogger(__name__)

_pages = jinja2.Environment(
    loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR / "web")), autoescape=True
)


class Service(Protocol):
    """A background part of the process started and stopped with the app."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def sandbox_routes(
    runtime: Runtime, sandbox: SandboxAdapter, shutting_down: Callable[[], bool]
) -> list[BaseRoute]:
    """The sandbox page and the JSON/SSE API it (and tests) use."""

    async def page(request: Request) -> HTMLResponse:
        html = _pages.get_template("sandbox.html").render(
            groups=[{"chat_id": g.chat_id, "title": g.title} for g in sandbox.groups],
            managers=list(runtime.config.roles.managers),
        )
        return HTMLResponse(html)

    async def post_message(request: Request) -> JSONResponse:
        try:
            data = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return _error(400, "the body is not valid JSON")
        try:
            result = await sandbox.receive(data)
        except SandboxInputError as exc:
            return _error(400, str(exc))
        return JSONResponse(
            {
                "event_id": result.event_id,
                "duplicate": result.duplicate,
                "handlers": result.handlers,
                "errors": result.errors,
                "queued": result.queued,
            },
            status_code=202,
        )

    async def transcript(request: Request) -> JSONResponse:
        try:
            after = int(request.query_params.get("after", "0"))
        except ValueError:
            return _error(400, "'after' must be an integer")
        chat_id = request.path_params["chat_id"]
        return JSONResponse({"messages": await sandbox.transcript(chat_id, after)})

    async def stream(request: Request) -> Response:
        chat_id = request.query_params.get("chat_id", "")
        if not chat_id:
            return _error(400, "'chat_id' is required")
        try:
            after = int(request.query_params.get("after", "0"))
        except ValueError:
            return _error(400, "'after' must be an integer")

        async def events() -> AsyncIterator[str]:
            last = after
            yield ": connected\n\n"
            while not shutting_down() and not await request.is_disconnected():
                messages = await sandbox.transcript(chat_id, last)
                for m in messages:
                    last = m["id"]
                    yield f"event: message\nid: {m['id']}\ndata: {json.dumps(m, ensure_ascii=False)}\n\n"
                if not messages:
                    await sandbox.wait_for_change(1.0)

        return StreamingResponse(
            events(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    async def profile(request: Request) -> JSONResponse:
        channel = request.path_params["channel"]
        user_id = request.path_params["user_id"]

        def load() -> dict | None:
            with runtime.db.sessions() as session:
                found = repos.customer_profile(session, channel, user_id, runtime.clock.now())
                return found.as_dict() if found else None

        data = await runtime.db.run(load)
        if data is None:
            return _error(404, f"no customer with {channel} id {user_id!r} yet")
        managers = runtime.config.roles.managers
        data["role"] = "manager" if f"{channel}:{user_id}" in managers else "customer"
        return JSONResponse(data)

    return [
        Route("/", page),
        Route("/sandbox/api/messages", post_message, methods=["POST"]),
        Route("/sandbox/api/chats/{chat_id}/messages", transcript),
        Route("/sandbox/api/stream", stream),
        Route("/api/customers/{channel}/{user_id}", profile),
    ]


def create_app(
    runtime: Runtime,
    *,
    sandbox: SandboxAdapter | None = None,
    extra_routes: list[BaseRoute] | None = None,
    shutting_down: Callable[[], bool] = lambda: False,
    middleware: Sequence[Middleware] = (),
    services: Sequence[Service] = (),
) -> Starlette:
    """The ASGI app; its lifespan starts and stops ``runtime``, then ``services`` after it.

    A service is any object with ``async start()`` and ``async stop()`` (e.g. the
    conversation jobs: follow-ups and the handoff SLA); ``middleware`` is Starlette middleware (sessions).
    """

    async def health(request: Request) -> JSONResponse:
        ok = await runtime.db.run(_ping, runtime)
        return JSONResponse(
            {"status": "ok" if ok else "degraded", "channels": sorted(runtime.adapters)},
            status_code=200 if ok else 503,
        )

    routes: list[BaseRoute] = [Route("/healthz", health)]
    if sandbox is not None:
        routes += sandbox_routes(runtime, sandbox, shutting_down)
    routes += extra_routes or []

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await runtime.start()
        for service in services:
            await service.start()
        try:
            yield
        finally:
            for service in reversed(services):
                await asyncio.shield(service.stop())
            await asyncio.shield(runtime.stop())

    return Starlette(routes=routes, lifespan=lifespan, middleware=list(middleware))


def _ping(runtime: Runtime) -> bool:
    from sqlalchemy import text

    try:
        with runtime.db.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return True
    except Exception:
        log.exception("health check: database unreachable")
        return False
