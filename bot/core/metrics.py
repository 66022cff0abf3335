"""The process's Prometheus metrics: counters and histograms fed where things happen.

One :class:`Metrics` per process (on :class:`bot.app.services.Services`), each with its own
registry, so several runtimes in one test process do not mix. The router's caller counts
events in and handler errors, the delivery worker counts sends, rate limits, retries and
delivery latency, the scheduler its lateness, the batch-job worker its runs and their
duration. Figures read from the database (outbox depth and age, campaign progress, batch
jobs by kind and status) are computed when ``/metrics`` is scraped (bot/web/ops.py). Labels are bounded: channel, purpose, result, job kind.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.registry import Collector

__all__ = ["Metrics", "job_kind"]

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 21600, 86400)
LATENESS_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600)
JOB_BUCKETS = (0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 1800, 3600, 7200)


class Metrics:
    """The series one process exports (see the module docstring)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        #: The collector of figures read from the database, once the web app installs it.
        self.database_collector: Collector | None = None
        r = self.registry
        self.events_in = Counter(
            "siyu_events_in", "Inbound events routed, per channel", ["channel"], registry=r
        )
        self.duplicates = Counter(
            "siyu_events_duplicate",
            "Inbound events already processed (platform retries), per channel",
            ["channel"],
            registry=r,
        )
        self.handler_errors = Counter(
            "siyu_handler_errors", "Handler failures while routing events", ["channel"], registry=r
        )
        self.sends = Counter(
            "siyu_sends",
            "Delivery attempts by result: sent, failed, unreachable, retry, rate_limited",
            ["channel", "purpose", "result"],
            registry=r,
        )
        self.rate_limited = Counter(
            "siyu_rate_limited",
            "Platform 429 / RetryAfter answers to sends",
            ["channel"],
            registry=r,
        )
        self.retries = Counter(
            "siyu_delivery_retries",
            "Sends put back in the queue to try again (transient failures and 429s)",
            ["channel"],
            registry=r,
        )
        self.delivery_latency = Histogram(
            "siyu_delivery_latency_seconds",
            "From queued to delivered",
            ["channel", "purpose"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.claims = Counter(
            "siyu_delivery_claims",
            "Outbox rows claimed for delivery, transactional (claimed first) or marketing",
            ["channel", "class"],
            registry=r,
        )
        self.fair_share_sources = Gauge(
            "siyu_delivery_fair_share_sources",
            "Campaigns, scenarios and other marketing streams sharing this worker's claims",
            registry=r,
        )
        self.scheduler_lateness = Histogram(
            "siyu_scheduler_lateness_seconds",
            "How late scheduled jobs started after their planned time",
            ["job"],
            buckets=LATENESS_BUCKETS,
            registry=r,
        )
        self.job_runs = Counter(
            "siyu_job_runs",
            "Batch-job attempts run by this process, by kind and outcome "
            "(done, retry, failed, refused, lost, stopped)",
            ["kind", "outcome"],
            registry=r,
        )
        self.job_duration = Histogram(
            "siyu_job_run_duration_seconds",
            "How long one attempt of a batch job ran, by kind",
            ["kind"],
            buckets=JOB_BUCKETS,
            registry=r,
        )
        self.scheduler_runs = Counter(
            "siyu_scheduler_runs",
            "Scheduled job runs by outcome (ok, error, missed)",
            ["job", "outcome"],
            registry=r,
        )


def job_kind(job_id: str) -> str:
    """A bounded label for a job id: ``scenario:breakfast`` → ``scenario``."""
    return job_id.split(":", 1)[0] if ":" in job_id and job_id.startswith("scenario") else job_id
