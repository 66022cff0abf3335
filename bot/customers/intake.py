"""One intake for rows of data: CSV files (the CLI imports) and JSON bodies (the APIs).

Orders, customers and tags come in as a CSV file (``siyu import orders|customers``,
``siyu tags import``) or as JSON (``POST /api/orders``, ``POST /api/customers``). Both are
read here the same way: the shape is checked first (a header with the needed columns; a
JSON object or ``{"<plural>": [...]}`` within a bound), and a problem there refuses the
whole input with :class:`IntakeError`. Then every row is validated on its own: a bad row
becomes a :class:`RowError` with its CSV line number or JSON list index and the reason,
and the good rows go on, so nothing good is lost to a bad neighbour.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ["Intake", "IntakeError", "Layout", "RowError", "collect", "csv_rows", "json_items"]

T = TypeVar("T")


class IntakeError(ValueError):
    """The input as a whole cannot be used; ``status`` is the HTTP answer for an API."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class RowError:
    """A rejected row: where (CSV line number or JSON index), what it named, and why."""

    where: int
    key: str
    reason: str

    @property
    def order_id(self) -> str:
        """The order id a rejected order row named (the same as :attr:`key`)."""
        return self.key


@dataclass(frozen=True)
class Layout:
    """The columns of one kind of row and how many a JSON body may carry."""

    noun: str  # "order": names the rows in messages ("an order object")
    plural: str  # "orders": the JSON list key
    columns: tuple[str, ...]
    required: tuple[str, ...] = ()
    one_of: tuple[str, ...] = ()  # at least one of these columns
    closed: bool = False  # a CSV column not in ``columns`` refuses the file
    key: str = ""  # the column that names a row in its error
    max_items: int = 1000

    def name_of(self, row: object) -> str:
        """What a row names itself by in its error (its key column), if anything."""
        if not self.key or not isinstance(row, dict):
            return ""
        value = row.get(self.key)
        return str(value).strip() if isinstance(value, str | int) else ""


@dataclass
class Intake(Generic[T]):
    """Validated rows with where they came from, and the rejected ones."""

    good: list[tuple[int, T]]
    errors: list[RowError]


def _article(noun: str) -> str:
    return "an" if noun[:1] in "aeiou" else "a"


def csv_rows(text: str, layout: Layout) -> tuple[list[tuple[int, dict[str, str]]], list[RowError]]:
    """The rows of a CSV document as (line number, row); blank rows are skipped and a row
    with more fields than columns is rejected. A header without the needed columns raises
    :class:`IntakeError`."""
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    header = [h.strip() for h in (reader.fieldnames or [])]
    if not header:
        raise IntakeError("the file is empty (expected a header line)")
    reader.fieldnames = header
    known = ", ".join(layout.columns)
    unknown = [h for h in header if h not in layout.columns]
    if layout.closed and unknown:
        raise IntakeError(f"unknown column(s) {', '.join(map(repr, unknown))} (columns: {known})")
    missing = [c for c in layout.required if c not in header]
    if missing:
        raise IntakeError(f"missing column(s) {', '.join(missing)} (columns: {known})")
    if layout.one_of and not set(layout.one_of) & set(header):
        raise IntakeError(
            "the file needs " + " or ".join(f"a '{c}'" for c in layout.one_of) + " column"
        )
    rows: list[tuple[int, dict[str, str]]] = []
    errors: list[RowError] = []
    for row in reader:
        line = reader.line_num
        if None in row:
            errors.append(RowError(line, layout.name_of(row), "more fields than columns"))
            continue
        if all(not (v or "").strip() for v in row.values()):
            continue
        rows.append((line, row))
    return rows, errors


def json_items(data: object, layout: Layout) -> list[tuple[int, object]]:
    """The items of a JSON body: one object, or ``{"<plural>": [...]}`` and nothing else,
    as (index, item); a wrong shape or too many raises :class:`IntakeError`."""
    noun, plural = layout.noun, layout.plural
    if isinstance(data, dict) and plural in data:
        if len(data) > 1:
            raise IntakeError(f"next to '{plural}' the body takes no other keys")
        items = data[plural]
        if not isinstance(items, list):
            raise IntakeError(f"'{plural}' must be a list of {noun} objects")
    elif isinstance(data, dict):
        items = [data]
    else:
        raise IntakeError(f'expected {_article(noun)} {noun} object or {{"{plural}": [...]}}')
    if not items:
        raise IntakeError(f"'{plural}' is empty")
    if len(items) > layout.max_items:
        raise IntakeError(
            f"at most {layout.max_items} {plural} per call, got {len(items)}", status=413
        )
    return list(enumerate(items))


def collect(
    rows: Iterable[tuple[int, object]],
    validate: Callable[[object], T],
    *,
    layout: Layout,
    refused: tuple[type[Exception], ...] = (ValueError,),
    identity: Callable[[T], str] | None = None,
    duplicate: Callable[[int], str] = lambda first: f"a duplicate of {first}",
    errors: Iterable[RowError] = (),
) -> Intake[T]:
    """Validate each row; a ``refused`` exception rejects the row with its message. With
    ``identity``, a later row naming the same thing is rejected with ``duplicate(first)``
    (``first`` is where that thing was first seen)."""
    good: list[tuple[int, T]] = []
    rejected = list(errors)
    seen: dict[str, int] = {}
    for where, row in rows:
        try:
            value = validate(row)
        except refused as exc:
            rejected.append(RowError(where, layout.name_of(row), str(exc)))
            continue
        if identity is not None:
            name = identity(value)
            if name in seen:
                rejected.append(RowError(where, layout.name_of(row), duplicate(seen[name])))
                continue
            seen[name] = where
        good.append((where, value))
    rejected.sort(key=lambda e: e.where)
    return Intake(good, rejected)
