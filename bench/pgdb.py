"""A throwaway PostgreSQL database for a benchmark run, next to the server's ``test``."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator

from sqlalchemy import create_engine, text

from storage.db import normalize_url

__all__ = ["throwaway_database"]


@contextlib.contextmanager
def throwaway_database(pg_url: str, *, keep: bool = False) -> Iterator[str]:
    """Create ``siyu_bench_<random>`` on the server of ``pg_url`` and yield its URL; drop it
    afterwards unless ``keep`` (then say how to reuse it)."""
    admin_url = normalize_url(pg_url)
    name = f"siyu_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = admin_url.rsplit("/", 1)[0] + f"/{name}"
    try:
        yield url
    finally:
        if not keep:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    if keep:
        print(f"kept: {url}")
