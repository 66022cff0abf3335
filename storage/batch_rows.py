"""Per-customer rows (tags, interest scores) loaded for a whole batch, read without a query.

The inbound pipeline tells the session which customers its batch serves
(:func:`expect_customers`). The first :func:`get_row` for one of them loads that kind of row
for *all* of them in one query; after that, ``get_row`` answers from the session alone: the
row, or ``None`` when the customer has none (rows loaded, added since and deleted since are
all in the session, and held for the transaction: :func:`hold`). A customer created in the
transaction has no rows to load (:func:`mark_new`). For any other customer ``get_row`` is
``Session.get``. A row written with a Core statement is not in the session: its writer must
expect a conflict (``bump_interest`` does).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar

from sqlalchemy import BindParameter, Select, bindparam, select
from sqlalchemy.orm import Session
from sqlalchemy.orm.util import identity_key

__all__ = ["expect_customers", "forget_customers", "get_row", "hold", "mark_new"]

T = TypeVar("T")
_EXPECTED = "siyu.batch_customers"
_NEW = "siyu.new_customers"
_LOADED = "siyu.rows_loaded"
_HELD = "siyu.rows_held"


def expect_customers(session: Session, customer_ids: Iterable[int]) -> None:
    """The customers whose per-customer rows are loaded together when first asked for."""
    session.info.setdefault(_EXPECTED, set()).update(customer_ids)


def mark_new(session: Session, customer_id: int) -> None:
    """A customer created in this transaction: every per-customer row of theirs is in the
    session (there is none yet)."""
    session.info.setdefault(_NEW, set()).add(customer_id)


def forget_customers(session: Session, customer_ids: Iterable[int]) -> None:
    """Stop answering for these customers from the session (their rows were moved by a
    bulk statement, as a merge does): ``get_row`` queries for them again."""
    gone = set(customer_ids)
    for key in (_EXPECTED, _NEW):
        info_set = session.info.get(key)
        if info_set:
            info_set.difference_update(gone)
    for done in session.info.get(_LOADED, {}).values():
        done.difference_update(gone)


def hold(session: Session, model: type[Any], key: tuple[int, int]) -> None:
    """Keep a row added to the session (or found in it) for the transaction: the session
    holds unchanged rows weakly, and a row it dropped would look missing to :func:`get_row`."""
    found = session.identity_map.get(identity_key(model, key))
    for row in [found] if found is not None else session.new:
        if isinstance(row, model) and identity_key(instance=row)[1] == key:
            session.info.setdefault(_HELD, []).append(row)
            return


_ROWS_OF: dict[Any, Select[Any]] = {}


def _rows_of(model: Any) -> Select[Any]:
    """The statement loading a model's rows of some customers (built once per model)."""
    if (stmt := _ROWS_OF.get(model)) is None:
        ids: BindParameter[Any] = bindparam("ids", expanding=True)
        stmt = _ROWS_OF[model] = select(model).where(model.customer_id.in_(ids))
    return stmt


def get_row(session: Session, model: type[T], key: tuple[int, int]) -> T | None:
    """``session.get(model, (customer_id, ...))``; see the module docstring."""
    customer_id = key[0]
    info = session.info
    if customer_id not in info.get(_NEW, ()):
        loaded: dict[Any, set[int]] = info.setdefault(_LOADED, {})
        done = loaded.setdefault(model, set())
        if customer_id not in done:
            expected = info.get(_EXPECTED, set())
            if customer_id not in expected:
                return session.get(model, key)
            todo = sorted(expected - done)
            rows = session.scalars(_rows_of(model), {"ids": todo}).all()
            session.info.setdefault(_HELD, []).extend(rows)
            done.update(todo)
    found = session.identity_map.get(identity_key(model, key))
    if found is not None:
        if found in session.deleted:
            return None
        session.info.setdefault(_HELD, []).append(found)
        return found
    for pending in session.new:  # added in this transaction, not flushed yet
        if isinstance(pending, model) and identity_key(instance=pending)[1] == key:
            return pending
    return None
