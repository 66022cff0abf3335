"""In-process publish/subscribe: one part announces what happened, others follow it.

A :class:`Bus` belongs to one process (the :class:`bot.app.runtime.Services` builds it and
subscribes the followers), so the part that publishes does not import the parts that react:
a tracked link publishes :class:`LinkClicked`; campaigns count it in their funnel and the
tagging rules tag the customer. Subscribers run in the publisher's transaction, each in a
savepoint: a failing follower is logged and rolled back, never undoing the publisher's work.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy.orm import Session

__all__ = ["Bus", "LinkClicked"]

log = logging.getLogger(__name__)

E = TypeVar("E")
Subscriber = Callable[[Session, Any], None]


@dataclass(frozen=True, slots=True)
class LinkClicked:
    """A customer opened a tracked link (bot/marketing/links.py)."""

    customer_id: int
    url: str
    campaign_id: int | None
    seq: int
    occurred_at: datetime


class Bus:
    """Subscribers by event type; :meth:`publish` calls them in order of subscription."""

    def __init__(self) -> None:
        self._subscribers: dict[type, list[Subscriber]] = {}

    def subscribe(
        self, kind: type[E], subscriber: Callable[[Session, E], None]
    ) -> Callable[[], None]:
        """Call ``subscriber(session, event)`` for every published ``kind``; returns the
        unsubscribe."""
        followers = self._subscribers.setdefault(kind, [])
        followers.append(subscriber)
        return lambda: followers.remove(subscriber) if subscriber in followers else None

    def publish(self, session: Session, event: object) -> None:
        """Tell every subscriber of ``type(event)``, each in its own savepoint."""
        for subscriber in tuple(self._subscribers.get(type(event), ())):
            try:
                with session.begin_nested():
                    subscriber(session, event)
            except Exception:
                log.exception("signals: %r failed on %s", subscriber, type(event).__name__)
