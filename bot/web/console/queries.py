"""The console's numbers: every chart and table is a grouped SQL query (no per-customer
loops in Python), bounded by a period and a row limit, on SQLite and PostgreSQL alike.

Days are the brand's local days (``[general] timezone``): PostgreSQL converts with the
zone itself; SQLite, which has no zones, shifts by the zone's current UTC offset.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import String, and_, case, func, literal, or_, select
from sqlalchemy.orm import Session

from bot.app.config import CHANNELS as CHANNEL_NAMES
from bot.app.config import Config
from bot.customers.orders import normalize_phone
from storage.campaigns import Campaign, CampaignTarget
from storage.console import DailyCount, SegmentCount
from storage.coupons import CouponCode, CouponDefinition
from storage.db import insert_ignore
from storage.models import (
    Conversation,
    Customer,
    CustomerTag,
    Group,
    Identity,
    Interaction,
    Membership,
    OutboxMessage,
    Tag,
)
from storage.scores import CustomerScore

__all__ = [
    "PERIODS",
    "Period",
    "campaign_list",
    "coupon_stats",
    "daily_counts",
    "dashboard",
    "flow_positions",
    "redemptions_by_day",
    "roll_up",
    "search_customers",
    "segment_trend",
    "sends_per_hour",
    "tag_counts",
    "tag_rule_hits",
]

#: the periods a chart can cover, in days
PERIODS = (7, 30, 90)
TOP = 15


@dataclass(frozen=True)
class Period:
    """A span of brand-local days ending today."""

    days: int
    since: datetime
    now: datetime
    zone: ZoneInfo

    @classmethod
    def last(cls, days: int, now: datetime, zone: ZoneInfo) -> Period:
        start = (now.astimezone(zone) - timedelta(days=days - 1)).replace(
            hour=0, minute=0, second=0, microsecond=0
        )
        return cls(days, start, now, zone)

    def labels(self) -> list[str]:
        first = self.since.astimezone(self.zone).date()
        return [(first + timedelta(days=i)).isoformat() for i in range(self.days)]


def _offset_hours(zone: ZoneInfo, now: datetime) -> float:
    offset = now.astimezone(zone).utcoffset()
    return offset.total_seconds() / 3600 if offset else 0.0


def local_day(session: Session, column, zone: ZoneInfo, now: datetime):
    """SQL: the brand-local date of a UTC timestamp column, as 'YYYY-MM-DD'."""
    if session.get_bind().dialect.name == "postgresql":
        return func.to_char(func.timezone(zone.key, column), "YYYY-MM-DD")
    return func.strftime("%Y-%m-%d", column, f"{_offset_hours(zone, now):+g} hours")


def local_hour(session: Session, column, zone: ZoneInfo, now: datetime):
    """SQL: the brand-local hour of a timestamp (a truncated local timestamp on PostgreSQL,
    cheaper to group by than text; 'YYYY-MM-DD HH:00' on SQLite) — see :func:`hour_label`."""
    if session.get_bind().dialect.name == "postgresql":
        return func.date_trunc("hour", func.timezone(zone.key, column))
    return func.strftime("%Y-%m-%d %H:00", column, f"{_offset_hours(zone, now):+g} hours")


def hour_label(value) -> str:
    """'YYYY-MM-DD HH:00' for what :func:`local_hour` returned."""
    return value.strftime("%Y-%m-%d %H:00") if isinstance(value, datetime) else str(value)


def seconds_between(session: Session, later, earlier):
    """SQL: ``later - earlier`` in seconds."""
    if session.get_bind().dialect.name == "postgresql":
        return func.extract("epoch", later - earlier)
    return (func.julianday(later) - func.julianday(earlier)) * 86400


#: how long whole-table aggregates (customers per channel, tags, scores) are reused
SNAPSHOT_SECONDS = 300.0
_snapshots: dict[tuple[str, str], tuple[float, datetime, object]] = {}


def snapshot(session: Session, name: str, now: datetime, compute) -> tuple[datetime, Any]:
    """``compute()`` for this database, reused for :data:`SNAPSHOT_SECONDS` in this process
    (these scan whole tables; the page says when they were counted). (counted at, value)."""
    key = (str(session.get_bind().engine.url), name)
    found = _snapshots.get(key)
    if found is not None and time.monotonic() < found[0]:
        return found[1], found[2]
    value = compute()
    _snapshots[key] = (time.monotonic() + SNAPSHOT_SECONDS, now, value)
    return now, value


def reused_while_costly(session: Session, name: str, compute, factor: float = 5.0):
    """``compute()``, reused for ``factor`` times as long as it took (a page that refreshes
    every few seconds must not re-run a second-long query for each viewer each time; a
    cheap one is always fresh)."""
    key = (str(session.get_bind().engine.url), name)
    found = _snapshots.get(key)
    if found is not None and time.monotonic() < found[0]:
        return found[2]
    started = time.monotonic()
    value = compute()
    took = time.monotonic() - started
    if took > 0.2:
        _snapshots[key] = (time.monotonic() + factor * took, datetime.now(UTC), value)
    else:
        _snapshots.pop(key, None)
    return value


def _series(period: Period, rows) -> list[int]:
    counts = {day: int(n) for day, n in rows}
    return [counts.get(day, 0) for day in period.labels()]


# -- the dashboard's time series: finished days from the rollup, today live ---------------

_o = OutboxMessage
#: metric → (timestamp column, extra condition or None, key expression or None)
_DAILY = {
    "joins": (Membership.joined_at, None, None),
    "leaves": (Membership.left_at, None, None),
    "inbound": (Interaction.occurred_at, None, None),
    "outbound": (_o.sent_at, _o.status == "sent", None),
    "outbox": (_o.created_at, None, "channel_status"),
    "late": (_o.sent_at, _o.status == "sent", "lateness"),
}
LATENESS = ("lt1m", "lt5m", "lt1h", "ge1h")
DONE = "_done"


def _key(session: Session, kind: str | None):
    if kind == "channel_status":
        return _o.channel + literal(":", String) + _o.status
    if kind == "lateness":
        late = seconds_between(session, _o.sent_at, _o.next_attempt_at)
        return case(
            (late < 60, literal("lt1m", String)),
            (late < 300, literal("lt5m", String)),
            (late < 3600, literal("lt1h", String)),
            else_=literal("ge1h", String),
        )
    return literal("", String)


def _count_days(
    session: Session, start: datetime, end: datetime, zone: ZoneInfo, now: datetime
) -> list[tuple[str, str, str, int]]:
    """(day, metric, key, count) for every metric, over ``[start, end)`` (index range scans)."""
    out = []
    for metric, (column, condition, kind) in _DAILY.items():
        day, key = local_day(session, column, zone, now), _key(session, kind)
        where = [column >= start, column < end]
        if condition is not None:
            where.append(condition)
        out += [
            (d, metric, k, int(n))
            for d, k, n in session.execute(
                select(day, key, func.count()).where(*where).group_by(day, key)
            )
        ]
    return out


def _day_start(day: str, zone: ZoneInfo) -> datetime:
    return datetime.fromisoformat(day).replace(tzinfo=zone).astimezone(UTC)


def _fill_days(session: Session, finished: list[str], zone: ZoneInfo, now: datetime) -> int:
    """Count the finished days not yet in ``console_daily`` into it; returns how many."""
    done = set(
        session.scalars(
            select(DailyCount.day).where(DailyCount.metric == DONE, DailyCount.day.in_(finished))
        )
    )
    missing = [d for d in finished if d not in done]
    if not missing:
        return 0
    start = _day_start(missing[0], zone)
    end = _day_start((date.fromisoformat(missing[-1]) + timedelta(days=1)).isoformat(), zone)
    wanted = set(missing)
    rows = [
        {"day": d, "metric": m, "key": k, "value": n}
        for d, m, k, n in _count_days(session, start, end, zone, now)
        if d in wanted
    ]
    rows += [{"day": d, "metric": DONE, "key": "", "value": 1} for d in missing]
    for i in range(0, len(rows), 1000):
        insert_ignore(session, DailyCount, rows[i : i + 1000], ["day", "metric", "key"])
    return len(missing)


def roll_up(session: Session, zone: ZoneInfo, now: datetime) -> int:
    """Count every finished day of the dashboard's longest period (yesterday included) that
    is not in ``console_daily`` yet — the nightly job's share of the dashboard, so a visit
    reads the rollup instead of catching up. Returns the number of days counted."""
    period = Period.last(max(PERIODS) + 1, now, zone)
    today = now.astimezone(zone).date().isoformat()
    return _fill_days(session, [d for d in period.labels() if d < today], zone, now)


def daily_counts(session: Session, period: Period) -> dict[str, dict[str, dict[str, int]]]:
    """metric → key → day → count over the period. Finished days are counted once into
    ``console_daily`` and read from there; today is counted live."""
    zone, now = period.zone, period.now
    labels = period.labels()
    today = now.astimezone(zone).date().isoformat()
    finished = [d for d in labels if d < today]
    _fill_days(session, finished, zone, now)
    result: dict[str, dict[str, dict[str, int]]] = {}
    for d, metric, key, n in session.execute(
        select(DailyCount.day, DailyCount.metric, DailyCount.key, DailyCount.value).where(
            DailyCount.day.in_(finished), DailyCount.metric != DONE
        )
    ):
        result.setdefault(metric, {}).setdefault(key, {})[d] = int(n)
    if today in labels:
        for d, metric, key, n in _count_days(session, _day_start(today, zone), now, zone, now):
            if d == today:
                result.setdefault(metric, {}).setdefault(key, {})[today] = n
    return result


def _days(counts: dict, metric: str, key: str, labels: list[str]) -> list[int]:
    by_day = counts.get(metric, {}).get(key, {})
    return [by_day.get(day, 0) for day in labels]


def dashboard(session: Session, config: Config, period: Period) -> dict:
    """Everything on the dashboard, as chart-ready lists (needs a session in a transaction:
    finished days not yet rolled up are stored)."""
    now = period.now
    labels = period.labels()
    counts = daily_counts(session, period)

    def whole_tables() -> dict:
        # on PostgreSQL each count reads one small index alone, not its table of up to a
        # million rows (storage.console.DASHBOARD_INDEXES, customer_scores' lifecycle index)
        by_channel = session.execute(
            select(Identity.channel, func.count())
            .group_by(Identity.channel)
            .order_by(Identity.channel)
        ).all()
        per_group = (
            select(Membership.group_id, func.count().label("n"))
            .where(Membership.active)  # the partial index's own condition
            .group_by(Membership.group_id)
            .subquery()
        )
        by_group = session.execute(
            select(Group.title, Group.channel, per_group.c.n)
            .join(per_group, per_group.c.group_id == Group.id)
            .order_by(per_group.c.n.desc(), Group.id)
            .limit(TOP)
        ).all()
        customers = session.scalar(select(func.count()).select_from(Customer))
        live_tag = or_(CustomerTag.expires_at.is_(None), CustomerTag.expires_at > now)
        per_tag = (
            select(CustomerTag.tag_id, func.count().label("n"))
            .where(live_tag)
            .group_by(CustomerTag.tag_id)
            .subquery()
        )
        top_tags = session.execute(
            select(Tag.name, per_tag.c.n)
            .join(per_tag, per_tag.c.tag_id == Tag.id)
            .order_by(per_tag.c.n.desc(), Tag.name)
            .limit(TOP)
        ).all()
        scores: dict[str, dict[str, int]] = {"lifecycle": {}, "tier": {}, "rfm": {}}
        s = CustomerScore
        for lifecycle, tier, rfm, n in session.execute(  # one scan, a few dozen groups
            select(s.lifecycle, s.tier, s.rfm_group, func.count()).group_by(
                s.lifecycle, s.tier, s.rfm_group
            )
        ):
            for name, value in (("lifecycle", lifecycle), ("tier", tier), ("rfm", rfm)):
                if value is not None:
                    scores[name][value] = scores[name].get(value, 0) + n
        return {
            "by_channel": [[c, n] for c, n in by_channel],
            "by_group": [[title or "-", channel, n] for title, channel, n in by_group],
            "customers": customers,
            "top_tags": [[name, n] for name, n in top_tags],
            **{
                k: sorted(([v, n] for v, n in values.items()), key=lambda p: (-p[1], p[0]))
                for k, values in scores.items()
            },
        }

    counted_at, tables = snapshot(session, "dashboard", now, whole_tables)
    active_since = {
        days: session.scalar(
            select(func.count())
            .select_from(Customer)
            .where(Customer.last_active_at >= now - timedelta(days=days))
        )
        for days in (7, 30)
    }
    outbox_keys = sorted(counts.get("outbox", {}))
    return {
        **tables,
        "counted_at": counted_at,
        "labels": labels,
        "joins": _days(counts, "joins", "", labels),
        "leaves": _days(counts, "leaves", "", labels),
        "active_7": active_since[7],
        "active_30": active_since[30],
        "inbound": _days(counts, "inbound", "", labels),
        "outbound": _days(counts, "outbound", "", labels),
        "outbox": {
            "by_status": [
                [*key.split(":", 1), sum(_days(counts, "outbox", key, labels))]
                for key in outbox_keys
            ],
            "deferred": deferred(session, now),
            "lateness": [[b, sum(_days(counts, "late", b, labels))] for b in LATENESS],
        },
    }


def deferred(session: Session, now: datetime) -> list[list]:
    """Queued rows not due yet, per channel and why: waiting for their time, or to retry."""
    reason = case((_o.last_error.is_(None), literal("scheduled", String)), else_=literal("retry"))
    return [
        [c, r, n]
        for c, r, n in session.execute(
            select(_o.channel, reason, func.count())
            .where(_o.status == "pending", _o.next_attempt_at > now)
            .group_by(_o.channel, reason)
        )
    ]


def campaign_list(session: Session, limit: int = 200) -> list[dict]:
    """Campaigns, newest first, with targeted / queued / sent counts and the sent rate."""
    t = CampaignTarget
    stats = (
        select(
            t.campaign_id,
            func.count().label("targeted"),
            func.sum(case((t.status == "queued", 1), else_=0)).label("queued"),
            func.sum(case((t.status == "held_out", 1), else_=0)).label("held_out"),
        )
        .group_by(t.campaign_id)
        .subquery()
    )
    campaigns = session.execute(
        select(Campaign, stats.c.targeted, stats.c.queued, stats.c.held_out)
        .outerjoin(stats, stats.c.campaign_id == Campaign.id)
        .order_by(Campaign.id.desc())
        .limit(limit)
    ).all()
    ids = [c.id for c, *_ in campaigns]
    redeemed = dict(
        session.execute(
            select(CouponCode.campaign_id, func.count())
            .where(CouponCode.campaign_id.in_(ids), CouponCode.status == "redeemed")
            .group_by(CouponCode.campaign_id)
        ).all()
    )
    rows = []
    for c, targeted, queued, held_out in campaigns:
        queued = int(queued or 0)
        rows.append(
            {
                "id": c.id,
                "name": c.name,
                "status": c.status,
                "segment": c.segment,
                "created_at": c.created_at,
                "targeted": int(targeted or 0),
                "queued": queued,
                "held_out": int(held_out or 0),
                "redeemed": int(redeemed.get(c.id, 0)),
                "redeem_rate": (redeemed.get(c.id, 0) / queued) if queued else None,
                "verdict": (c.verdict or {}).get("decision"),
            }
        )
    return rows


def sends_per_hour(session: Session, campaign: Campaign, zone: ZoneInfo, now: datetime) -> list:
    """[hour, messages sent] for the campaign's outbox rows."""
    hour = local_hour(session, OutboxMessage.sent_at, zone, now)
    return [
        [hour_label(h), n]
        for h, n in session.execute(
            select(hour, func.count())
            .where(
                OutboxMessage.idempotency_key.startswith(
                    f"campaign:{campaign.id}:", autoescape=True
                ),
                OutboxMessage.status == "sent",
            )
            .group_by(hour)
            .order_by(hour)
            .limit(24 * 14)
        )
    ]


def search_customers(session: Session, query: str, limit: int = 50) -> list[dict]:
    """Customers matching ``query``: a customer number, a whole phone number or its digits,
    a channel id, ``tag:NAME`` or a tag, or part of a name. Each way is its own query (exact
    ones use their indexes; partial ones stop at ``limit``)."""
    q = query.strip()[:100]
    if not q:
        return []
    digits = "".join(ch for ch in q if ch.isdigit())
    ids: list[int] = []

    def take(stmt) -> None:
        for cid in session.scalars(stmt.limit(limit)):
            if cid not in ids:
                ids.append(cid)

    if q.isdigit() and len(q) <= 18:
        take(select(Customer.id).where(Customer.id == int(q)))
    if len(digits) >= 7:
        take(select(Customer.id).where(Customer.phone == (normalize_phone(q) or digits)))
    elif len(digits) >= 4:
        take(select(Customer.id).where(Customer.phone.like(f"%{digits}%")))
    take(
        select(Identity.customer_id).where(
            Identity.channel.in_(CHANNEL_NAMES), Identity.external_id == q
        )
    )
    take(
        select(CustomerTag.customer_id)
        .join(Tag, Tag.id == CustomerTag.tag_id)
        .where(Tag.name == q.removeprefix("tag:"))
    )
    if not q.startswith("tag:") and len(ids) < limit:
        pattern = q.replace("\\", "").replace("%", "").replace("_", "")
        if pattern:
            take(select(Customer.id).where(Customer.display_name.like(f"%{pattern}%")))
    ids = ids[:limit]
    rows = session.scalars(select(Customer).where(Customer.id.in_(ids)).order_by(Customer.id)).all()
    channels: dict[int, list[str]] = {}
    for cid, channel, external in session.execute(
        select(Identity.customer_id, Identity.channel, Identity.external_id).where(
            Identity.customer_id.in_(ids)
        )
    ):
        channels.setdefault(cid, []).append(f"{channel}:{external}")
    return [
        {
            "id": c.id,
            "name": c.display_name or f"#{c.id}",
            "phone": c.phone,
            "city": c.city,
            "identities": channels.get(c.id, []),
            "last_active_at": c.last_active_at,
        }
        for c in rows
    ]


def tag_counts(session: Session, now: datetime, limit: int = 200) -> list[list]:
    """[tag, customers holding it now] for every tag, most held first."""
    live = or_(CustomerTag.expires_at.is_(None), CustomerTag.expires_at > now)
    return [
        [name, n]
        for name, n in session.execute(
            select(Tag.name, func.count(CustomerTag.customer_id))
            .outerjoin(CustomerTag, and_(CustomerTag.tag_id == Tag.id, live))
            .group_by(Tag.name)
            .order_by(func.count(CustomerTag.customer_id).desc(), Tag.name)
            .limit(limit)
        )
    ]


def tag_rule_hits(session: Session) -> dict[str, int]:
    """Customers tagged by each rule (``rule:<id>`` tag sources)."""
    return {
        source.removeprefix("rule:"): n
        for source, n in session.execute(
            select(CustomerTag.source, func.count())
            .where(CustomerTag.source.like("rule:%"))
            .group_by(CustomerTag.source)
        )
    }


def coupon_stats(session: Session, now: datetime) -> list[dict]:
    """Per definition: codes issued, redeemed, expired (unredeemed past their end), open."""
    c = CouponCode
    rows = session.execute(
        select(
            CouponDefinition,
            func.count(c.id),
            func.sum(case((c.status == "redeemed", 1), else_=0)),
            func.sum(case((and_(c.status != "redeemed", c.expires_at <= now), 1), else_=0)),
        )
        .outerjoin(c, c.definition_id == CouponDefinition.id)
        .group_by(CouponDefinition.id)
        .order_by(CouponDefinition.name)
    ).all()
    return [
        {
            "name": d.name,
            "title": d.title,
            "amount": d.amount_cents / 100,
            "percent_off": d.percent_off,
            "min_spend": d.min_spend_cents / 100,
            "valid_days": d.valid_days,
            "stock": d.total_stock,
            "issued": int(issued or 0),
            "redeemed": int(redeemed or 0),
            "expired": int(expired or 0),
            "open": int(issued or 0) - int(redeemed or 0) - int(expired or 0),
        }
        for d, issued, redeemed, expired in rows
    ]


def redemptions_by_day(session: Session, period: Period) -> dict:
    """Redemptions per local day of the period, per coupon definition."""
    day = local_day(session, CouponCode.redeemed_at, period.zone, period.now)
    series: dict[str, list] = {}
    for name, d, n in session.execute(
        select(CouponDefinition.name, day, func.count())
        .join(CouponDefinition, CouponDefinition.id == CouponCode.definition_id)
        .where(CouponCode.status == "redeemed", CouponCode.redeemed_at >= period.since)
        .group_by(CouponDefinition.name, day)
    ):
        series.setdefault(name, []).append((d, n))
    return {name: _series(period, rows) for name, rows in sorted(series.items())}


def flow_positions(session: Session) -> dict[str, dict[str, int]]:
    """Conversations standing at each flow's steps right now: {flow: {step: count}}."""
    out: dict[str, dict[str, int]] = {}
    for flow, step, n in session.execute(
        select(Conversation.flow, Conversation.step, func.count())
        .where(Conversation.flow.is_not(None))
        .group_by(Conversation.flow, Conversation.step)
    ):
        out.setdefault(flow or "", {})[step or ""] = n
    return out


def segment_trend(session: Session, segment_ids: list[int], since_day: str) -> dict[int, list]:
    """Each saved segment's recorded daily counts since ``since_day``."""
    trend: dict[int, list] = {}
    for sid, day, n in session.execute(
        select(SegmentCount.segment_id, SegmentCount.day, SegmentCount.members)
        .where(SegmentCount.segment_id.in_(segment_ids), SegmentCount.day >= since_day)
        .order_by(SegmentCount.day)
    ):
        trend.setdefault(sid, []).append([day, int(n)])
    return trend


def treated_vs_holdout(session: Session, campaign: Campaign, since: datetime) -> dict[str, dict]:
    """Customers sent the campaign vs its holdout: size and who bought since ``since``."""
    from storage.orders import Order

    out = {}
    for group, condition in (
        ("treated", CampaignTarget.status == "queued"),
        ("holdout", CampaignTarget.status == "held_out"),
    ):
        members = select(CampaignTarget.customer_id).where(
            CampaignTarget.campaign_id == campaign.id, condition
        )
        size = session.scalar(select(func.count()).select_from(members.subquery())) or 0
        converted = (
            session.scalar(
                select(func.count(func.distinct(Order.customer_id))).where(
                    Order.customer_id.in_(members), Order.ordered_at >= since
                )
            )
            or 0
        )
        out[group] = {
            "size": size,
            "converted": converted,
            "conversion": converted / size if size else 0.0,
        }
    return out
