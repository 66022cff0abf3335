"""What every channel adapter provides, and the delivery errors it may raise.

An adapter turns platform payloads into :class:`~bot.core.events.Event` (inbound) and sends
:class:`OutboundMessage` rows from the outbox (outbound). It is given the runtime; it is
not a subclass of it.
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from bot.core.events import Button
from bot.outbox.states import OutboxStatus

if TYPE_CHECKING:
    from bot.app.config import Config
    from bot.core.clock import Clock
    from bot.core.events import Event
    from bot.core.routing import DispatchResult
    from storage.db import Database

__all__ = [
    "AWAITING_CONFIRMATION",
    "Adapter",
    "AdapterHost",
    "Button",
    "DeliveryError",
    "OutboundMessage",
    "PermanentError",
    "RecipientUnreachable",
    "RetryAfter",
    "SendReceipt",
    "TransientError",
]


class AdapterHost(Protocol):
    """What every adapter is built with (``Adapter(config_section, runtime, **options)``):
    the process's storage and clock, and where inbound events go
    (:class:`bot.app.runtime.Runtime` is one)."""

    config: Config
    db: Database
    clock: Clock

    def handle(self, event: Event) -> Awaitable[DispatchResult]: ...

    def wake_delivery(self) -> None:
        """Tell the delivery worker that rows are due (e.g. a passive reply given back)."""

    def routing_wait(self, ahead: int = 0) -> float:
        """Seconds an event handed in now is expected to wait before it is routed, with
        ``ahead`` events the caller knows are before it (handed in or on their way)."""


@dataclass(frozen=True, slots=True)
class OutboundMessage:
    """One outbox row as an adapter sees it."""

    outbox_id: int
    idempotency_key: str
    channel: str
    chat_id: str
    user_id: str
    text: str
    buttons: tuple[Button, ...] = ()
    extra: dict = field(default_factory=dict)
    #: The row's purpose (reply, marketing, ...) and when it was queued: for the metrics.
    purpose: str = "reply"
    queued_at: datetime | None = None


#: Outbox status of a message the platform accepted but a person must still confirm (a
#: WeCom customer mass-send task): the delivery worker never claims it; the adapter settles
#: it to ``sent`` / ``failed`` / ``unreachable`` when the outcome is known. Counted by the
#: marketing frequency cap like ``sent`` (it is not in ``bot.marketing.policy.NOT_COUNTED``).
AWAITING_CONFIRMATION = OutboxStatus.AWAITING_CONFIRM.value


@dataclass(frozen=True, slots=True)
class SendReceipt:
    """The platform's answer to a successful send.

    ``status`` is the outbox status to record: ``sent``, or :data:`AWAITING_CONFIRMATION`
    when the message waits for a person's confirmation before it really goes out.
    """

    platform_message_id: str | None = None
    status: str = "sent"


class DeliveryError(Exception):
    """A send that did not succeed."""


class TransientError(DeliveryError):
    """Worth retrying later with backoff (network trouble, 5xx)."""


class RetryAfter(TransientError):
    """The platform asked us to wait ``seconds`` before trying again."""

    def __init__(self, seconds: float, message: str = "") -> None:
        super().__init__(message or f"retry after {seconds:g}s")
        self.seconds = seconds


class PermanentError(DeliveryError):
    """Will never succeed as it is (bad request, message too long after splitting...)."""


class RecipientUnreachable(PermanentError):
    """The recipient blocked the bot, unfollowed, or left: stop sending to that identity."""


@runtime_checkable
class Adapter(Protocol):
    """A messaging channel."""

    channel: str

    async def start(self) -> None:
        """Begin receiving platform events (polling, webhooks...)."""

    async def stop(self) -> None:
        """Stop receiving; release platform connections."""

    async def send(self, message: OutboundMessage) -> SendReceipt:
        """Deliver one message or raise a DeliveryError subclass."""
