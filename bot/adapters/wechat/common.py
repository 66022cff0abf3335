"""What the Official Account and WeCom adapters share: windows, delivery records, sources,
passive-reply claims, and acknowledging a callback within WeChat's 5-second budget.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import TypeVar

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from bot.core.events import Event
from bot.core.redaction import redact_or_none
from bot.outbox.states import OutboxStatus, transition
from storage import repos
from storage.db import insert_ignore, rowcount
from storage.models import OutboxMessage
from storage.wechat import ServiceWindow, SourceAttribution, WechatDelivery

__all__ = [
    "Background",
    "claim_passive_reply",
    "claim_window_slot",
    "close_window",
    "handle_within",
    "open_window",
    "record_delivery",
    "record_source",
    "refund_window_slot",
    "release_passive_reply",
]

log = logging.getLogger(__name__)
T = TypeVar("T")

#: A follower's own message opens 48 h for 5 messages; a click/subscribe/scan 1 min for 3.
MESSAGE_WINDOW = (timedelta(hours=48), 5)
ACTION_WINDOW = (timedelta(minutes=1), 3)


def open_window(
    session: Session, channel: str, openid: str, *, by: str, at: datetime, now: datetime
) -> None:
    """Open (or renew) the customer-service window after the follower did something.

    ``at`` is the platform's CreateTime: a retried callback carries the same one, so it
    does not reset the count of messages already sent in the window.
    """
    length, quota = MESSAGE_WINDOW if by == "message" else ACTION_WINDOW
    expires = at + length
    row = session.get(ServiceWindow, (channel, openid), with_for_update=True)
    if row is None:
        insert_ignore(
            session,
            ServiceWindow,
            {
                "channel": channel,
                "openid": openid,
                "opened_by": by,
                "opened_at": at,
                "expires_at": expires,
                "quota": quota,
                "used": 0,
            },
            ["channel", "openid"],
        )
        return
    if at <= row.opened_at:
        return  # a retry, or an older event arriving late
    still_better = row.expires_at > expires and row.used < row.quota and row.expires_at > now
    if by != "message" and still_better:
        return
    row.opened_by, row.opened_at, row.expires_at, row.quota, row.used = by, at, expires, quota, 0


def claim_window_slot(session: Session, channel: str, openid: str, now: datetime) -> str | None:
    """Take one message of the open window; None if granted, else why the window is closed."""
    row = session.get(ServiceWindow, (channel, openid))
    if row is None:
        return "the follower has not written (no customer-service window)"
    result = session.execute(
        update(ServiceWindow)
        .where(ServiceWindow.channel == channel, ServiceWindow.openid == openid)
        .where(ServiceWindow.expires_at > now, ServiceWindow.used < ServiceWindow.quota)
        .values(used=ServiceWindow.used + 1)
    )
    if rowcount(result) == 1:
        return None
    if row.expires_at <= now:
        return f"customer-service window closed at {row.expires_at.isoformat()}"
    return f"customer-service quota used ({row.used}/{row.quota} since {row.opened_at.isoformat()})"


def refund_window_slot(session: Session, channel: str, openid: str) -> None:
    """Give back a slot taken for a send that did not reach WeChat."""
    session.execute(
        update(ServiceWindow)
        .where(ServiceWindow.channel == channel, ServiceWindow.openid == openid)
        .where(ServiceWindow.used > 0)
        .values(used=ServiceWindow.used - 1)
    )


def close_window(session: Session, channel: str, openid: str) -> None:
    """WeChat said the window is closed or its quota used (45015/45047): believe it."""
    session.execute(
        update(ServiceWindow)
        .where(ServiceWindow.channel == channel, ServiceWindow.openid == openid)
        .values(used=ServiceWindow.quota)
    )


def record_delivery(
    session: Session,
    *,
    outbox_id: int | None,
    channel: str,
    user_id: str,
    route: str,
    now: datetime,
    errcode: int | None = None,
    detail: str | None = None,
) -> None:
    session.add(
        WechatDelivery(
            outbox_id=outbox_id,
            channel=channel,
            user_id=user_id,
            route=route,
            errcode=errcode,
            detail=redact_or_none(detail),
            at=now,
        )
    )


def record_source(
    session: Session,
    *,
    event_key: str,
    customer_id: int,
    channel: str,
    external_id: str,
    source: str,
    kind: str,
    now: datetime,
) -> None:
    """Source attribution (once per event) and the tag ``来源:<source>`` on the customer."""
    insert_ignore(
        session,
        SourceAttribution,
        {
            "event_key": event_key,
            "customer_id": customer_id,
            "channel": channel,
            "external_id": external_id,
            "source": source[:128],
            "kind": kind,
            "at": now,
        },
        ["event_key"],
    )
    repos.add_tag(session, customer_id, f"来源:{source}"[:64], source=f"{channel}:{kind}", now=now)


def claim_passive_reply(session: Session, event: Event, now: datetime) -> tuple[int, str] | None:
    """Take the event's one queued text reply to answer the callback with; None if not one.

    The row is marked sent only if it is still pending, so the delivery worker and the
    callback never both send it.
    """
    rows = list(
        session.scalars(
            select(OutboxMessage).where(
                OutboxMessage.idempotency_key.startswith(
                    f"reply:{event.dedupe_key}:", autoescape=True
                )
            )
        )
    )
    if len(rows) != 1:
        return None
    row = rows[0]
    payload = row.payload or {}
    if (
        row.status != OutboxStatus.PENDING
        or row.channel != event.channel
        or row.user_id != event.ref.user_id
        or row.next_attempt_at > now
        or payload.get("buttons")
        or not payload.get("text", "").strip()
    ):
        return None
    result = session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.id == row.id, OutboxMessage.status == OutboxStatus.PENDING)
        .values(
            status=transition(OutboxStatus.PENDING, OutboxStatus.SENT).value,
            sent_at=now,
            platform_message_id="passive",
            attempts=OutboxMessage.attempts + 1,
        )
    )
    if rowcount(result) != 1:
        return None
    record_delivery(
        session,
        outbox_id=row.id,
        channel=row.channel,
        user_id=row.user_id,
        route="passive",
        now=now,
    )
    return row.id, payload["text"]


def release_passive_reply(session: Session, outbox_id: int) -> None:
    """Give a passive reply claimed too late back to the delivery worker."""
    session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.id == outbox_id, OutboxMessage.platform_message_id == "passive")
        .values(
            status=transition(OutboxStatus.SENT, OutboxStatus.PENDING).value,
            sent_at=None,
            platform_message_id=None,
        )
    )
    session.execute(
        delete(WechatDelivery).where(
            WechatDelivery.outbox_id == outbox_id, WechatDelivery.route == "passive"
        )
    )


class Background:
    """Tasks that outlive the callback that started them (kept referenced, awaited on stop)."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task] = set()

    def spawn(self, coro: Awaitable[T], name: str) -> asyncio.Task[T]:
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task %s failed", task.get_name(), exc_info=task.exception())

    async def drain(self, timeout: float) -> None:
        """Wait for running tasks (for a clean stop and for tests), then cancel stragglers."""
        if not self._tasks:
            return
        _done, pending = await asyncio.wait(set(self._tasks), timeout=timeout)
        for task in pending:
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*pending, return_exceptions=True)


async def handle_within(
    background: Background,
    work: Callable[[], Awaitable[T]],
    budget: float,
    name: str,
    *,
    queue_wait: float = 0.0,
) -> T | None:
    """Run ``work``; if it takes longer than ``budget`` let it finish in the background and
    return None (the callback is acknowledged with "success" meanwhile).

    ``queue_wait`` is how long routing expects the event to wait for its turn
    (:meth:`Runtime.routing_wait`): when that alone exceeds the budget, waiting would only
    hold the answer up, so the work goes to the background at once."""
    task = background.spawn(work(), name)
    if queue_wait > budget:
        return None
    try:
        return await asyncio.wait_for(asyncio.shield(task), budget)
    except TimeoutError:
        log.warning("%s: not done within %.1fs; acknowledged, finishing after", name, budget)
        return None
