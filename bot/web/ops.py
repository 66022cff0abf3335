"""Operators' endpoints of every process: ``/livez``, ``/readyz`` and ``/metrics``.

- ``/livez``: the process answers (its event loop runs). Never touches the database.
- ``/readyz``: ready to take traffic: the database is migrated to the code's head and takes
  a write, and the runtime and its adapters have started. 503 with the reasons otherwise.
- ``/metrics``: Prometheus text format: the process's counters and histograms
  (bot/core/metrics.py) plus figures read from the database at scrape time by
  :class:`DatabaseCollector`. On the web port it needs the API key (the authorization
  table); with ``[metrics] port`` set it is served instead on 127.0.0.1 at that port by
  :class:`MetricsServer`, without a key.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from storage.campaigns import Campaign
from storage.jobs import BatchJob
from storage.models import OutboxMessage

if TYPE_CHECKING:
    from bot.app.runtime import Runtime

__all__ = ["DatabaseCollector", "MetricsServer", "ops_routes", "readiness"]

log = logging.getLogger(__name__)

#: Outbox states still waiting to go out (depth and age).
WAITING = ("pending", "sending")
#: Campaign states whose progress is exported.
LIVE_CAMPAIGNS = ("piloting", "launch_pending", "running", "paused")
#: Batch-job states counted by kind (done and cancelled jobs are history, not load).
JOB_STATES = ("queued", "running", "failed")


class DatabaseCollector(Collector):
    """Outbox depth and oldest age by channel and purpose (one query), campaign progress and
    batch jobs by kind and status."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def describe(self) -> list[Any]:
        return []  # collected only on scrape: no query at registration

    def collect(self) -> Iterator[GaugeMetricFamily]:
        depth = GaugeMetricFamily(
            "siyu_outbox_depth",
            "Outbox rows waiting to be delivered",
            labels=["channel", "purpose"],
        )
        age = GaugeMetricFamily(
            "siyu_outbox_oldest_age_seconds",
            "Age of the oldest outbox row waiting to be delivered",
            labels=["channel", "purpose"],
        )
        progress = GaugeMetricFamily(
            "siyu_campaign_messages",
            "Messages of live campaigns by delivery status",
            labels=["campaign", "status"],
        )
        jobs = GaugeMetricFamily(
            "siyu_jobs",
            "Batch jobs by kind and status (queued, running, failed)",
            labels=["kind", "status"],
        )
        try:
            waiting, campaigns, counted = self._read()
        except Exception:
            log.exception("metrics: cannot read the outbox")
            waiting, campaigns, counted = [], [], []
        now = self.runtime.clock.now()
        for channel, purpose, count, oldest in waiting:
            depth.add_metric([channel, purpose], count)
            age.add_metric([channel, purpose], max((now - oldest).total_seconds(), 0.0))
        for name, status, count in campaigns:
            progress.add_metric([name, status], count)
        for kind, status, count in counted:
            jobs.add_metric([kind, status], count)
        yield depth
        yield age
        yield progress
        yield jobs

    def _read(self) -> tuple[list[Any], list[Any], list[Any]]:
        with self.runtime.db.sessions() as session:
            waiting = session.execute(
                select(
                    OutboxMessage.channel,
                    OutboxMessage.purpose,
                    func.count(),
                    func.min(OutboxMessage.created_at),
                )
                .where(OutboxMessage.status.in_(WAITING))
                .group_by(OutboxMessage.channel, OutboxMessage.purpose)
            ).all()
            campaigns = session.execute(
                select(Campaign.name, OutboxMessage.status, func.count())
                .join(
                    OutboxMessage,
                    (OutboxMessage.source_kind == "campaign")
                    & (OutboxMessage.source_id == Campaign.id),
                )
                .where(Campaign.status.in_(LIVE_CAMPAIGNS))
                .group_by(Campaign.name, OutboxMessage.status)
            ).all()
            counted = session.execute(
                select(BatchJob.kind, BatchJob.status, func.count())
                .where(BatchJob.status.in_(JOB_STATES))
                .group_by(BatchJob.kind, BatchJob.status)
            ).all()
        return list(waiting), list(campaigns), list(counted)


def _collector_installed(runtime: Runtime) -> None:
    metrics = runtime.metrics
    if metrics.database_collector is None:
        metrics.database_collector = DatabaseCollector(runtime)
        metrics.registry.register(metrics.database_collector)


def readiness(runtime: Runtime) -> list[str]:
    """Why this process is not ready (empty: ready). Runs in the database thread pool."""
    from bot.web.app import _ping

    reasons = []
    if not runtime.started:
        reasons.append("not started")
    for channel, adapter in runtime.adapters.items():
        ready = getattr(adapter, "ready", None)
        if isinstance(ready, asyncio.Event) and not ready.is_set():
            reasons.append(f"{channel} not connected")
    try:
        migrated = runtime.db.at_head()
    except Exception:
        migrated = True  # unreachable: the write probe below says so
    if not migrated:
        reasons.append("database not migrated")
    elif problem := _ping(runtime):
        reasons.append(problem)
    return reasons


def ops_routes(runtime: Runtime) -> list[BaseRoute]:
    """``/livez``, ``/readyz``, and ``/metrics`` unless it has a port of its own."""
    _collector_installed(runtime)

    async def livez(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "role": str(runtime.role)})

    async def readyz(request: Request) -> JSONResponse:
        reasons = await runtime.db.run(readiness, runtime)
        body: dict[str, Any] = {"status": "not ready" if reasons else "ready"}
        body["role"] = str(runtime.role)
        if reasons:
            body["reasons"] = reasons
        return JSONResponse(body, status_code=503 if reasons else 200)

    async def metrics(request: Request) -> Response:
        body = await runtime.db.run(generate_latest, runtime.metrics.registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    routes: list[BaseRoute] = [Route("/livez", livez), Route("/readyz", readyz)]
    config = runtime.config.metrics
    if config.enabled and not config.port:
        routes.append(Route("/metrics", metrics))
    return routes


class MetricsServer:
    """``/metrics`` on 127.0.0.1:``[metrics] port`` (prometheus-client's own server)."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._server: Any = None

    async def start(self) -> None:
        _collector_installed(self.runtime)
        port = self.runtime.config.metrics.port
        self._server, _ = start_http_server(
            port, addr="127.0.0.1", registry=self.runtime.metrics.registry
        )
        log.info("metrics: http://127.0.0.1:%d/metrics", port)

    async def stop(self) -> None:
        if self._server is not None:
            with contextlib.suppress(Exception):
                self._server.shutdown()
                self._server.server_close()
            self._server = None
