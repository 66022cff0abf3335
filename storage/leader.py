"""Exactly one leader across processes for one named duty (the scheduler, Telegram polling).

PostgreSQL: a session-level advisory lock (``pg_try_advisory_lock``) held on a connection
of its own for as long as the process leads; the server releases it when the process dies,
so a standby takes over. SQLite (one machine by nature): an exclusive ``flock`` on a file
next to the database, released by the kernel when the process dies.
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

__all__ = ["LeaderLock", "lock_key"]

log = logging.getLogger(__name__)


def lock_key(tag: bytes) -> int:
    """The advisory lock key of a duty: its eight-byte tag as a positive 64-bit number."""
    if len(tag) != 8:
        raise ValueError("a lock tag is exactly 8 bytes")
    return int.from_bytes(tag, "big") & 0x7FFFFFFFFFFFFFFF


class LeaderLock:
    """A non-blocking, process-wide lock on one database for the duty ``name``.

    ``tag`` (8 bytes) makes the PostgreSQL advisory key; ``name`` names the lock file on
    SQLite (``<database>.<name>.lock``). See the module docstring."""

    def __init__(self, url: str, name: str, tag: bytes) -> None:
        self.url = url
        self.name = name
        self.key = lock_key(tag)
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
            log.warning("%s lock: lost the lock connection", self.name)
            self.release()
            return False

    def release(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": self.key})
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
        if conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": self.key}).scalar():
            self._conn = conn
            return True
        conn.close()
        engine.dispose()
        self._engine = None
        return False

    def _acquire_file(self) -> bool:
        database = make_url(self.url).database or ""
        if not database or database == ":memory:" or database.startswith("file:"):
            path = Path(os.environ.get("TMPDIR", "/tmp")) / f"siyu-{self.name}-{os.getpid()}.lock"
        else:
            path = Path(database).with_name(Path(database).name + f".{self.name}.lock")
        handle = open(path, "a+")  # noqa: SIM115 - held open while the lock is held
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            return False
        self._file = handle
        return True
