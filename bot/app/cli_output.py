"""What the ``siyu`` command line prints: JSON or readable text, CSV, progress, and
database problems as one line that says what to do.

- :func:`emit_json` — every command that prints data takes ``--json`` and prints through it;
- :func:`write_csv` — the one CSV writer of the exports (route formula neutralization here);
- :class:`Progress` — a small progress printer on stderr (``\\r`` on a terminal, a line per
  10% otherwise; silent with ``SIYU_NO_PROGRESS=1``);
- :func:`database_problem` — an unmigrated, full or read-only database as one line.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterable, Sequence
from typing import IO, Any

from bot.core.csv_export import csv_writer
from bot.core.i18n import t

__all__ = ["Progress", "cli_locale", "database_problem", "emit_json", "say", "write_csv"]


def cli_locale() -> str:
    """The reader's locale: ``$SIYU_LANG``, else the terminal's ``$LANG`` (zh… → zh-CN)."""
    raw = os.environ.get("SIYU_LANG") or os.environ.get("LC_ALL") or os.environ.get("LANG", "")
    return "zh-CN" if raw.lower().startswith("zh") else "en"


def say(key: str, **values: object) -> str:
    """A catalogue text (templates/i18n/cli.toml) in the CLI reader's locale."""
    return t(key, cli_locale(), **values)


def emit_json(data: Any, out: IO[str] | None = None) -> None:
    """Print ``data`` as one JSON document (Chinese kept readable, dates as ISO text)."""
    print(json.dumps(data, ensure_ascii=False, default=_default), file=out or sys.stdout)


def _default(value: Any) -> Any:
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


def write_csv(header: Sequence[str], rows: Iterable[Sequence[Any]], out: IO[str]) -> int:
    """Write a CSV (header, then rows) to ``out``; returns the number of data rows.

    Written through :func:`bot.core.csv_export.csv_writer`, so a cell starting with ``=``,
    ``+``, ``-``, ``@``, tab or CR cannot run as a spreadsheet formula."""
    writer = csv_writer(out)
    writer.writerow(header)
    n = 0
    for row in rows:
        writer.writerow(["" if v is None else v for v in row])
        n += 1
    return n


class Progress:
    """Progress of a long CLI job on stderr: ``label  n/total (p%)``."""

    def __init__(self, label: str, total: int | None = None, stream: IO[str] | None = None):
        self.label, self.total, self.done = label, total, 0
        self.stream = stream or sys.stderr
        self.enabled = os.environ.get("SIYU_NO_PROGRESS") != "1"
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._last_step = -1
        self._last_time = 0.0
        self._started = time.monotonic()

    def __enter__(self) -> Progress:
        self._show(force=True)
        return self

    def __exit__(self, *exc) -> None:
        self.finish()

    def advance(self, n: int = 1) -> None:
        """``n`` more items done."""
        self.done += n
        self._show()

    def _line(self) -> str:
        if self.total:
            pct = min(100, self.done * 100 // self.total)
            width = 20
            bar = "#" * (pct * width // 100) + "-" * (width - pct * width // 100)
            return f"{self.label} [{bar}] {self.done}/{self.total} ({pct}%)"
        return f"{self.label} …" if self.done == 0 else f"{self.label} {self.done}"

    def _show(self, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if self.tty:
            if force or now - self._last_time >= 0.1:
                self._last_time = now
                print("\r" + self._line(), end="", file=self.stream, flush=True)
            return
        step = (self.done * 10 // self.total) if self.total else -1
        if force or (self.total and step > self._last_step):
            self._last_step = step
            print(self._line(), file=self.stream, flush=True)

    def finish(self) -> None:
        """The job is over: the final figures and the time it took."""
        if not self.enabled:
            return
        seconds = time.monotonic() - self._started
        line = f"{self._line()} {seconds:.1f}s" if self.total else f"{self.label} ✓ {seconds:.1f}s"
        if self.tty:
            print("\r" + line, file=self.stream, flush=True)
        elif not self.total or self._last_step < 10:
            print(line, file=self.stream, flush=True)


def database_problem(exc: BaseException, url: str) -> str | None:
    """One line saying what to do about a database that cannot be used, or None."""
    chain: list[BaseException] = []
    seen: BaseException | None = exc
    while seen is not None and len(chain) < 6:  # the first failure may be in the context
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    text = " | ".join(str(getattr(e, "orig", None) or e).lower() for e in chain)
    where = _safe_url(url)
    kinds = " ".join(type(getattr(e, "orig", e)).__name__.lower() for e in chain)
    if "disk is full" in text or "no space left" in text or "disk full" in text:
        return say("cli.db.full", url=where)
    if (
        "no such table" in text
        or "undefinedtable" in kinds
        or ("relation" in text and "does not exist" in text)
    ):
        return say("cli.db.unmigrated", url=where)
    if "disk is full" in text or "no space left" in text or "disk full" in text:
        return say("cli.db.full", url=where)
    if "readonly" in text or "read-only" in text or "read only" in text:
        return say("cli.db.readonly", url=where)
    if (
        "unable to open database" in text
        or "could not connect" in text
        or "connection refused" in text
    ):
        return say("cli.db.unreachable", url=where)
    return None


def _safe_url(url: str) -> str:
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "the configured database"
