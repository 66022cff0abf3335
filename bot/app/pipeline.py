"""The inbound pipeline: events routed in batches, one transaction per batch.

Adapters still call ``Runtime.handle(event)`` and get the event's :class:`DispatchResult`
once it is committed, so a platform is acknowledged only after its event is recorded.
Behind that call:

- every event goes to a *lane* chosen by its conversation (``ConversationRef``), so the
  events of one conversation are routed one after the other in arrival order, while
  different conversations proceed in parallel in different lanes;
- a lane takes what is waiting when it becomes free (adaptive batching): a lone event is
  routed at once, and a burst fills batches up to ``[pipeline] batch_size``;
- a batch is one database transaction (group commit): the router runs each event in turn
  inside it and the whole batch is committed once;
- handlers run first without savepoints (optimistic); if one raises, the transaction is
  rolled back and the same batch is routed again with each handler in its own savepoint,
  so the failing handler is rolled back alone and every other piece of work is kept;
- if anything outside a handler fails (a middleware error, a conflicting writer, a lost
  connection), the batch is rolled back and its events are routed again one by one, each in
  its own transaction, so one bad event costs its neighbours a retry, never their work; the
  event that fails alone fails to its caller exactly as it did before batching.
"""

from __future__ import annotations

import asyncio
import logging
import time
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from bot.core.events import Event
from bot.core.logcontext import EVENT_ID
from bot.core.redaction import redact
from bot.core.routing import DispatchResult, HandlerFailed, Router
from storage import repos
from storage.db import Database

__all__ = ["Pipeline"]

log = logging.getLogger(__name__)

#: Seconds of settled batches :meth:`Pipeline.expected_wait` measures the rate over.
_RATE_WINDOW = 10.0


@dataclass
class _Pending:
    event: Event
    future: asyncio.Future[DispatchResult]
    lane: int


class Pipeline:
    """Routes inbound events in per-conversation lanes, one transaction per batch."""

    def __init__(
        self,
        db: Database,
        router: Router,
        *,
        batch_size: int,
        lanes: int,
        on_queued: Callable[[], None],
    ) -> None:
        self.db = db
        self.router = router
        self.batch_size = batch_size
        self.lane_count = lanes
        self.on_queued = on_queued
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queues: list[asyncio.Queue[_Pending]] = []
        self._workers: list[asyncio.Task[None] | None] = []
        #: Figures for benches and tests: batches routed, the largest, batches rolled back
        #: and routed again one by one, and the most lanes writing at the same time.
        self.batches = 0
        self.largest_batch = 0
        self.retried_batches = 0
        #: Batches (or lone events) whose optimistic pass was rolled back and redone.
        self.optimistic_retries = 0
        self.peak_lanes_busy = 0
        self._lanes_busy = 0
        #: For :meth:`expected_wait`: events handed in and not yet settled; the seconds
        #: during which some were (a clock that runs only while there is work); and the
        #: batches settled lately (monotonic time, events, that clock).
        self._unsettled = 0
        self._active_since: float | None = None
        self._active_total = 0.0
        self._settled: deque[tuple[float, int, float]] = deque()

    async def submit(self, event: Event) -> DispatchResult:
        """Route one event; returns once it is committed (or raises what routing raised)."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # first use, or a new event loop (a CLI verb, a test)
            self._loop = loop
            self._queues = [asyncio.Queue() for _ in range(self.lane_count)]
            self._workers = [None] * self.lane_count
            self._unsettled, self._active_since, self._active_total = 0, None, 0.0
            self._settled.clear()
        lane = zlib.crc32(str(event.ref).encode()) % self.lane_count
        pending = _Pending(event, loop.create_future(), lane)
        pending.future.add_done_callback(_retrieved)  # a caller that gave up must not warn
        self._queues[lane].put_nowait(pending)
        if self._unsettled == 0:
            self._active_since = time.monotonic()
        self._unsettled += 1
        worker = self._workers[lane]
        if worker is None or worker.done():  # a lane runs only while it has work
            self._workers[lane] = loop.create_task(self._drain(lane), name=f"siyu-lane-{lane}")
        # The caller may give up waiting (a closed connection); the event is still routed.
        return await asyncio.shield(pending.future)

    def expected_wait(self, ahead: int = 0) -> float:
        """Seconds an event handed in now is expected to wait before it is settled.

        The events before it — those handed in and not settled, or the ``ahead`` the caller
        knows of (handed in or on their way) if more — times the seconds per event the
        pipeline took over the last few seconds *while it had work* (idle time does not
        count, so a quiet pipeline is not mistaken for a slow one). With no such history,
        0 for at most one batch and infinity for more (a deep queue, nothing settled)."""
        waiting = max(self._unsettled, ahead)
        if waiting == 0:
            return 0.0
        now = time.monotonic()
        self._forget_settled_before(now - _RATE_WINDOW)
        events = sum(n for _, n, _ in self._settled) - (self._settled[0][1] if self._settled else 0)
        if events <= 0:
            return 0.0 if waiting <= self.batch_size else float("inf")
        active = self._active_clock(now) - self._settled[0][2]
        return waiting * active / events

    def _active_clock(self, now: float) -> float:
        running = now - self._active_since if self._active_since is not None else 0.0
        return self._active_total + running

    def _forget_settled_before(self, since: float) -> None:
        while self._settled and self._settled[0][0] < since:
            self._settled.popleft()

    async def close(self) -> None:
        """Wait until the events already taken are routed."""
        if self._loop is asyncio.get_running_loop():
            await asyncio.gather(*(w for w in self._workers if w is not None))

    async def _drain(self, lane: int) -> None:
        queue = self._queues[lane]
        while not queue.empty():  # no await between this test and returning: no lost wake-up
            batch = [queue.get_nowait()]
            while len(batch) < self.batch_size and not queue.empty():
                batch.append(queue.get_nowait())
            self._lanes_busy += 1
            self.peak_lanes_busy = max(self.peak_lanes_busy, self._lanes_busy)
            outcomes: list[DispatchResult | BaseException]
            try:
                outcomes = await self.db.run(self._route_batch, [p.event for p in batch])
            except asyncio.CancelledError as exc:
                self._settle(batch, [exc] * len(batch))
                raise
            except Exception as exc:  # the database's thread pool is shut down
                outcomes = [exc] * len(batch)
            finally:
                self._lanes_busy -= 1
            self._settle(batch, outcomes)

    def _settle(
        self, batch: list[_Pending], outcomes: list[DispatchResult | BaseException]
    ) -> None:
        now = time.monotonic()
        self._unsettled = max(0, self._unsettled - len(batch))
        self._settled.append((now, len(batch), self._active_clock(now)))
        if self._unsettled == 0 and self._active_since is not None:
            self._active_total += now - self._active_since
            self._active_since = None
        self._forget_settled_before(now - _RATE_WINDOW)
        queued = False
        for pending, outcome in zip(batch, outcomes, strict=True):
            if not pending.future.done():
                if isinstance(outcome, BaseException):
                    pending.future.set_exception(outcome)
                else:
                    pending.future.set_result(outcome)
                    queued = queued or outcome.queued > 0
        if queued:
            self.on_queued()

    # -- in the database thread ----------------------------------------------------------

    def _route_batch(self, events: list[Event]) -> list[DispatchResult | BaseException]:
        self.batches += 1
        self.largest_batch = max(self.largest_batch, len(events))
        try:  # optimistic: no savepoints; nearly every batch ends here
            return self._route_together(events, isolate=False)
        except Exception as exc:
            repos.forget_cached_ids(self.db.engine)
            self.optimistic_retries += 1
            failure = exc
        if len(events) == 1:
            return [self._route_alone(events[0])]
        if isinstance(failure, HandlerFailed):  # again, each handler in its own savepoint
            try:
                return self._route_together(events, isolate=True)
            except Exception as exc:
                repos.forget_cached_ids(self.db.engine)
                failure = exc
        self.retried_batches += 1
        log.warning(
            "a batch of %d events was rolled back (%s); routing them one by one",
            len(events),
            redact(f"{type(failure).__name__}: {failure}"),
        )
        return [self._route_alone(event) for event in events]

    def _route_together(
        self, events: list[Event], *, isolate: bool
    ) -> list[DispatchResult | BaseException]:
        with self.db.transaction() as session:
            self.router.prefetch(session, events)
            return [self._dispatch(session, event, isolate=isolate) for event in events]

    def _dispatch(self, session: Session, event: Event, *, isolate: bool) -> DispatchResult:
        token = EVENT_ID.set(event.id)  # carried by JSON log records
        try:
            return self.router.dispatch(session, event, isolate=isolate)
        finally:
            EVENT_ID.reset(token)

    def _route_alone(self, event: Event) -> DispatchResult | BaseException:
        try:
            with self.db.transaction() as session:
                self.router.prefetch(session, [event])
                return self._dispatch(session, event, isolate=True)
        except Exception as exc:
            repos.forget_cached_ids(self.db.engine)
            return exc


def _retrieved(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()
