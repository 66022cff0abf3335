"""Group commit: small write units from many concurrent callers share one transaction.

Each caller awaits :meth:`GroupCommit.run` with a function ``fn(session, *args)``. The units
waiting when the writer is free are run in one transaction, each inside its own savepoint
(a unit that raises is rolled back alone and its exception goes to its caller), and
committed together; the call returns only once its unit is committed. If the transaction
itself fails (a lost connection, a locked database), each unit of the batch is run again
alone in its own transaction, so one caller's trouble is never another's loss.

With ``savepoints=False`` (for units that only fail when the database does, such as an
``INSERT .. ON CONFLICT DO NOTHING``) the units run without savepoints, and a unit that
raises has every unit of its batch run again alone, as above: the same outcome, two
statements fewer per unit.

With ``first=True`` the batches go ahead of the database's other queued work
(:meth:`Database.run_first`): for writes a platform waits on against a deadline.

A lone unit is committed at once; under load, units arriving while a batch is written
form the next batch (up to ``max_batch``), so commits grow with the load, not per unit.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy.orm import Session

from storage.db import Database

__all__ = ["GroupCommit"]

T = TypeVar("T")

_Unit = tuple[Callable[..., Any], tuple[Any, ...], "asyncio.Future[Any]"]


class GroupCommit:
    """Batches callers' write units into shared transactions (see the module docstring)."""

    def __init__(
        self,
        db: Database,
        *,
        max_batch: int = 200,
        savepoints: bool = True,
        first: bool = False,
    ) -> None:
        self.db = db
        self.max_batch = max_batch
        self.savepoints = savepoints
        self._run = db.run_first if first else db.run
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: list[_Unit] = []
        self._writer: asyncio.Task[None] | None = None
        #: Figures: transactions committed and the largest batch.
        self.batches = 0
        self.largest_batch = 0

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(session, *args)`` in a shared transaction; returns once it is committed."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._loop, self._queue, self._writer = loop, [], None
        future: asyncio.Future[T] = loop.create_future()
        future.add_done_callback(_retrieved)  # a caller that gave up must not warn
        self._queue.append((fn, args, future))
        if self._writer is None or self._writer.done():
            self._writer = loop.create_task(self._drain())
        return await asyncio.shield(future)

    async def _drain(self) -> None:
        while self._queue:  # no await between this test and returning: no lost wake-up
            batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
            units = [(fn, args) for fn, args, _ in batch]
            try:
                outcomes = await self._run(self._write, units)
            except Exception as exc:  # the database's thread pool is shut down
                outcomes = [exc] * len(batch)
            for (_, _, future), outcome in zip(batch, outcomes, strict=True):
                if future.done():
                    continue
                if isinstance(outcome, BaseException):
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome)

    def _write(self, units: list[tuple[Callable[..., Any], tuple[Any, ...]]]) -> list[Any]:
        self.batches += 1
        self.largest_batch = max(self.largest_batch, len(units))
        if len(units) == 1:
            return [self._alone(*units[0])]
        try:
            with self.db.transaction() as session:
                if not self.savepoints:
                    return [fn(session, *args) for fn, args in units]
                return [self._in_savepoint(session, fn, args) for fn, args in units]
        except Exception:
            return [self._alone(fn, args) for fn, args in units]

    @staticmethod
    def _in_savepoint(session: Session, fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        try:
            with session.begin_nested():
                return fn(session, *args)
        except Exception as exc:
            return exc

    def _alone(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        try:
            with self.db.transaction() as session:
                return fn(session, *args)
        except Exception as exc:
            return exc


def _retrieved(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()
