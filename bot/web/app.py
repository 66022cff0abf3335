"""Siyu's HTTP app (Starlette): the sandbox page and its API, health, and channel routes.

The app's lifespan starts and stops the runtime, so ``uvicorn`` handling SIGTERM gives a
clean stop: no new events, in-flight deliveries finish or go back to the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING, Protocol

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from bot.adapters.sandbox import SandboxAdapter
from bot.web.api import BodyLimitMiddleware
from bot.web.ops import ops_routes
from bot.web.profile_api import profile_routes
from bot.web.sandbox_api import sandbox_routes

if TYPE_CHECKING:
    from bot.app.runtime import Runtime

__all__ = ["Service", "create_app"]

log = logging.getLogger(__name__)


class Service(Protocol):
    """A background part of the process started and stopped with the app."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


def create_app(
    runtime: Runtime,
    *,
    sandbox: SandboxAdapter | None = None,
    extra_routes: list[BaseRoute] | None = None,
    shutting_down: Callable[[], bool] = lambda: False,
    middleware: Sequence[Middleware] = (),
    services: Sequence[Service] = (),
    public: bool = True,
) -> Starlette:
    """The ASGI app; its lifespan starts and stops ``runtime``, then ``services`` after it.

    A service is any object with ``async start()`` and ``async stop()`` (e.g. the
    conversation jobs: follow-ups and the handoff SLA); ``middleware`` is Starlette middleware (sessions).
    ``public=False`` (worker and scheduler processes) serves only the operators' endpoints.
    """

    async def health(request: Request) -> JSONResponse:
        problem = await runtime.db.run(_ping, runtime)
        body = {"status": "degraded" if problem else "ok", "channels": sorted(runtime.adapters)}
        if problem:
            body["reason"] = problem
        return JSONResponse(body, status_code=503 if problem else 200)

    routes: list[BaseRoute] = [Route("/healthz", health), *ops_routes(runtime)]
    if public and sandbox is not None:
        routes += sandbox_routes(runtime, sandbox, shutting_down)
    if public:
        routes += extra_routes or []
        routes += profile_routes(runtime)

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

    from bot.web.authorization import RouteAuthorization

    # Outermost: every request's body is bounded before any endpoint reads it; innermost:
    # the authorization table, which reads the session the middleware before it loads.
    outer = [Middleware(BodyLimitMiddleware)]
    authorization = Middleware(
        RouteAuthorization, routes=routes, runtime=runtime, sandbox=sandbox is not None
    )
    return Starlette(
        routes=routes, lifespan=lifespan, middleware=[*outer, *middleware, authorization]
    )


def _ping(runtime: Runtime) -> str | None:
    """None when the database takes a write; else why not (a short, secret-free reason).

    The probe really writes (it bumps the one ``alembic_version`` row to itself) and rolls
    back, so a read-only file, a read-only PostgreSQL transaction or a full disk shows.
    """
    from sqlalchemy import text

    try:
        with runtime.db.engine.connect() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = version_num"))
            conn.rollback()
        return None
    except Exception as exc:
        log.exception("health check: the database refuses writes")
        return _health_reason(exc)


def _health_reason(exc: Exception) -> str:
    text = str(getattr(exc, "orig", exc)).lower()
    if "read-only" in text or "readonly" in text or "read only" in text:
        return "database is read-only"
    if "disk" in text or "full" in text:
        return "database storage is full"
    if "locked" in text or "timeout" in text:
        return "database is busy (locked)"
    return "database unreachable"
