"""A campaign's funnel per variant and arm: targeted → queued → sent → delivered → clicked
→ redeemed (plus held out, dropped and opted out).

``sent``: the platform accepted the message (outbox ``sent``); ``delivered``: it also gave
the message an id (Telegram message_id, WeChat msgid, sandbox transcript id); ``clicked``:
distinct customers who pressed a tracked button; ``redeemed``: codes from this campaign
redeemed. Everything is counted in the database (grouped queries, no rows in Python).

Scenarios (:func:`scenario_funnel`) use the same rows and the same outbox, link and coupon
counts, keyed by the outbox key prefix ``scenario:<name>:<local date>`` instead of a
campaign's targets: one row per local date, targeted/queued/dropped (by reason) from that
day's ``scenario_runs`` and the zones whose run was missed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import String, case, cast, func, literal, literal_column, select, union
from sqlalchemy.orm import Session

from storage.campaigns import Campaign, CampaignEvent, CampaignTarget, Scenario, ScenarioRun
from storage.coupons import CouponCode
from storage.links import TrackedLink
from storage.models import OutboxMessage
from storage.scenario_events import ScenarioEvent

__all__ = [
    "STEPS",
    "FunnelRow",
    "format_funnel",
    "format_scenario_funnel",
    "funnel",
    "scenario_funnel",
]

STEPS = ("targeted", "queued", "sent", "delivered", "clicked", "redeemed")


@dataclass
class FunnelRow:
    """Counts for one (variant, arm)."""

    variant: str
    arm: str
    targeted: int = 0
    held_out: int = 0
    dropped: int = 0
    queued: int = 0
    sent: int = 0
    delivered: int = 0
    clicked: int = 0
    redeemed: int = 0
    opted_out: int = 0
    #: dropped customers by reason (opt_out, frequency_cap, quiet_hours, ...)
    dropped_by: dict[str, int] = field(default_factory=dict)
    #: scenarios: the time zones whose run this day was missed (not run inside the window)
    missed: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {k: (dict(v) if isinstance(v, dict) else v) for k, v in self.__dict__.items()}


def _sent_delivered() -> tuple:
    """``sum(sent)``, ``sum(delivered)`` over joined outbox rows."""
    sent = OutboxMessage.status == "sent"
    return (
        func.sum(case((sent, 1), else_=0)),
        func.sum(case((sent & OutboxMessage.platform_message_id.is_not(None), 1), else_=0)),
    )


def _total(rows: list[FunnelRow]) -> FunnelRow:
    total = FunnelRow("*", "all")
    for r in rows:
        for name, value in r.as_dict().items():
            if isinstance(value, int):
                setattr(total, name, getattr(total, name) + value)
        for reason, n in r.dropped_by.items():
            total.dropped_by[reason] = total.dropped_by.get(reason, 0) + n
        total.missed += [z for z in r.missed if z not in total.missed]
    return total


def funnel(session: Session, campaign: Campaign) -> list[FunnelRow]:
    """The funnel of one campaign, one row per (variant, arm) plus a total row."""
    t = CampaignTarget
    rows: dict[tuple[str, str], FunnelRow] = {}

    def row(variant: str, arm: str) -> FunnelRow:
        return rows.setdefault((variant, arm), FunnelRow(variant, arm))

    for variant, arm, status, reason, n in session.execute(
        select(t.variant, t.arm, t.status, t.reason, func.count())
        .where(t.campaign_id == campaign.id)
        .group_by(t.variant, t.arm, t.status, t.reason)
    ):
        r = row(variant, arm)
        r.targeted += n
        if status == "queued":
            r.queued += n
        elif status == "held_out":
            r.held_out += n
        else:
            r.dropped += n
            r.dropped_by[reason or "unknown"] = r.dropped_by.get(reason or "unknown", 0) + n
    key = (
        literal(f"campaign:{campaign.id}:", String)
        + cast(t.customer_id, String)
        + literal(":", String)
        + t.variant
    )
    for variant, arm, n_sent, n_delivered in session.execute(
        select(t.variant, t.arm, *_sent_delivered())
        .join(OutboxMessage, OutboxMessage.idempotency_key == key)
        .where(
            t.campaign_id == campaign.id,
            # the campaign's rows only (a prefix range on ix_outbox_key_prefix)
            OutboxMessage.idempotency_key.startswith(f"campaign:{campaign.id}:", autoescape=True),
        )
        .group_by(t.variant, t.arm)
    ):
        r = row(variant, arm)
        r.sent, r.delivered = int(n_sent or 0), int(n_delivered or 0)
    e = CampaignEvent
    for variant, arm, kind, n in session.execute(
        select(t.variant, t.arm, e.kind, func.count(func.distinct(e.customer_id)))
        .join(t, (t.campaign_id == e.campaign_id) & (t.customer_id == e.customer_id))
        .where(e.campaign_id == campaign.id)
        .group_by(t.variant, t.arm, e.kind)
    ):
        r = row(variant, arm)
        if kind == "click":
            r.clicked = n
        elif kind == "opt_out":
            r.opted_out = n
    for variant, arm, n in session.execute(
        select(t.variant, t.arm, func.count())
        .join(
            CouponCode,
            (CouponCode.campaign_id == t.campaign_id) & (CouponCode.customer_id == t.customer_id),
        )
        .where(t.campaign_id == campaign.id, CouponCode.status == "redeemed")
        .group_by(t.variant, t.arm)
    ):
        row(variant, arm).redeemed = n
    ordered = [rows[k] for k in sorted(rows)]
    return [*ordered, _total(ordered)]


def _run_drops(reason: str | None) -> dict[str, int]:
    """A sent run's ``reason`` (``opt_out=1, frequency_cap=2``) as counts by reason."""
    counts: dict[str, int] = {}
    for part in (reason or "").split(","):
        key, sep, value = part.strip().partition("=")
        if sep and value.isdigit():
            counts[key] = counts.get(key, 0) + int(value)
    return counts


def scenario_funnel(session: Session, scenario: Scenario) -> list[FunnelRow]:
    """The funnel of one scenario, one row per local date (``variant``) plus a total row.

    The same steps as :func:`funnel`: the scenario's outbox rows, tracked links, button
    presses and coupon codes all carry the key ``scenario:<name>:<local date>:...``, so
    each count is one grouped query on that prefix."""
    prefix = f"scenario:{scenario.name}:"
    rows: dict[str, FunnelRow] = {}

    def row(day: str) -> FunnelRow:
        return rows.setdefault(day, FunnelRow(day, "all"))

    def day_of(column):
        # inline numbers: PostgreSQL must see the same expression in SELECT and GROUP BY
        return func.substr(column, literal_column(str(len(prefix) + 1)), literal_column("10"))

    for run in session.scalars(select(ScenarioRun).where(ScenarioRun.scenario_id == scenario.id)):
        r = row(run.local_date)
        if run.status == "missed":
            r.missed.append(run.timezone)
            continue
        r.targeted += run.queued + run.dropped
        r.queued += run.queued
        r.dropped += run.dropped
        for reason, n in _run_drops(run.reason).items():
            r.dropped_by[reason] = r.dropped_by.get(reason, 0) + n
    key = OutboxMessage.idempotency_key
    for day, n_sent, n_delivered in session.execute(
        select(day_of(key), *_sent_delivered())
        .where(key.startswith(prefix, autoescape=True))
        .group_by(day_of(key))
    ):
        r = row(day)
        r.sent, r.delivered = int(n_sent or 0), int(n_delivered or 0)
    clicks = union(
        select(day_of(ScenarioEvent.outbox_key).label("day"), ScenarioEvent.customer_id).where(
            ScenarioEvent.scenario_id == scenario.id, ScenarioEvent.kind == "click"
        ),
        select(day_of(TrackedLink.outbox_key).label("day"), TrackedLink.customer_id).where(
            TrackedLink.outbox_key.startswith(prefix, autoescape=True), TrackedLink.clicks > 0
        ),
    ).subquery()
    for day, n in session.execute(select(clicks.c.day, func.count()).group_by(clicks.c.day)):
        row(day).clicked = n
    code_day = day_of(CouponCode.issue_key)
    for day, n in session.execute(
        select(code_day, func.count())
        .where(
            CouponCode.issue_key.startswith(prefix, autoescape=True),
            CouponCode.status == "redeemed",
        )
        .group_by(code_day)
    ):
        row(day).redeemed = n
    ordered = [rows[k] for k in sorted(rows)]
    return [*ordered, _total(ordered)]


def format_scenario_funnel(scenario: Scenario, rows: list[FunnelRow]) -> str:
    """A plain-text table for chat and the CLI: one line per local date, then the dropped
    reasons and missed zones of each day."""
    steps = ("targeted", "dropped", *STEPS[1:])
    lines = [
        f"scenario {scenario.name} ({'enabled' if scenario.enabled else 'disabled'})",
        f"{'day':<10} " + " ".join(f"{c:>9}" for c in steps),
    ]
    notes = []
    for r in rows:
        lines.append(f"{r.variant:<10} " + " ".join(f"{getattr(r, c):>9}" for c in steps))
        if r.variant == "*":
            continue
        why = ", ".join(f"{k}={v}" for k, v in sorted(r.dropped_by.items()))
        if r.missed:
            why = ", ".join(filter(None, [why, "missed window: " + " ".join(sorted(r.missed))]))
        if why:
            notes.append(f"{r.variant}: {why}")
    return "\n".join(lines + notes)


def format_funnel(campaign: Campaign, rows: list[FunnelRow]) -> str:
    """A plain-text table for chat and the CLI."""
    head = f"{'variant':<8} {'arm':<8} " + " ".join(
        f"{c:>9}"
        for c in (
            "targeted",
            "held_out",
            "dropped",
            "queued",
            "sent",
            "delivered",
            "clicked",
            "redeemed",
            "opt_out",
        )
    )
    lines = [f"campaign {campaign.name} ({campaign.status})", head]
    for r in rows:
        lines.append(
            f"{r.variant:<8} {r.arm:<8} "
            + " ".join(
                f"{v:>9}"
                for v in (
                    r.targeted,
                    r.held_out,
                    r.dropped,
                    r.queued,
                    r.sent,
                    r.delivered,
                    r.clicked,
                    r.redeemed,
                    r.opted_out,
                )
            )
        )
    if campaign.stop_reason:
        lines.append(f"stopped: {campaign.stop_reason}")
    elif campaign.verdict:
        lines.append(f"pilot verdict: {campaign.verdict.get('reason', '')}")
    return "\n".join(lines)
