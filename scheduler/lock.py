"""Exactly one scheduler across processes.

PostgreSQL: a session-level advisory lock (``pg_try_advisory_lock``) held on a connection
of its own for as long as the process runs the scheduler; the server releases it when the
process dies, so a standby takes over. SQLite (one machine by nature): an exclusive
``flock`` on a file next to the database, released by the kernel when the process dies.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from pathlib import Path
from typing import TextIO

from sqlalchemy import create_engine, text
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.pool import NullPool

__all__ = ["LOCK_KEY", "SchedulerLock"]

log = logging.getLogger(__name__)

#: The advisory lock key: "siyu-sch" as a 64-bit number.
LOCK_KEY = int.from_bytes(b"siyu-sch", "big") & 0x7FFFFFFFFFFFFFFF


class SchedulerLock:
    """A non-blocking, process-wide lock on one database (see the module docstring)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.dialect = make_url(url).get_backend_name()
        self._conn: Connection | None = None
        self._engine: Engine | None = None
        self._file: TextIO | None = None

    @property
    def held(self) -> bool:
        return self._conn is not None or self._file is not None

    def acquire(self) -> bool:
        """Take the lock if nobody holds it; True if this process holds it now."""
        if self.held:
            return True
        if self.dialect == "postgresql":
            return self._acquire_pg()
        return self._acquire_file()

    def alive(self) -> bool:
        """Whether the lock is still ours (the PostgreSQL connection may have dropped)."""
        if self._conn is None:
            return self._file is not None
        try:
            self._conn.execute(text("SELECT 1"))
            return True
        except Exception:
            log.warning("scheduler lock: lost the lock connection")
            self.release()
            return False

    def release(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": LOCK_KEY})
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
        if self._file is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None

    def _acquire_pg(self) -> bool:
        engine = self._engine = create_engine(self.url, poolclass=NullPool)
        conn = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        if conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": LOCK_KEY}).scalar():
            self._conn = conn
            return True
        conn.close()
        engine.dispose()
        self._engine = None
        return False

    def _acquire_file(self) -> bool:
        database = make_url(self.url).database or ""
        if not database or database == ":memory:" or database.startswith("file:"):
            path = Path(os.environ.get("TMPDIR", "/tmp")) / f"siyu-scheduler-{os.getpid()}.lock"
        else:
            path = Path(database).with_name(Path(database).name + ".scheduler.lock")
        handle = open(path, "a+")  # noqa: SIM115 - held open while the lock is held
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            return False
        self._file = handle
        return True
