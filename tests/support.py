"""Test helpers that drive the real system through the sandbox channel."""

from __future__ import annotations

import socket
import uuid
from dataclasses import replace

from bot.app.assembly import SiyuApp, build
from bot.app.config import Config
from bot.core.clock import Clock
from bot.core.routing import DispatchResult
from storage.db import Database


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SandboxHarness:
    """A built Siyu (sandbox enabled) whose events and deliveries a test steps by hand."""

    def __init__(self, config: Config, db: Database, clock: Clock) -> None:
        config = config.replace(database=replace(config.database, url=db.url))
        if config.sandbox.enabled is None:  # next to a test's real channel too (loopback)
            config = config.replace(sandbox=replace(config.sandbox, enabled=True))
        self.app: SiyuApp = build(config, db=db, clock=clock)
        self.runtime = self.app.runtime
        self.sandbox = self.app.sandbox
        self.db = db

    async def say(
        self,
        user: str,
        text: str,
        *,
        chat: str | None = None,
        name: str = "",
        locale: str | None = None,
        message_id: str | None = None,
    ) -> DispatchResult:
        return await self.sandbox.receive(
            {
                "user_id": user,
                "chat_id": chat or user,
                "text": text,
                "display_name": name,
                "locale": locale,
                "message_id": message_id or uuid.uuid4().hex,
            }
        )

    async def deliver(self) -> int:
        """Run the delivery worker until the queue has nothing due."""
        total = 0
        while n := await self.runtime.worker.drain_once():
            total += n
        return total

    async def bot_messages(self, chat: str) -> list[str]:
        return [m["text"] for m in await self.sandbox.transcript(chat) if m["direction"] == "out"]


class LiveServer:
    """Serve a built Siyu over real HTTP on 127.0.0.1 in a background thread.

    Use as a context manager; ``url`` is the base URL. Stopping goes through uvicorn's
    normal shutdown, so the runtime's lifespan stop runs as it does under SIGTERM.
    """

    def __init__(self, app: SiyuApp, port: int | None = None) -> None:
        import uvicorn

        self.app = app
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(
            uvicorn.Config(
                app.asgi,
                host="127.0.0.1",
                port=self.port,
                log_config=None,
                lifespan="on",
                timeout_graceful_shutdown=1,
            )
        )
        app.server = self.server
        self._thread = None

    def __enter__(self) -> LiveServer:
        import threading
        import time

        self._thread = threading.Thread(target=self.server.run, name="siyu-live", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the live server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=20)


def run_jobs(services, limit: int = 100) -> list:
    """Run every due batch job in this thread, as a worker process would (campaign
    preparation, imports); returns the jobs in the order they were claimed."""
    from bot.app.jobs import job_runners
    from bot.jobs.worker import JobWorker

    worker = JobWorker(services, job_runners(), services.config.jobs)
    ran = []
    while (job := worker.run_one()) is not None:
        ran.append(job)
        assert len(ran) <= limit, "jobs keep coming"
    return ran
