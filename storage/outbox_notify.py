"""Wake-ups for delivery workers in other processes: PostgreSQL LISTEN/NOTIFY on the outbox.

A statement trigger on ``outbox`` (migration 0810) sends ``NOTIFY siyu_outbox`` with every
insert, delivered to listeners when the inserting transaction commits — so a reply queued
by a web process reaches a worker process at once, not at its next poll. The listener keeps
one connection of its own; if it drops, the listener reconnects after a pause (the worker
still polls meanwhile) and wakes the worker once, for what was queued while it was away.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import psycopg
from sqlalchemy.engine import make_url

__all__ = ["CHANNEL", "OutboxNotifications"]

log = logging.getLogger(__name__)

#: The notification channel the outbox trigger notifies.
CHANNEL = "siyu_outbox"


class OutboxNotifications:
    """Calls ``on_notify`` whenever any process commits new outbox rows (PostgreSQL only).

    ``channel`` names another notification channel with the same contract (the batch jobs'
    ``siyu_jobs``, storage/jobs.py)."""

    def __init__(
        self,
        url: str,
        on_notify: Callable[[], None],
        *,
        retry_seconds: float = 5.0,
        channel: str = CHANNEL,
    ) -> None:
        self.dsn = make_url(url).set(drivername="postgresql").render_as_string(False)
        self.on_notify = on_notify
        self.channel = channel
        self.retry_seconds = retry_seconds
        self.listening = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"siyu-listen-{self.channel}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self.dsn, autocommit=True) as conn:
                    await conn.execute(f"LISTEN {self.channel}")
                    self.listening.set()
                    self.on_notify()  # rows queued while nobody listened
                    async for _ in conn.notifies():
                        self.on_notify()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning(
                    "%s notifications: %s; polling only, reconnecting in %gs",
                    self.channel,
                    type(exc).__name__,
                    self.retry_seconds,
                )
            self.listening.clear()
            await asyncio.sleep(self.retry_seconds)
