"""The outbox row's status and purpose: what may happen to a queued message.

``pending`` → ``sending`` (claimed with a lease) → ``sent`` | ``failed`` | ``unreachable``,
or ``sending`` → ``awaiting_confirm`` (a person must confirm it, e.g. a WeCom mass-send
task) → ``sent`` | ``failed`` | ``unreachable``. A claim that ends without an outcome (a
stop, an expired lease, a transient error, RetryAfter) goes back to ``pending``. Campaigns
hold their rows (``pending`` ⇄ ``paused``) and a higher-priority push withdraws a waiting
one (``pending`` → ``cancelled``). A WeChat passive reply sends a ``pending`` row inside
the callback's answer, and gives it back (``sent`` → ``pending``) if it was too late.
"""

from __future__ import annotations

from enum import StrEnum

from bot.core.states import IllegalTransition, Machine

__all__ = [
    "TRANSACTIONAL_PURPOSES",
    "IllegalOutboxTransition",
    "OutboxPurpose",
    "OutboxStatus",
    "SourceKind",
    "is_transactional",
    "purpose_of",
    "transition",
    "transitions",
]


class OutboxStatus(StrEnum):
    """Where an outbox row is on its way out."""

    PENDING = "pending"
    SENDING = "sending"
    AWAITING_CONFIRM = "awaiting_confirm"
    SENT = "sent"
    FAILED = "failed"
    UNREACHABLE = "unreachable"
    PAUSED = "paused"
    CANCELLED = "cancelled"


class OutboxPurpose(StrEnum):
    """Why a row was queued (marketing purposes count toward the frequency cap)."""

    REPLY = "reply"
    STAFF = "staff"
    STAFF_ALERT = "staff_alert"
    RELAY = "relay"
    FOLLOWUP = "followup"
    CAMPAIGN = "campaign"
    SCENARIO = "scenario"
    MARKETING = "marketing"
    SURVEY = "survey"
    GROUP_POST = "group_post"
    MODERATION = "moderation"


#: Purposes delivered ahead of every other (marketing) purpose: answers to a person who is
#: waiting — bot replies, staff answers and alerts, relayed messages, group moderation. The
#: worker claims them first, and when a platform limit is tight they take the next slot.
TRANSACTIONAL_PURPOSES = frozenset(
    {
        OutboxPurpose.REPLY,
        OutboxPurpose.STAFF,
        OutboxPurpose.STAFF_ALERT,
        OutboxPurpose.RELAY,
        OutboxPurpose.MODERATION,
    }
)


def is_transactional(purpose: str) -> bool:
    """Whether a row of ``purpose`` goes ahead of marketing (campaigns, scenarios, ...)."""
    return purpose in TRANSACTIONAL_PURPOSES


def purpose_of(value: str) -> OutboxPurpose:
    """``value`` as a purpose; a clear ValueError for one the outbox does not know."""
    try:
        return OutboxPurpose(value)
    except ValueError:
        known = ", ".join(p.value for p in OutboxPurpose)
        raise ValueError(f"unknown outbox purpose {value!r} (known: {known})") from None


class SourceKind(StrEnum):
    """What queued a row in bulk (``source_kind``; ``source_id`` is its id)."""

    CAMPAIGN = "campaign"
    SCENARIO = "scenario"


class IllegalOutboxTransition(IllegalTransition):
    """An outbox status change the table below does not allow."""


_S = OutboxStatus
_OUTCOMES = (_S.SENT, _S.FAILED, _S.UNREACHABLE)
TRANSITIONS = {
    _S.PENDING: (
        _S.SENDING,
        _S.PAUSED,
        _S.CANCELLED,
        _S.SENT,  # a WeChat passive reply
        _S.FAILED,  # a WeCom mass send settled before its row was claimed again
        _S.UNREACHABLE,
    ),
    _S.SENDING: (_S.PENDING, _S.AWAITING_CONFIRM, *_OUTCOMES),
    _S.AWAITING_CONFIRM: _OUTCOMES,
    _S.PAUSED: (_S.PENDING,),
    _S.SENT: (_S.PENDING,),  # a passive reply claimed too late goes back to the worker
    _S.FAILED: (),
    _S.UNREACHABLE: (),
    _S.CANCELLED: (),
}
MACHINE = Machine("outbox status", OutboxStatus, TRANSITIONS, error=IllegalOutboxTransition)


def transition(old: str, new: str) -> OutboxStatus:
    """Check one row's move; raises :class:`IllegalOutboxTransition`."""
    return MACHINE.check(old, new)


def transitions(olds: tuple[str, ...] | list[str], new: str) -> OutboxStatus:
    """Check a bulk update's move from each of ``olds``."""
    return MACHINE.check_all(olds, new)
