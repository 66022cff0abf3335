"""A campaign's funnel per variant and arm: targeted → queued → sent → delivered → clicked
→ redeemed (plus held out, dropped and opted out).

``sent``: the platform accepted the message (outbox ``sent``); ``delivered``: it also gave
the message an id (Telegram message_id, WeChat msgid, sandbox transcript id); ``clicked``:
distinct customers who pressed a tracked button; ``redeemed``: codes from this campaign
redeemed. Everything is counted in the database (grouped queries, no rows in Python).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import String, case, cast, func, literal, select
from sqlalchemy.orm import Session

from storage.campaigns import Campaign, CampaignEvent, CampaignTarget
from storage.coupons import CouponCode
from storage.models import OutboxMessage

__all__ = ["STEPS", "FunnelRow", "format_funnel", "funnel"]

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

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def funnel(session: Session, campaign: Campaign) -> list[FunnelRow]:
    """The funnel of one campaign, one row per (variant, arm) plus a total row."""
    t = CampaignTarget
    rows: dict[tuple[str, str], FunnelRow] = {}

    def row(variant: str, arm: str) -> FunnelRow:
        return rows.setdefault((variant, arm), FunnelRow(variant, arm))

    for variant, arm, status, n in session.execute(
        select(t.variant, t.arm, t.status, func.count())
        .where(t.campaign_id == campaign.id)
        .group_by(t.variant, t.arm, t.status)
    ):
        r = row(variant, arm)
        r.targeted += n
        if status == "queued":
            r.queued += n
        elif status == "held_out":
            r.held_out += n
        else:
            r.dropped += n
    key = (
        literal(f"campaign:{campaign.id}:", String)
        + cast(t.customer_id, String)
        + literal(":", String)
        + t.variant
    )
    sent = OutboxMessage.status == "sent"
    for variant, arm, n_sent, n_delivered in session.execute(
        select(
            t.variant,
            t.arm,
            func.sum(case((sent, 1), else_=0)),
            func.sum(case((sent & OutboxMessage.platform_message_id.is_not(None), 1), else_=0)),
        )
        .join(OutboxMessage, OutboxMessage.idempotency_key == key)
        .where(t.campaign_id == campaign.id)
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
    total = FunnelRow("*", "all")
    for r in ordered:
        for name, value in r.as_dict().items():
            if isinstance(value, int):
                setattr(total, name, getattr(total, name) + value)
    return [*ordered, total]


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
