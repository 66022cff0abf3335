"""Who answers a conversation, and where its staff ticket is: two state machines.

The conversation's ``handoff_status``: ``bot`` → ``waiting`` (flagged, in the staff queue;
the bot keeps quiet) → ``staff`` (claimed) → ``bot`` (released or resolved; a waiting one
can be closed too). Its ticket's ``status``: ``waiting`` → ``claimed`` → ``released`` |
``resolved``, or closed straight from ``waiting``; a closed ticket stays closed (a new flag
opens a new ticket).
"""

from __future__ import annotations

from enum import StrEnum

from bot.core.states import IllegalTransition, Machine

__all__ = [
    "HandoffStatus",
    "IllegalHandoffTransition",
    "TicketStatus",
    "handoff_transition",
    "ticket_transition",
]


class HandoffStatus(StrEnum):
    """Who answers a conversation now."""

    BOT = "bot"
    WAITING = "waiting"
    STAFF = "staff"


class TicketStatus(StrEnum):
    """Where a staff ticket is."""

    WAITING = "waiting"
    CLAIMED = "claimed"
    RELEASED = "released"
    RESOLVED = "resolved"


class IllegalHandoffTransition(IllegalTransition):
    """A handoff or ticket status change the tables below do not allow."""


_H, _T = HandoffStatus, TicketStatus
HANDOFF = Machine(
    "handoff status",
    HandoffStatus,
    {_H.BOT: (_H.WAITING,), _H.WAITING: (_H.STAFF, _H.BOT), _H.STAFF: (_H.BOT,)},
    error=IllegalHandoffTransition,
)
TICKET = Machine(
    "ticket status",
    TicketStatus,
    {
        _T.WAITING: (_T.CLAIMED, _T.RELEASED, _T.RESOLVED),
        _T.CLAIMED: (_T.RELEASED, _T.RESOLVED),
        _T.RELEASED: (),
        _T.RESOLVED: (),
    },
    error=IllegalHandoffTransition,
)


def handoff_transition(old: str, new: str) -> HandoffStatus:
    """Check a conversation's handoff move; raises :class:`IllegalHandoffTransition`."""
    return HANDOFF.check(old, new)


def ticket_transition(old: str, new: str) -> TicketStatus:
    """Check a ticket's move; raises :class:`IllegalHandoffTransition`."""
    return TICKET.check(old, new)
