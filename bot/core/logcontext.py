"""Which event or outbox row the current code works on, for log records (JSON logs).

The runtime sets :data:`EVENT_ID` while it routes an event and the delivery worker sets
:data:`OUTBOX_ID` while it delivers a row; :func:`current_ids` reads both. Context
variables, so concurrent tasks and database threads each see their own.
"""

from __future__ import annotations

from contextvars import ContextVar

__all__ = ["EVENT_ID", "OUTBOX_ID", "current_ids"]

EVENT_ID: ContextVar[str | None] = ContextVar("siyu_event_id", default=None)
OUTBOX_ID: ContextVar[int | None] = ContextVar("siyu_outbox_id", default=None)


def current_ids() -> dict[str, str | int]:
    """``{"event_id": ..., "outbox_id": ...}`` for what is set in this context."""
    ids: dict[str, str | int] = {}
    event_id, outbox_id = EVENT_ID.get(), OUTBOX_ID.get()
    if event_id is not None:
        ids["event_id"] = event_id
    if outbox_id is not None:
        ids["outbox_id"] = outbox_id
    return ids
