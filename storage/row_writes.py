"""Writes the inbound path makes for every event, as single Core statements.

The router records each event's interaction and updates the customer's last activity and
the conversation's last message. Through the ORM each of these marks the session dirty, and
the next query (or the flush before a handler) runs the whole unit of work for them. Here
each is one prepared statement executed at once, and the objects in the session are given
the written values as their loaded state, so they stay clean:

- the database holds the values before any later statement of the transaction runs, so
  a handler's query or Core update sees them, and a later write (forgetting a customer
  clears the conversation's last messages) lands after them and wins;
- the objects read the same values, so handlers see them without a reload;
- a savepoint's rollback leaves them alone (they were not changed inside it).

Called inside a savepoint that is later rolled back (a handler's), the row write is undone
but the object keeps the value for the rest of the transaction: the router calls these
outside handlers' savepoints.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Table, bindparam, insert, inspect, update
from sqlalchemy.orm import Session, make_transient_to_detached
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.sql import Executable

from storage.models import Interaction

__all__ = ["insert_interaction", "write_columns"]

_UPDATES: dict[tuple[Table, tuple[str, ...]], Executable] = {}
_INSERT_INTERACTION = insert(Interaction).returning(Interaction.id)


def write_columns(session: Session, obj: Any, **values: Any) -> None:
    """Set columns of ``obj``'s row now (``UPDATE .. WHERE id``) and in ``obj`` as loaded
    values. An object not yet in the database gets plain attribute sets instead."""
    state = inspect(obj)
    if not state.persistent:
        for name, value in values.items():
            setattr(obj, name, value)
        return
    table = state.mapper.local_table
    key = (table, tuple(sorted(values)))
    stmt = _UPDATES.get(key)
    if stmt is None:  # built once per table and column set (hot path)
        stmt = _UPDATES[key] = (
            update(table)
            .where(table.c.id == bindparam("row_id"))
            .values({name: bindparam(name) for name in key[1]})
        )
    session.connection().execute(stmt, {"row_id": obj.id, **values})
    for name, value in values.items():
        set_committed_value(obj, name, value)


def insert_interaction(
    session: Session,
    customer_id: int,
    *,
    event_id: str,
    channel: str,
    chat_id: str,
    kind: str,
    text: str,
    payload: dict[str, Any],
    now: datetime,
) -> Interaction:
    """Record one inbound event of a customer: its interaction row is inserted now and
    returned as a persistent object of ``session`` (``repos.record_interaction``)."""
    values = {
        "customer_id": customer_id,
        "event_id": event_id,
        "channel": channel,
        "chat_id": chat_id,
        "kind": kind,
        "text": text,
        "payload": payload,
        "error": None,
        "occurred_at": now,
    }
    row_id = session.connection().execute(_INSERT_INTERACTION, values).scalar_one()
    row = Interaction(id=row_id, **values)
    make_transient_to_detached(row)
    session.add(row)
    return row
