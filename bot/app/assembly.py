"""Assemble a Siyu process from a config: runtime, channels, HTTP app; and serve it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import uvicorn
from starlette.applications import Starlette
from starlette.routing import BaseRoute

from bot.adapters.sandbox import SandboxAdapter
from bot.app.config import Config, ConfigError
from bot.app.exposure import check_exposure, sandbox_enabled
from bot.app.logs import secrets_of
from bot.app.roles import Role
from bot.app.runtime import Runtime
from bot.conversations.staff import use_password_cost
from bot.core.clock import Clock
from bot.core.redaction import register_secrets
from bot.web.app import create_app
from storage.db import Database
from storage.leader import LeaderLock

__all__ = ["SiyuApp", "build", "serve"]

log = logging.getLogger(__name__)


@dataclass
class SiyuApp:
    """A built process: the runtime, its sandbox (if enabled), the ASGI app and its server."""

    runtime: Runtime
    sandbox: SandboxAdapter | None
    asgi: Starlette | None = None
    server: uvicorn.Server | None = None

    def shutting_down(self) -> bool:
        """True once the server was told to stop (long-lived streams end then)."""
        return bool(self.server and self.server.should_exit)


def build(
    config: Config,
    *,
    db: Database | None = None,
    clock: Clock | None = None,
    role: Role | str | None = None,
) -> SiyuApp:
    """Wire the runtime, its channel adapters and the HTTP app for ``config``.

    ``role`` (else ``[process] role``) decides what this process runs (bot/app/roles.py):
    a scheduler process has no channels; a worker's channels only send."""
    check_exposure(config)
    register_secrets(secrets_of(config))  # stored errors are redacted from the start
    if config.web.password_time_cost or config.web.password_memory_kib:
        use_password_cost(config.web.password_time_cost, config.web.password_memory_kib)
    role = Role(role or config.process.role)
    runtime = Runtime(config, db=db, clock=clock, role=role)
    sandbox = None
    if sandbox_enabled(config) and role is not Role.SCHEDULER:
        sandbox = SandboxAdapter(config.sandbox, runtime)
        runtime.add_adapter(sandbox)
    app = SiyuApp(runtime, sandbox)
    from bot.web.inbox import inbox_middleware, install_inbox

    channel_routes = _channel_routes(runtime, config) if role is not Role.SCHEDULER else []
    services: list = _scheduler_services(runtime, config) if role.schedules else []
    if config.metrics.enabled and config.metrics.port:
        from bot.web.ops import MetricsServer

        services.append(MetricsServer(runtime))
    app.asgi = create_app(
        runtime,
        sandbox=sandbox,
        extra_routes=channel_routes + _web_routes(app) if role.serves_web else [],
        shutting_down=app.shutting_down,
        middleware=inbox_middleware(runtime) if role.serves_web else (),
        services=services,
        public=role.serves_web,
    )
    install_inbox(app.asgi, runtime, shutting_down=app.shutting_down)
    app.asgi.state.runtime = runtime  # module-level endpoints (the console) read it here
    return app


def _channel_routes(runtime: Runtime, config: Config) -> list[BaseRoute]:
    """Add the platform channels that are configured; return their callback routes.

    Only a process that serves the web takes events in: it polls Telegram (the one holding
    the polling lock) or registers its webhook; a worker's adapters only send."""
    routes: list[BaseRoute] = []
    inbound = runtime.role.serves_web
    if config.telegram.token:
        from bot.adapters.telegram.adapter import TelegramAdapter
        from bot.adapters.telegram.relay import relay_desk

        if config.telegram.mode == "webhook" and not config.telegram.webhook_secret:
            raise ConfigError(
                config.source, "telegram.webhook_secret", "required when mode is 'webhook'"
            )
        polling = config.telegram.mode == "polling" and inbound
        telegram = TelegramAdapter(
            config.telegram,
            runtime,
            relay=relay_desk(config, runtime),  # staff relay group, if [telegram] relay_chat_id
            inbound=inbound,
            poll_lock=LeaderLock(runtime.db.url, "telegram-poll", b"siyu-tgp") if polling else None,
            standby_seconds=config.process.standby_seconds,
        )
        runtime.add_adapter(telegram)
        if config.telegram.mode == "webhook":
            routes += telegram.routes()
    if config.wechat.app_id:
        from bot.adapters.wechat.official_account import WechatAdapter

        wechat = WechatAdapter(config.wechat, runtime)
        runtime.add_adapter(wechat)
        routes += wechat.routes()
    if config.wecom.corp_id:
        from bot.adapters.wechat.wecom import WecomAdapter

        # mass-send polling and tag sync: in the processes that deliver, never in web ones
        wecom = WecomAdapter(config.wecom, runtime, batch_work=runtime.role.delivers)
        runtime.add_adapter(wecom)
        routes += wecom.routes()
    return routes


def _web_routes(app: SiyuApp) -> list[BaseRoute]:
    """The staff inbox, the APIs (orders, customers, coupons) and tracked-link redirects."""
    from bot.web.console import console_routes
    from bot.web.coupons_api import coupon_routes
    from bot.web.customers_api import customers_routes
    from bot.web.group_links import group_link_routes
    from bot.web.inbox import inbox_routes
    from bot.web.links import link_routes
    from bot.web.orders_api import orders_routes

    runtime = app.runtime
    return [
        *inbox_routes(),
        *orders_routes(runtime),
        *customers_routes(runtime),
        *coupon_routes(runtime),
        *link_routes(runtime),
        *group_link_routes(runtime),  # links in group posts (bot/groups/sop.py)
        *console_routes(),
    ]


def _scheduler_services(runtime: Runtime, config: Config) -> list:
    """The one scheduler (scenarios, campaigns, follow-ups, SLA, nightly jobs), if enabled.

    Every process starts it; only the one holding the scheduler lock runs jobs.
    """
    if not config.scenarios.scheduler:
        return []
    from scheduler.service import SchedulerService

    return [SchedulerService(runtime, standby_seconds=config.process.standby_seconds)]


class _Server(uvicorn.Server):
    """uvicorn's server, except that a handled SIGTERM/SIGINT ends in a clean exit (code 0).

    uvicorn re-raises the signal after its graceful shutdown, which makes the process die
    by the signal; Siyu has already stopped cleanly by then.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        original = {
            sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)


def serve(app: SiyuApp) -> None:
    """Serve until SIGTERM/SIGINT; the lifespan stops the runtime cleanly."""
    web = app.runtime.config.web
    assert app.asgi is not None  # build() creates the web app
    server = _Server(
        uvicorn.Config(
            app.asgi,
            host=web.host,
            port=web.port,
            log_config=None,
            timeout_graceful_shutdown=3,
            lifespan="on",
        )
    )
    app.server = server
    if app.sandbox is not None:
        log.info("sandbox: open http://%s:%d/", web.host, web.port)
        print(f"Siyu is running: open http://{web.host}:{web.port}/", flush=True)
    asyncio.run(server.serve())
