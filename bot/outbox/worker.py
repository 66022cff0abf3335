"""The delivery worker: drains the outbox through the adapters and records each result.

It claims transactional rows (replies, staff answers) before marketing ones, and
concurrent campaigns in fair shares (:func:`bot.outbox.queue.claim_due`); woken while its
hands are full, it still claims what is transactional, so a reply never waits for a
campaign's batch to finish.

Messages to one chat go out in order, one after another (each waits for the one claimed
before it to the same chat: its lane); different chats are served concurrently. The running
worker claims more as soon as half its claims are done, so a rate-limited channel never
idles between batches, and renews the leases of what it still holds. Transient failures are
retried with backoff, ``RetryAfter`` is honoured, an unreachable recipient is marked so. On
stop, in-flight sends finish (within a grace period) and every claim not finished goes back
to the queue.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections import defaultdict
from collections.abc import Mapping
from datetime import timedelta

from sqlalchemy import update
from sqlalchemy.orm import Session

from bot.adapters.base import (
    Adapter,
    OutboundMessage,
    PermanentError,
    RecipientUnreachable,
    RetryAfter,
    SendReceipt,
)
from bot.app.config import DeliveryConfig
from bot.core.clock import Clock
from bot.core.logcontext import OUTBOX_ID
from bot.core.metrics import Metrics
from bot.core.redaction import redact
from bot.outbox.hold import hold_marketing_in_handoff
from bot.outbox.queue import (
    Backoff,
    Source,
    claim_due,
    marketing_sources,
    release_claims,
    release_orphans,
    renew_claims,
    to_outbound,
)
from bot.outbox.states import OutboxStatus, is_transactional, transition
from storage.db import Database
from storage.models import OutboxMessage
from storage.outbox_notify import OutboxNotifications
from storage.repos import mark_unreachable

__all__ = ["DeliveryWorker"]

log = logging.getLogger(__name__)


class DeliveryWorker:
    """Claims due outbox rows and sends them through the adapter of their channel."""

    def __init__(
        self,
        db: Database,
        adapters: Mapping[str, Adapter],
        clock: Clock,
        config: DeliveryConfig | None = None,
        *,
        metrics: Metrics | None = None,
    ) -> None:
        self.db = db
        self.metrics = metrics or Metrics()
        self.adapters = adapters
        self.clock = clock
        self.config = config or DeliveryConfig()
        self.backoff = Backoff(self.config.backoff_base_seconds, self.config.backoff_max_seconds)
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._lanes: dict[tuple[str, str], asyncio.Task] = {}
        self._sources: list[Source] = []
        self.notifications: OutboxNotifications | None = None
        self._sources_read = float("-inf")  # time.monotonic() of the last read

    def wake(self) -> None:
        """Tell the worker new rows are due (it also polls; on PostgreSQL a NOTIFY from any
        process that queued rows wakes it too)."""
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name="siyu-delivery")

    async def stop(self) -> None:
        """Stop claiming; let in-flight sends finish within the grace period; requeue the rest."""
        self._stopping.set()
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(
                    asyncio.shield(self._task), self.config.shutdown_grace_seconds
                )
            except TimeoutError:
                log.warning("delivery: grace period over, cancelling in-flight sends")
                self._task.cancel()
                await asyncio.gather(self._task, return_exceptions=True)
        released = await self.db.run(self._release)
        if released:
            log.info("delivery: %d claimed message(s) returned to the queue", released)

    def _release(self) -> int:
        with self.db.transaction() as session:
            return release_claims(session, self.worker_id)

    async def recover(self) -> int:
        """On SQLite (one process by design) requeue claims a crashed run left behind.

        On PostgreSQL several workers may be alive, so a dead worker's claims are taken
        over only when their lease runs out.
        """
        if self.db.is_postgres:
            return 0

        def requeue() -> int:
            with self.db.transaction() as session:
                return release_orphans(session)

        count = await self.db.run(requeue)
        if count:
            log.warning("delivery: requeued %d message(s) claimed before a crash", count)
        return count

    async def run(self) -> None:
        log.info("delivery worker %s started for %s", self.worker_id, ", ".join(self.adapters))
        await self.recover()
        heartbeat = asyncio.create_task(self._keep_leases(), name="siyu-delivery-leases")
        if self.db.is_postgres:  # rows queued by other processes wake this one at once
            self.notifications = OutboxNotifications(self.db.url, self.wake)
            self.notifications.start()
        inflight: set[asyncio.Task] = set()
        size = self.config.batch_size
        try:
            while not self._stopping.is_set():
                # cleared before the claim: a wake during it is kept for the next round
                woken = self._wake.is_set()
                self._wake.clear()
                claimed = 0
                room = len(inflight) <= size // 2
                # with room: claim everything due; woken while full (new rows): only what is
                # transactional, so a reply does not wait behind the campaign claims in flight
                if self.adapters and (room or woken):
                    limit = size - len(inflight) if room else max(size // 2, 1)
                    try:
                        rows = await self.db.run(self._claim, limit, room)
                    except Exception:
                        log.exception("delivery: claim failed; retrying after a pause")
                        rows = []
                    for message in rows:
                        task = asyncio.create_task(self._deliver_in_lane(message))
                        inflight.add(task)
                        task.add_done_callback(inflight.discard)
                    claimed = len(rows)
                full = len(inflight) > size // 2
                if (claimed or not room) and not full:
                    # more may be due right away; or the claims in flight finished during a
                    # claim of transactional rows only: claim the rest now, not at the poll
                    continue
                # wait for room (half the claims done), new rows (wake) or the next poll
                waits: list[asyncio.Task[object]] = [asyncio.create_task(self._wake.wait())]
                if full:
                    waits.append(asyncio.create_task(self._half_done(inflight, size)))
                timeout = None if claimed else self.config.poll_interval_seconds
                _, pending = await asyncio.wait(
                    waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
                for w in pending:
                    w.cancel()
        finally:
            if inflight:
                await asyncio.gather(*inflight, return_exceptions=True)
            heartbeat.cancel()
            await asyncio.gather(heartbeat, return_exceptions=True)
            if self.notifications is not None:
                await self.notifications.stop()

    async def _keep_leases(self) -> None:
        """Renew this worker's leases while it works, every third of a lease.

        A message can wait behind others to a rate-limited chat (20 a minute in a Telegram
        group) for longer than one lease; without renewal another worker would take it over
        and send it a second time.
        """
        while True:
            await asyncio.sleep(self.config.lease_seconds / 3)
            try:
                await self.db.run(self._renew_leases)
            except Exception:
                log.exception("delivery: could not renew leases")

    def _renew_leases(self) -> int:
        with self.db.transaction() as session:
            return renew_claims(
                session,
                self.worker_id,
                self.clock.now() + timedelta(seconds=self.config.lease_seconds),
            )

    @staticmethod
    async def _half_done(inflight: set[asyncio.Task], size: int) -> None:
        while len(inflight) > size // 2:
            await asyncio.wait(set(inflight), return_when=asyncio.FIRST_COMPLETED)

    async def _deliver_in_lane(self, message: OutboundMessage) -> None:
        """Deliver after the message claimed before it to the same chat (if any)."""
        key = (message.channel, message.chat_id)
        previous = self._lanes.get(key)
        current = asyncio.current_task()
        assert current is not None  # runs as its own task
        self._lanes[key] = current
        try:
            if previous is not None:
                await asyncio.gather(previous, return_exceptions=True)
                if self._stopping.is_set():
                    return  # stays claimed; stop() puts it back in the queue
            await self._deliver(message)
        finally:
            if self._lanes.get(key) is current:
                del self._lanes[key]

    async def drain_once(self) -> int:
        """Claim one batch and deliver it; returns how many rows were handled."""
        if not self.adapters:
            return 0
        rows = await self.db.run(self._claim)
        if not rows:
            return 0
        by_chat: dict[tuple[str, str], list[OutboundMessage]] = defaultdict(list)
        for message in rows:
            by_chat[(message.channel, message.chat_id)].append(message)
        await asyncio.gather(*(self._send_in_order(msgs) for msgs in by_chat.values()))
        return len(rows)

    def _claim(self, limit: int | None = None, marketing: bool = True) -> list[OutboundMessage]:
        channels = list(self.adapters)
        if marketing:
            self._refresh_sources(channels)
        with self.db.transaction() as session:
            now = self.clock.now()
            rows = claim_due(
                session,
                worker=self.worker_id,
                now=now,
                lease=timedelta(seconds=self.config.lease_seconds),
                limit=limit or self.config.batch_size,
                channels=channels,
                sources=self._sources,
                marketing=marketing,
            )
            for row in rows:
                klass = "transactional" if is_transactional(row.purpose) else "marketing"
                self.metrics.claims.labels(row.channel, klass).inc()
            held = hold_marketing_in_handoff(session, rows, now)
            return [to_outbound(r) for r in rows if r.id not in held]

    def _refresh_sources(self, channels: list[str]) -> None:
        """Re-read which campaigns and scenarios have rows waiting, every little while.

        A source that appeared since is served from the oldest-rows share until the next
        read (``[delivery] fair_share_refresh_seconds``)."""
        moment = time.monotonic()
        if moment - self._sources_read < self.config.fair_share_refresh_seconds:
            return
        with self.db.sessions() as session:  # a read of its own: SQLite's claim writes first
            self._sources = marketing_sources(session, channels)
        self._sources_read = moment
        self.metrics.fair_share_sources.set(len(self._sources))

    async def _send_in_order(self, messages: list[OutboundMessage]) -> None:
        for i, message in enumerate(messages):
            if self._stopping.is_set() and i > 0:
                return  # the rest stays claimed and is released by stop()
            await self._deliver(message)

    async def _deliver(self, message: OutboundMessage) -> None:
        adapter = self.adapters[message.channel]
        OUTBOX_ID.set(message.outbox_id)  # this task's own context: the adapter's logs too
        ids = {"outbox_id": message.outbox_id}
        try:
            receipt = await adapter.send(message)
        except RetryAfter as exc:
            log.info(
                "delivery %s: platform asks to wait %.1fs",
                message.outbox_id,
                exc.seconds,
                extra=ids,
            )
            self._count(message, "rate_limited")
            self.metrics.rate_limited.labels(message.channel).inc()
            self.metrics.retries.labels(message.channel).inc()
            await self.db.run(self._record_retry_after, message, exc.seconds)
        except RecipientUnreachable as exc:
            log.warning("delivery %s: recipient unreachable: %s", message.outbox_id, exc, extra=ids)
            self._count(message, "unreachable")
            await self.db.run(self._record_unreachable, message, redact(exc))
        except PermanentError as exc:
            log.warning("delivery %s failed permanently: %s", message.outbox_id, exc, extra=ids)
            self._count(message, "failed")
            await self.db.run(self._record_final, message, "failed", redact(exc))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("delivery %s: transient failure: %r", message.outbox_id, exc, extra=ids)
            self._count(message, "retry")
            self.metrics.retries.labels(message.channel).inc()
            await self.db.run(self._record_transient, message, redact(repr(exc)))
        else:
            await self.db.run(self._record_sent, message, receipt)
            self._count(message, "sent")
            if message.queued_at is not None:
                waited = (self.clock.now() - message.queued_at).total_seconds()
                self.metrics.delivery_latency.labels(message.channel, message.purpose).observe(
                    max(waited, 0.0)
                )

    def _count(self, message: OutboundMessage, result: str) -> None:
        self.metrics.sends.labels(message.channel, message.purpose, result).inc()

    def _mine(self, session: Session, message: OutboundMessage):
        return (
            update(OutboxMessage)
            .where(OutboxMessage.id == message.outbox_id)
            .where(OutboxMessage.claimed_by == self.worker_id)
            .values(claimed_by=None, lease_until=None)
        )

    def _record_sent(self, message: OutboundMessage, receipt: SendReceipt) -> None:
        with self.db.transaction() as session:
            session.execute(
                self._mine(session, message).values(
                    status=transition(OutboxStatus.SENDING, receipt.status).value,
                    sent_at=self.clock.now() if receipt.status == OutboxStatus.SENT else None,
                    platform_message_id=receipt.platform_message_id,
                    last_error=None,
                )
            )

    def _record_final(self, message: OutboundMessage, status: str, error: str) -> None:
        with self.db.transaction() as session:
            session.execute(
                self._mine(session, message).values(
                    status=transition(OutboxStatus.SENDING, status).value,
                    last_error=error,
                    attempts=OutboxMessage.attempts + 1,
                )
            )

    def _record_unreachable(self, message: OutboundMessage, error: str) -> None:
        with self.db.transaction() as session:
            session.execute(
                self._mine(session, message).values(
                    status=transition(OutboxStatus.SENDING, OutboxStatus.UNREACHABLE).value,
                    last_error=error,
                    attempts=OutboxMessage.attempts + 1,
                )
            )
            mark_unreachable(session, message.channel, message.user_id, error)

    def _record_retry_after(self, message: OutboundMessage, seconds: float) -> None:
        with self.db.transaction() as session:
            session.execute(
                self._mine(session, message).values(
                    status=transition(OutboxStatus.SENDING, OutboxStatus.PENDING).value,
                    next_attempt_at=self.clock.now() + timedelta(seconds=seconds),
                    last_error=f"retry after {seconds:g}s",
                )
            )

    def _record_transient(self, message: OutboundMessage, error: str) -> None:
        with self.db.transaction() as session:
            row = session.get(OutboxMessage, message.outbox_id)
            if row is None or row.claimed_by != self.worker_id:
                return
            row.attempts += 1
            row.last_error = error
            row.claimed_by = row.lease_until = None
            if row.attempts >= self.config.max_attempts:
                row.status = transition(row.status, OutboxStatus.FAILED).value
            else:
                row.status = transition(row.status, OutboxStatus.PENDING).value
                row.next_attempt_at = self.clock.now() + timedelta(
                    seconds=self.backoff.delay(row.attempts)
                )
