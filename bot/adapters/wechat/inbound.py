"""Never acknowledge what is not stored: the journal of WeChat / WeCom callbacks.

A verified callback is first written to ``wechat_inbound`` (its parsed fields, keyed by the
event's dedupe key) together with the replay check of a plaintext-mode signature, in a
transaction shared with the callbacks arriving at the same time (group commit,
:mod:`storage.group_commit`; each in its own savepoint; taken by the database's threads
before routing work, so a burst being routed never holds the answers up). Only once that row is committed may the platform be answered
``success`` (or a passive reply). If it cannot be written within the reply budget — the
database is locked by a bulk import, the disk is full — the platform gets a 503 and
retries; a retry finds the row if the write landed after all, so nothing is stored twice.

Routing happens after the row is committed. A row stays ``pending`` until the event was
routed; a sweeper redoes pending rows (the router's inbound dedupe makes a redo of work that
did land a no-op), so an acknowledged callback whose processing failed (a locked database,
a crash) is still processed, with a growing wait after each failure (up to an hour). After
:data:`MAX_ATTEMPTS` failures a row is ``failed`` and logged as an error. Routed rows are
deleted after :data:`KEEP_DONE` (the inbound dedupe keeps the ids), failed ones after
:data:`KEEP_FAILED`.

Plaintext-mode signatures cover only token, timestamp and nonce, not the body: each one is
remembered (``wechat_callback_nonces``, shared by every process) with a hash of its body
for twice the replay window, and the same signature with another body is refused (403).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, or_, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from bot.adapters.wechat.callback import CallbackRejected
from bot.core.clock import Clock
from bot.core.redaction import redact
from storage.db import Database, insert_ignore, rowcount
from storage.group_commit import GroupCommit
from storage.wechat_inbound import CallbackNonce, InboundCallback

__all__ = ["KEEP_DONE", "MAX_ATTEMPTS", "CallbackJournal", "Replay", "fields_key"]

log = logging.getLogger(__name__)

#: Routing attempts of one recorded callback before it is marked failed.
MAX_ATTEMPTS = 8
#: How long routed rows are kept.
KEEP_DONE = timedelta(days=1)
#: How long rows given up on are kept (for an operator to look at), then deleted.
KEEP_FAILED = timedelta(days=30)
#: The longest wait between two routing attempts of one row.
MAX_BACKOFF = timedelta(hours=1)


@dataclass(frozen=True)
class Replay:
    """What a plaintext-mode callback's signature vouches for: remembered to refuse replays."""

    signature: str
    nonce: str
    timestamp: int
    body_sha256: str

    @classmethod
    def of(cls, signature: str, nonce: str, timestamp: str, body: bytes) -> Replay:
        return cls(signature, nonce[:64], int(timestamp), hashlib.sha256(body).hexdigest())


def fields_key(channel: str, fields: dict) -> str:
    """A stable key for a callback that carries no event id (the same callback, same key)."""
    canonical = json.dumps(fields, sort_keys=True, ensure_ascii=False)
    return f"{channel}:cb:{hashlib.sha256(canonical.encode()).hexdigest()}"


class CallbackJournal:
    """The journal of one channel's callbacks (see the module docstring)."""

    #: Seconds between sweeps for pending rows.
    sweep_interval = 15.0
    #: A pending row younger than this (by the clock) is left to the request routing it.
    sweep_min_age = timedelta(seconds=30)

    def __init__(self, db: Database, clock: Clock, channel: str, replay_window: float) -> None:
        self.db = db
        self.clock = clock
        self.channel = channel
        self.replay_window = timedelta(seconds=replay_window)
        self._inflight: set[str] = set()
        # Callbacks arriving together are recorded (and marked routed) in one transaction,
        # ahead of routing work queued for the database: the platform waits on the answer.
        self._intake = GroupCommit(db, first=True)

    # -- recording (before the answer) -----------------------------------------------------

    async def record(
        self,
        key: str | None,
        user_id: str,
        fields: dict,
        replay: Replay | None,
        budget: float,
    ) -> str | None:
        """Commit the callback's row (and its replay check) within ``budget`` seconds.

        Returns the row's status before this call: ``None`` for a new row, ``"pending"``,
        ``"done"`` or ``"failed"`` for a platform retry. Raises CallbackRejected: 403 for a
        replayed signature, 503 when it could not be stored in time (the platform retries).
        """
        try:
            return await asyncio.wait_for(
                self._intake.run(self._record, key, user_id, fields, replay), budget
            )
        except CallbackRejected:
            raise
        except TimeoutError:
            raise CallbackRejected(
                503, f"callback not stored within {budget:g}s; not acknowledged"
            ) from None
        except (SQLAlchemyError, OSError) as exc:
            log.warning("%s: callback not stored (%s); not acknowledged", self.channel, exc)
            raise CallbackRejected(503, "callback not stored; not acknowledged") from None

    def _record(
        self,
        session: Session,
        key: str | None,
        user_id: str,
        fields: dict,
        replay: Replay | None,
    ) -> str | None:
        now = self.clock.now()
        if replay is not None:
            self._check_replay(session, replay, now)
        if key is None:
            return "done"
        inserted = insert_ignore(
            session,
            InboundCallback,
            {
                "key": key,
                "channel": self.channel,
                "user_id": user_id[:128],
                "fields": fields,
                "status": "pending",
                "attempts": 0,
                "received_at": now,
            },
            ["key"],
        )
        if inserted:
            return None
        return session.scalar(select(InboundCallback.status).where(InboundCallback.key == key))

    def _check_replay(self, session: Session, replay: Replay, now) -> None:
        session.execute(
            delete(CallbackNonce).where(CallbackNonce.seen_at < now - 2 * self.replay_window)
        )
        row = {
            "channel": self.channel,
            "signature": replay.signature,
            "nonce": replay.nonce,
            "timestamp": replay.timestamp,
            "body_sha256": replay.body_sha256,
            "seen_at": now,
        }
        if insert_ignore(session, CallbackNonce, row, ["channel", "signature"]):
            return
        seen = session.get(CallbackNonce, (self.channel, replay.signature))
        if seen is not None and seen.body_sha256 != replay.body_sha256:
            raise CallbackRejected(403, "signature already used for another body (replay)")

    # -- routing (after the answer, or before it when quick) --------------------------------

    @property
    def in_flight(self) -> int:
        """Recorded callbacks being routed now (handed to :meth:`route`, not finished)."""
        return len(self._inflight)

    async def route(self, key: str | None, work: Callable[[], Awaitable[object]]) -> object:
        """Run ``work`` for the recorded row ``key`` and mark it done; on failure leave it
        pending for the sweeper (the error is recorded, redacted) and return None."""
        if key is not None:
            self._inflight.add(key)
        try:
            result = await work()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("%s: callback %s not routed yet: %s", self.channel, key, exc)
            if key is not None:
                with contextlib.suppress(Exception):
                    await self.db.run(self._failed, key, f"{type(exc).__name__}: {exc}")
            return None
        finally:
            if key is not None:
                self._inflight.discard(key)
        if key is not None:
            try:
                await self._intake.run(self._done, key)
            except Exception as exc:  # routed; the sweeper's redo will be a duplicate
                log.warning("%s: callback %s routed, not marked done: %s", self.channel, key, exc)
        return result

    def _done(self, session: Session, key: str) -> None:
        session.execute(
            update(InboundCallback)
            .where(InboundCallback.key == key)
            .values(status="done", processed_at=self.clock.now(), last_error=None)
        )

    def _failed(self, key: str, error: str) -> None:
        with self.db.transaction() as session:
            row = session.get(InboundCallback, key)
            if row is None or row.status != "pending":
                return
            row.attempts += 1
            row.last_error = redact(error)[:2000]
            row.processed_at = self.clock.now()  # of a pending row: when routing last failed
            if row.attempts >= MAX_ATTEMPTS:
                row.status = "failed"
                log.error(
                    "%s: callback %s failed %d times; given up: %s",
                    self.channel,
                    key,
                    row.attempts,
                    row.last_error,
                )

    # -- the sweeper -----------------------------------------------------------------------

    def _pending(self, limit: int) -> list[tuple[str, dict]]:
        """Pending rows due for another attempt (backing off after each failure)."""
        now = self.clock.now()
        with self.db.sessions() as session:
            rows = session.execute(
                select(
                    InboundCallback.key,
                    InboundCallback.fields,
                    InboundCallback.attempts,
                    InboundCallback.processed_at,
                )
                .where(
                    InboundCallback.channel == self.channel,
                    InboundCallback.status == "pending",
                    InboundCallback.received_at <= now - self.sweep_min_age,
                )
                .order_by(InboundCallback.received_at)
                .limit(limit)
            ).all()
        due = []
        for key, fields, attempts, failed_at in rows:
            wait = min(MAX_BACKOFF, timedelta(seconds=self.sweep_interval * 2**attempts))
            if key not in self._inflight and (failed_at is None or now - failed_at >= wait):
                due.append((key, fields))
        return due

    def _purge(self) -> int:
        now = self.clock.now()
        with self.db.transaction() as session:
            result = session.execute(
                delete(InboundCallback).where(
                    InboundCallback.channel == self.channel,
                    or_(
                        (InboundCallback.status == "done")
                        & (InboundCallback.processed_at < now - KEEP_DONE),
                        (InboundCallback.status == "failed")
                        & (InboundCallback.processed_at < now - KEEP_FAILED),
                    ),
                )
            )
            return rowcount(result)

    async def sweep(self, process: Callable[[dict], Awaitable[object]], limit: int = 200) -> int:
        """Route pending rows again (oldest first); returns how many were routed."""
        routed = 0
        for key, fields in await self.db.run(self._pending, limit):
            outcome = await self.route(key, functools.partial(_route_once, process, fields))
            routed += outcome is _ROUTED
        await self.db.run(self._purge)
        return routed

    async def run_sweeper(self, process: Callable[[dict], Awaitable[object]]) -> None:
        """Sweep forever, every :attr:`sweep_interval` seconds (cancel to stop)."""
        while True:
            try:
                count = await self.sweep(process)
                if count:
                    log.info(
                        "%s: %d recorded callback(s) routed by the sweeper", self.channel, count
                    )
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s: callback sweep failed", self.channel)
            await asyncio.sleep(self.sweep_interval)


_ROUTED = object()


async def _routed(work: Awaitable[object]) -> object:
    await work
    return _ROUTED


def _route_once(process: Callable[[dict], Awaitable[object]], fields: dict) -> Awaitable[object]:
    return _routed(process(fields))
