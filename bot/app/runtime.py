"""The running bot: storage, router, adapters, the delivery worker and the job worker.

Adapters call :meth:`Runtime.handle` with a normalized event; the inbound pipeline
(:mod:`bot.app.pipeline`) routes it in the database thread pool — in its conversation's
lane, in a batch that is one transaction — and the call returns once the event is
committed; the delivery worker is woken when replies were queued. Processes that deliver
also run batch jobs (bot/jobs/worker.py).
"""

from __future__ import annotations

import logging

from bot.adapters.base import Adapter
from bot.app.config import Config
from bot.app.pipeline import Pipeline
from bot.app.roles import Role
from bot.app.services import Services
from bot.core.clock import Clock, SystemClock
from bot.core.events import Event
from bot.core.routing import DispatchResult, Router
from bot.core.templating import Renderer
from bot.jobs.worker import JobWorker
from bot.outbox import queue as outbox
from bot.outbox.worker import DeliveryWorker
from handlers import register_handlers
from storage.db import Database

__all__ = ["Runtime"]

log = logging.getLogger(__name__)


class Runtime(Services):
    """Everything one Siyu process runs; adapters are given it, they do not extend it.

    It is the process's :class:`Services` (what jobs and CLI verbs use) with the router,
    the adapters and the delivery worker on top."""

    def __init__(
        self,
        config: Config,
        *,
        db: Database | None = None,
        clock: Clock | None = None,
        renderer: Renderer | None = None,
        role: Role = Role.ALL,
    ) -> None:
        super().__init__(
            db or Database(config.database.url, echo=config.database.echo),
            config,
            renderer or Renderer(),
            clock or SystemClock(),
        )
        self.router = register_handlers(
            Router(config, self.renderer, self.clock, enqueue=outbox.enqueue), config
        )
        self.adapters: dict[str, Adapter] = {}
        self.role = role
        self.worker = DeliveryWorker(
            self.db, self.adapters, self.clock, config.delivery, metrics=self.metrics
        )
        from bot.app.jobs import job_runners

        self.jobs = JobWorker(self, job_runners(), config.jobs)
        self.pipeline = Pipeline(
            self.db,
            self.router,
            batch_size=config.pipeline.batch_size,
            lanes=config.pipeline.lanes,
            on_queued=self.worker.wake,
        )
        self.started = False

    def routing_wait(self, ahead: int = 0) -> float:
        """Seconds an event handed in now is expected to wait before it is routed, with
        ``ahead`` events the caller knows are before it (handed in or on their way)."""
        return self.pipeline.expected_wait(ahead)

    def wake_delivery(self) -> None:
        """Wake the delivery worker: rows are due now."""
        self.worker.wake()

    def add_adapter(self, adapter: Adapter) -> None:
        if adapter.channel in self.adapters:
            raise ValueError(f"an adapter for {adapter.channel!r} is already registered")
        self.adapters[adapter.channel] = adapter

    async def handle(self, event: Event) -> DispatchResult:
        """Route one event (exactly once per platform id); returns once it is committed.

        Delivery is woken when replies were queued."""
        result = await self.pipeline.submit(event)
        channel = event.ref.channel
        if result.duplicate:
            self.metrics.duplicates.labels(channel).inc()
            log.info("event %s (%s) already processed; skipped", event.id, event.dedupe_key)
        else:
            self.metrics.events_in.labels(channel).inc()
        if result.errors:
            self.metrics.handler_errors.labels(channel).inc(len(result.errors))
        return result

    async def start(self) -> None:
        """Start the adapters and, if this process delivers, the delivery worker.

        The schema must be migrated."""
        for adapter in self.adapters.values():
            await adapter.start()
        for channel in self.adapters:  # a channel's counters show 0 before its first event
            for counter in (self.metrics.events_in, self.metrics.handler_errors):
                counter.labels(channel)
        if self.role.delivers:
            self.worker.start()
            self.jobs.start()  # batch work: campaign preparation, console imports
        self.started = True
        log.info(
            "siyu started (role %s): channels %s", self.role, ", ".join(self.adapters) or "(none)"
        )

    async def stop(self) -> None:
        """Stop taking events, let in-flight deliveries finish or requeue them, close storage."""
        if not self.started:
            return
        self.started = False
        for adapter in self.adapters.values():
            try:
                await adapter.stop()
            except Exception:
                log.exception("adapter %s failed to stop cleanly", adapter.channel)
        await self.pipeline.close()
        if self.role.delivers:
            await self.jobs.stop()
        await self.worker.stop()
        log.info("siyu stopped")
