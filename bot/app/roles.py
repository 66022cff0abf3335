"""Process roles: which parts of Siyu one ``siyu run`` process runs.

``all`` (the default) is one process doing everything. Past one machine, processes split
the work on one PostgreSQL database:

- ``web`` serves HTTP: platform webhooks and callbacks, the APIs, the sandbox, the inbox
  and the console; in Telegram polling mode the web processes contend for the polling
  leader lock and exactly one polls. Any number may run (behind a load balancer).
- ``worker`` delivers from the outbox (claims with ``FOR UPDATE SKIP LOCKED``), runs batch
  jobs (campaign preparation, imports started from the console: bot/jobs/) and the
  channels' batch work (WeCom mass-send confirmation polling). Any number may run; the
  platforms' rate limits are shared through Redis.
- ``scheduler`` runs the one scheduler (scenarios, follow-ups, nightly jobs; it queues the
  verdict of pilots whose period is over) behind the scheduler lock. Run one, or two for a
  warm standby.

Every role serves ``/livez``, ``/readyz`` and ``/metrics``; only ``web`` and ``all``
serve the rest.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["Role"]


class Role(StrEnum):
    """What one process runs (see the module docstring)."""

    ALL = "all"
    WEB = "web"
    WORKER = "worker"
    SCHEDULER = "scheduler"

    @property
    def serves_web(self) -> bool:
        """Webhooks, callbacks, APIs, sandbox, inbox, console: events come in here."""
        return self in (Role.ALL, Role.WEB)

    @property
    def delivers(self) -> bool:
        """Runs a delivery worker, the job worker and the channels' batch work."""
        return self in (Role.ALL, Role.WORKER)

    @property
    def schedules(self) -> bool:
        """Starts the scheduler service (which still runs only while holding its lock)."""
        return self in (Role.ALL, Role.SCHEDULER)
