"""The marketing-send policy: may a marketing message go to this customer now?

Follow-ups use it today; campaigns and scenarios reuse it (call :func:`check` before
queueing, and queue with ``purpose`` in :data:`MARKETING_PURPOSES` so the cap counts it).
Replies to a customer's own message are service, not marketing, and do not pass here.

The checks, in order:

1. **opt-out** — ``Customer.marketing_opt_out`` means never (``retry_at`` is None);
2. **frequency cap** — at most ``[marketing] max_per_window`` marketing messages per
   ``window_hours``, counted from the outbox (so every sender shares one cap); when full,
   the message may go when the oldest one in the window leaves it;
3. **quiet hours** — ``[marketing] quiet_hours`` (default 22:00–08:00) in the customer's own
   time zone (``Customer.timezone``; an unknown zone falls back to the default one); a
   message due inside them is deferred to their end.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bot.app.config import MarketingConfig
from storage.models import Customer, OutboxMessage

__all__ = ["MARKETING_PURPOSES", "Decision", "check", "customer_zone", "parse_range"]

#: Outbox purposes that count as marketing (the frequency cap counts these rows).
MARKETING_PURPOSES = ("followup", "campaign", "scenario", "marketing", "survey")

#: Outbox statuses that do not count toward the cap (never sent, or withdrawn: a
#: ``cancelled`` row was superseded by higher-priority content, see bot/campaigns).
NOT_COUNTED = ("failed", "unreachable", "cancelled")


@dataclass(frozen=True)
class Decision:
    """The policy's answer: allowed now, or why not and when to try again (None: never)."""

    allowed: bool
    reason: str = "ok"
    retry_at: datetime | None = None


def parse_range(value: str) -> tuple[time, time]:
    """'22:00-08:00' → (22:00, 08:00); the config has validated the format."""
    start, _, end = value.partition("-")
    return time.fromisoformat(start.strip()), time.fromisoformat(end.strip())


def customer_zone(customer: Customer, default: str = "Asia/Shanghai") -> ZoneInfo:
    try:
        return ZoneInfo(customer.timezone or default)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo(default)


def in_range(moment: time, start: time, end: time) -> bool:
    """Whether a local time is inside [start, end), ranges may wrap midnight."""
    if start <= end:
        return start <= moment < end
    return moment >= start or moment < end


def quiet_until(now: datetime, zone: ZoneInfo, quiet: str) -> datetime | None:
    """The end of the quiet hours ``now`` is in (UTC), or None if it is not in them."""
    start, end = parse_range(quiet)
    local = now.astimezone(zone)
    if start == end or not in_range(local.time(), start, end):
        return None
    day = local.date() if local.time() < end else local.date() + timedelta(days=1)
    return datetime.combine(day, end, tzinfo=zone).astimezone(now.tzinfo)


def check(
    session: Session,
    customer: Customer,
    now: datetime,
    config: MarketingConfig,
    *,
    default_timezone: str = "Asia/Shanghai",
) -> Decision:
    """Apply opt-out, the frequency cap and quiet hours (see the module docstring)."""
    if customer.marketing_opt_out:
        return Decision(False, "opt_out", None)
    if config.max_per_window > 0:
        since = now - timedelta(hours=config.window_hours)
        recent = list(
            session.scalars(
                select(OutboxMessage.created_at)
                .where(
                    OutboxMessage.customer_id == customer.id,
                    OutboxMessage.purpose.in_(MARKETING_PURPOSES),
                    OutboxMessage.created_at > since,
                    OutboxMessage.status.not_in(NOT_COUNTED),
                )
                .order_by(OutboxMessage.created_at.desc())
                .limit(config.max_per_window)
            )
        )
        if len(recent) >= config.max_per_window:
            retry = recent[-1] + timedelta(hours=config.window_hours)
            zone = customer_zone(customer, default_timezone)
            return Decision(
                False, "frequency_cap", quiet_until(retry, zone, config.quiet_hours) or retry
            )
    until = quiet_until(now, customer_zone(customer, default_timezone), config.quiet_hours)
    if until is not None:
        return Decision(False, "quiet_hours", until)
    return Decision(True)


def marketing_count(session: Session, customer_id: int, since: datetime) -> int:
    """How many marketing messages were queued for a customer since a moment."""
    return session.execute(
        select(func.count())
        .select_from(OutboxMessage)
        .where(
            OutboxMessage.customer_id == customer_id,
            OutboxMessage.purpose.in_(MARKETING_PURPOSES),
            OutboxMessage.created_at > since,
        )
    ).scalar_one()
