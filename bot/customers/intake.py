"""One intake for rows of data: CSV files (the CLI imports) and JSON bodies (the APIs).

Orders, customers and tags come in as a CSV file (``siyu import orders|customers``,
``siyu tags import``) or as JSON (``POST /api/orders``, ``POST /api/customers``). Both are
read here the same way: the shape is checked first (a header with the needed columns; a
JSON object or ``{"<plural>": [...]}`` within a bound), and a problem there refuses the
whole input with :class:`IntakeError`. Then every row is validated on its own: a bad row
becomes a :class:`RowError` with its CSV line number or JSON list index and the reason,
and the good rows go on, so nothing good is lost to a bad neighbour.

A reason is a catalogue key (``code``, in templates/i18n/intake.toml and the other
catalogue files) with its parameters, never a finished sentence: the console page, the CLI
and the APIs each say it in their reader's locale (:meth:`RowError.text`), and a job keeps
the code and parameters (:meth:`RowError.as_dict`).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from bot.core.i18n import catalogue, t

__all__ = [
    "MAX_PARAM",
    "Intake",
    "IntakeError",
    "Layout",
    "RowError",
    "RowRefused",
    "collect",
    "csv_rows",
    "json_items",
    "reason_text",
]

T = TypeVar("T")


class IntakeError(ValueError):
    """The input as a whole cannot be used: ``code`` (a catalogue key) and ``params`` say
    why, :meth:`text` in a reader's locale, ``str()`` in English; ``status`` is the HTTP
    answer for an API."""

    def __init__(self, code: str, /, status: int = 400, **params: object) -> None:
        self.code, self.params, self.status = code, params, status
        super().__init__(self.text("en"))

    def text(self, locale: str | None) -> str:
        """Why the input cannot be used, for a reader of ``locale``."""
        return reason_text(self.code, self.params, locale)


#: The longest parameter kept with a reason (a value quoted from the row is cut here).
MAX_PARAM = 100
#: The reason of a refusal that carries no catalogue code (its English text is kept).
FALLBACK = "intake.row.invalid"


def reason_text(code: str, params: Mapping[str, Any], locale: str | None) -> str:
    """The reason ``code`` with ``params`` for a reader of ``locale``; an ``attribute``
    parameter is named in that locale too (``customer.attr.<name>``)."""
    values = dict(params)
    attribute = values.get("attribute")
    if isinstance(attribute, str) and f"customer.attr.{attribute}" in catalogue():
        values["attribute"] = t(f"customer.attr.{attribute}", locale)
    if code not in catalogue():
        code, values = FALLBACK, {"detail": str(values.get("detail", code))}
    return t(code, locale, **values)


class RowRefused(ValueError):
    """A row that cannot be taken: ``code`` is the catalogue key of the reason and
    ``params`` fill it; ``str()`` is the English text (logs, tests)."""

    def __init__(self, code: str, /, **params: object) -> None:
        self.code, self.params = code, params
        super().__init__(reason_text(code, params, "en"))


def _bounded(params: Mapping[str, Any]) -> dict[str, Any]:
    return {
        str(k)[:40]: v if isinstance(v, int) and not isinstance(v, bool) else str(v)[:MAX_PARAM]
        for k, v in list(params.items())[:8]
    }


@dataclass(frozen=True)
class RowError:
    """A rejected row: where (CSV line number or JSON index), what it named, and why — the
    reason as a catalogue ``code`` and its ``params``, said in each reader's locale."""

    where: int
    key: str
    code: str
    params: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, where: int, key: str, exc: Exception) -> RowError:
        """The rejection of a row refused by ``exc``: its ``code`` and ``params`` when it
        has them (:class:`RowRefused`, the attribute and amount errors), else its text."""
        code, params = getattr(exc, "code", None), getattr(exc, "params", None)
        if isinstance(code, str) and code in catalogue() and isinstance(params, Mapping):
            return cls(where, key, code, _bounded(params))
        return cls(where, key, FALLBACK, _bounded({"detail": str(exc)}))

    @classmethod
    def load(cls, data: Mapping[str, Any]) -> RowError:
        """A rejection kept by :meth:`as_dict` (a job's result)."""
        params = data.get("params")
        return cls(
            int(data.get("where", 0)),
            str(data.get("key", "")),
            str(data.get("code", FALLBACK)),
            dict(params) if isinstance(params, Mapping) else {"detail": data.get("reason", "")},
        )

    def as_dict(self) -> dict[str, Any]:
        """The rejection as JSON: where, what it named, the code and its parameters."""
        return {"where": self.where, "key": self.key[:64], "code": self.code, "params": self.params}

    def text(self, locale: str | None) -> str:
        """Why the row was rejected, for a reader of ``locale``."""
        return reason_text(self.code, self.params, locale)

    @property
    def reason(self) -> str:
        """Why the row was rejected, in English."""
        return self.text("en")

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
        raise IntakeError("intake.file.empty")
    reader.fieldnames = header
    known = ", ".join(layout.columns)
    unknown = [h for h in header if h not in layout.columns]
    if layout.closed and unknown:
        raise IntakeError(
            "intake.file.unknown_columns", names=", ".join(map(repr, unknown)), known=known
        )
    missing = [c for c in layout.required if c not in header]
    if missing:
        raise IntakeError("intake.file.missing_columns", names=", ".join(missing), known=known)
    if layout.one_of and not set(layout.one_of) & set(header):
        raise IntakeError("intake.file.one_of", names=", ".join(map(repr, layout.one_of)))
    rows: list[tuple[int, dict[str, str]]] = []
    errors: list[RowError] = []
    for row in reader:
        line = reader.line_num
        if None in row:
            errors.append(RowError(line, layout.name_of(row), "intake.row.extra_fields"))
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
            raise IntakeError("intake.body.other_keys", plural=plural)
        items = data[plural]
        if not isinstance(items, list):
            raise IntakeError("intake.body.not_list", plural=plural, noun=noun)
    elif isinstance(data, dict):
        items = [data]
    else:
        raise IntakeError("intake.body.shape", article=_article(noun), noun=noun, plural=plural)
    if not items:
        raise IntakeError("intake.body.empty", plural=plural)
    if len(items) > layout.max_items:
        raise IntakeError(
            "intake.body.too_many", status=413, limit=layout.max_items, plural=plural, n=len(items)
        )
    return list(enumerate(items))


def collect(
    rows: Iterable[tuple[int, object]],
    validate: Callable[[object], T],
    *,
    layout: Layout,
    refused: tuple[type[Exception], ...] = (ValueError,),
    identity: Callable[[T], str] | None = None,
    duplicate: str = "intake.row.duplicate",
    errors: Iterable[RowError] = (),
) -> Intake[T]:
    """Validate each row; a ``refused`` exception rejects the row with its reason. With
    ``identity``, a later row naming the same thing is rejected with the reason
    ``duplicate`` (a catalogue key; its ``{first}`` is where that thing was first seen)."""
    good: list[tuple[int, T]] = []
    rejected = list(errors)
    seen: dict[str, int] = {}
    for where, row in rows:
        try:
            value = validate(row)
        except refused as exc:
            rejected.append(RowError.of(where, layout.name_of(row), exc))
            continue
        if identity is not None:
            name = identity(value)
            if name in seen:
                rejected.append(
                    RowError(where, layout.name_of(row), duplicate, {"first": seen[name]})
                )
                continue
            seen[name] = where
        good.append((where, value))
    rejected.sort(key=lambda e: e.where)
    return Intake(good, rejected)
