"""A campaign's life: create → preview → pilot (with holdout) → evaluate → launch or stop.

Arms are fixed by a stable hash of campaign and customer id: ``holdout_share`` of the
audience never gets the message (the comparison group), ``pilot_share`` gets it first, the
rest after launch. After ``pilot_hours`` :func:`evaluate` compares the pilot's conversion
(customers with an order since the pilot started — a coupon redemption is an order) with
the holdout's, and the pilot's opt-out + block rate with ``[campaigns] max_optout_rate``;
it launches to the rest or stops, and writes the reason in ``stop_reason``/``verdict``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta

from sqlalchemy import and_, func, select, update
from sqlalchemy.orm import Session

from bot.app.config import Config
from bot.core.clock import Clock
from bot.core.templating import Renderer, TemplateRenderError
from bot.marketing import policy
from bot.marketing.campaigns.push import ChunkResult, Push, Variant, share_by_id
from bot.marketing.campaigns.spec import CampaignSpec, SpecError
from bot.marketing.coupons import definition
from storage.campaigns import Campaign, CampaignEvent, CampaignTarget, ConsentChange
from storage.db import Database
from storage.models import Customer, OutboxMessage
from storage.orders import Order
from storage.segments import compile_segment

__all__ = [
    "CampaignError",
    "Preview",
    "Services",
    "create_campaign",
    "draft_from_spec",
    "evaluate",
    "find_campaign",
    "launch",
    "pause",
    "preview",
    "request",
    "run_due",
    "start_pilot",
    "update_draft",
]

log = logging.getLogger(__name__)

PREVIEW_SAMPLES = 3


class CampaignError(ValueError):
    """A campaign action that cannot be done now, and why."""


@dataclass
class Services:
    """What campaign work needs from the process (scheduler jobs get it by id lookups)."""

    db: Database
    config: Config
    renderer: Renderer
    clock: Clock


def find_campaign(session: Session, name: str) -> Campaign | None:
    return session.scalars(select(Campaign).where(Campaign.name == name)).one_or_none()


def create_campaign(
    session: Session,
    spec: CampaignSpec,
    *,
    config: Config,
    renderer: Renderer,
    now: datetime,
    created_by: str = "",
) -> Campaign:
    """Store a draft campaign after checking its segment, templates and coupon."""
    if find_campaign(session, spec.name) is not None:
        raise CampaignError(f"a campaign named {spec.name!r} already exists")
    _check_spec(session, spec, config=config, renderer=renderer, now=now)
    campaign = draft_from_spec(spec, config=config, now=now, created_by=created_by)
    session.add(campaign)
    session.flush()
    return campaign


def _check_spec(
    session: Session, spec: CampaignSpec, *, config: Config, renderer: Renderer, now: datetime
) -> None:
    compile_segment(spec.segment, config=config, now=now, session=session)
    for v in spec.variants:
        if v.template:
            try:
                renderer.template_name(v.template, config.general.locale)
            except TemplateRenderError:
                raise CampaignError(f"no message template named {v.template!r}") from None
    if spec.coupon and definition(session, spec.coupon) is None:
        raise CampaignError(f"no coupon named {spec.coupon!r} (see [coupons] in the config)")


#: what editing a draft replaces (its name, author and history stay)
EDITABLE = ("segment", "variants", "buttons", "coupon", "priority", "pilot_share",
            "holdout_share", "pilot_hours", "send_at")  # fmt: skip


def update_draft(
    session: Session,
    campaign_id: int,
    spec: CampaignSpec,
    *,
    config: Config,
    renderer: Renderer,
    now: datetime,
) -> Campaign:
    """Replace a draft's definition with ``spec`` (checked as for a new one); a campaign
    that has started (piloting, running, ...) cannot change."""
    campaign = session.get(Campaign, campaign_id)
    if campaign is None:
        raise CampaignError(f"no campaign #{campaign_id}")
    if campaign.status != "draft":
        raise CampaignError(
            f"campaign {campaign.name!r} is {campaign.status}; only a draft can be edited"
        )
    _check_spec(session, spec, config=config, renderer=renderer, now=now)
    fresh = draft_from_spec(spec, config=config, now=now, created_by=campaign.created_by)
    for column in EDITABLE:
        setattr(campaign, column, getattr(fresh, column))
    return campaign


def draft_from_spec(
    spec: CampaignSpec, *, config: Config, now: datetime, created_by: str = ""
) -> Campaign:
    """The draft campaign row for ``spec`` (not added to a session), config defaults filled."""
    defaults = config.campaigns
    campaign = Campaign(
        name=spec.name,
        segment=spec.segment,
        variants={"items": [v.__dict__ for v in spec.variants]},
        buttons={
            "items": [list(b) for b in spec.buttons],
            "local_time": spec.local_time.isoformat() if spec.local_time else None,
        },
        coupon=spec.coupon,
        priority=spec.priority if spec.priority is not None else defaults.priority,
        pilot_share=spec.pilot_share if spec.pilot_share is not None else defaults.pilot_share,
        holdout_share=(
            spec.holdout_share if spec.holdout_share is not None else defaults.holdout_share
        ),
        pilot_hours=spec.pilot_hours if spec.pilot_hours is not None else defaults.pilot_hours,
        status="draft",
        verdict={},
        send_at=spec.send_at,
        created_by=created_by,
        created_at=now,
    )
    if campaign.pilot_share + campaign.holdout_share >= 1:
        raise SpecError("pilot and holdout together must be less than 100%")
    return campaign


def arm_function(campaign: Campaign):
    """customer id → "holdout" | "pilot" | "rollout" (stable for the campaign)."""
    holdout, pilot = campaign.holdout_share, campaign.pilot_share
    share = share_by_id("campaign", campaign.id, "arm")

    def arm(customer_id: int) -> str:
        x = share(customer_id)
        if x < holdout:
            return "holdout"
        if x < holdout + pilot:
            return "pilot"
        return "rollout"

    return arm


def build_push(campaign: Campaign, session: Session, config: Config, renderer: Renderer) -> Push:
    """The push engine set up for this campaign."""
    local = (campaign.buttons or {}).get("local_time")
    return Push(
        config=config,
        renderer=renderer,
        key_prefix=f"campaign:{campaign.id}",
        variants=[Variant(**v) for v in (campaign.variants or {}).get("items", [])],
        purpose="campaign",
        priority=campaign.priority,
        buttons=[tuple(b) for b in (campaign.buttons or {}).get("items", [])],
        button_prefix=f"c:{campaign.id}",
        coupon=definition(session, campaign.coupon) if campaign.coupon else None,
        campaign_id=campaign.id,
        send_at=campaign.send_at,
        local_time=time.fromisoformat(local) if local else None,
        arm_of=arm_function(campaign),
        extra_vars={"campaign": campaign.name},
    )


# -- preview -------------------------------------------------------------------------------


@dataclass
class Preview:
    """What a campaign would do: audience sizes and the text for sample customers."""

    audience: int
    reachable: int
    pilot: int
    holdout: int
    samples: list[tuple[str, str, str]] = field(default_factory=list)  # (name, variant, text)
    #: with ``locales``: (name, variant, locale, text) for each sample in each locale
    localized: list[tuple[str, str, str, str]] = field(default_factory=list)


def eligible_condition(config: Config, now: datetime):
    """SQL: not opted out and the frequency cap not full (what policy.check decides)."""
    marketing = config.marketing
    conditions = [Customer.marketing_opt_out.is_(False)]
    if marketing.max_per_window:
        # customers whose cap is full: one grouped pass over the window's rows (a range on
        # the outbox's created_at index), not one count per customer
        full = (
            select(OutboxMessage.customer_id)
            .where(
                OutboxMessage.customer_id.is_not(None),
                OutboxMessage.purpose.in_(policy.MARKETING_PURPOSES),
                OutboxMessage.created_at > now - timedelta(hours=marketing.window_hours),
                OutboxMessage.status.not_in(policy.NOT_COUNTED),
            )
            .group_by(OutboxMessage.customer_id)
            .having(func.count() >= marketing.max_per_window)
        )
        conditions.append(Customer.id.not_in(full))
    return and_(*conditions)


def preview(
    session: Session,
    campaign: Campaign,
    *,
    config: Config,
    renderer: Renderer,
    now: datetime,
    locales: tuple[str, ...] = (),
) -> Preview:
    """Count the audience (after consent and caps) and render for three sample customers
    (in their own locale; and in each of ``locales`` into ``localized``).

    A template error raises :class:`TemplateRenderError` here, before anything is sent.
    """
    compiled = compile_segment(campaign.segment, config=config, now=now, session=session)
    audience, reachable = session.execute(  # both counts in one pass over the segment
        compiled.select_count().with_only_columns(
            func.count(), func.count().filter(eligible_condition(config, now))
        )
    ).one()
    push = build_push(campaign, session, config, renderer)
    result = Preview(
        audience=audience,
        reachable=reachable,
        pilot=round(reachable * campaign.pilot_share),
        holdout=round(reachable * campaign.holdout_share),
    )
    ids = list(session.scalars(compiled.select_ids().order_by(Customer.id).limit(PREVIEW_SAMPLES)))
    customers = session.scalars(select(Customer).where(Customer.id.in_(ids))).all()
    if not customers:  # still prove every variant renders
        customers = [Customer(id=0, display_name="示例顾客", locale=config.general.locale)]
    coupon = None
    if push.coupon is not None:
        coupon = {"code": "SAMP-LE23-4567", "title": push.coupon.title, "expires": "-"}
    for c in customers:
        for variant in push.variants:
            customer = {
                "id": c.id,
                "name": c.display_name,
                "display_name": c.display_name,
                "city": c.city or "",
                "locale": c.locale,
            }
            variables = push.variables(customer, coupon)
            text = push.render(variant, c.locale or config.general.locale, variables)
            result.samples.append((c.display_name or f"#{c.id}", variant.name, text))
            for locale in locales:
                result.localized.append(
                    (
                        c.display_name or f"#{c.id}",
                        variant.name,
                        locale,
                        push.render(variant, locale, variables),
                    )
                )
    return result


# -- pushes --------------------------------------------------------------------------------


def run_push(
    services: Services, campaign_id: int, *, send_arms: set[str], record_arms: set[str]
) -> ChunkResult:
    """Stream the campaign's segment in chunks (one transaction each) through the push."""
    config, now = services.config, services.clock.now()
    with services.db.transaction() as session:
        campaign = session.get(Campaign, campaign_id)
        push = build_push(campaign, session, config, services.renderer)
        compiled = compile_segment(campaign.segment, config=config, now=now, session=session)
        if push.coupon is not None:
            session.expunge(push.coupon)
    push.send_arms, push.record_arms = frozenset(send_arms), frozenset(record_arms)
    return push.stream(services.db, compiled.select_ids(), now, config.campaigns.chunk_size)


def _set_status(
    services: Services, campaign_id: int, allowed: tuple[str, ...], **values
) -> Campaign:
    with services.db.transaction() as session:
        campaign = session.get(Campaign, campaign_id)
        if campaign is None:
            raise CampaignError(f"no campaign #{campaign_id}")
        if campaign.status not in allowed:
            raise CampaignError(
                f"campaign {campaign.name!r} is {campaign.status}; this needs it to be "
                + " or ".join(allowed)
            )
        for k, v in values.items():
            setattr(campaign, k, v)
        return campaign


def start_pilot(services: Services, campaign_id: int) -> ChunkResult:
    """Send to the pilot arm, record the holdout; the evaluation is due after pilot_hours."""
    now = services.clock.now()
    _set_status(
        services,
        campaign_id,
        ("draft", "pilot_pending"),
        status="pilot_pending",
        pilot_started_at=now,
    )
    result = run_push(services, campaign_id, send_arms={"pilot"}, record_arms={"pilot", "holdout"})
    _set_status(services, campaign_id, ("pilot_pending",), status="piloting")
    return result


def launch(services: Services, campaign_id: int) -> ChunkResult:
    """Send to everyone but the holdout (pilot rows already queued are not queued again)."""
    now = services.clock.now()
    campaign = _set_status(
        services,
        campaign_id,
        LAUNCHABLE,
        status="launch_pending",
        launched_at=now,
        stop_reason=None,
    )
    _move_rows(services, campaign.id, "paused", "pending")
    result = run_push(
        services,
        campaign_id,
        send_arms={"pilot", "rollout"},
        record_arms={"pilot", "holdout", "rollout"},
    )
    _set_status(services, campaign_id, ("launch_pending",), status="running")
    return result


LAUNCHABLE = ("draft", "pilot_pending", "piloting", "launch_pending", "paused", "stopped")


def request(session: Session, campaign: Campaign, action: str) -> None:
    """Ask the scheduler to pilot or launch (the push runs there, not in a chat handler)."""
    if action == "pilot":
        if campaign.status != "draft":
            raise CampaignError(
                f"campaign {campaign.name!r} is {campaign.status}; pilot needs a draft"
            )
        campaign.status = "pilot_pending"
    elif action == "launch":
        if campaign.status not in LAUNCHABLE:
            raise CampaignError(
                f"campaign {campaign.name!r} is {campaign.status}; it cannot launch"
            )
        campaign.status = "launch_pending"
    else:  # pragma: no cover - callers pass one of the two
        raise ValueError(action)


def run_due(services: Services) -> list[tuple[str, str]]:
    """Run requested pilots and launches, and judge pilots whose period is over."""
    now = services.clock.now()
    with services.db.sessions() as session:
        due = session.execute(
            select(
                Campaign.id,
                Campaign.name,
                Campaign.status,
                Campaign.pilot_started_at,
                Campaign.pilot_hours,
            )
            .where(Campaign.status.in_(("pilot_pending", "launch_pending", "piloting")))
            .order_by(Campaign.id)
        ).all()
    done = []
    for cid, name, status, started, hours in due:
        try:
            if status == "pilot_pending":
                start_pilot(services, cid)
                done.append((name, "pilot"))
            elif status == "launch_pending":
                launch(services, cid)
                done.append((name, "launch"))
            elif started is not None and now >= started + timedelta(hours=hours):
                campaign = evaluate(services, cid)
                done.append((name, campaign.status))
        except Exception:
            log.exception("campaign %s: scheduled %s failed", name, status)
    return done


def pause(services: Services, campaign_id: int) -> int:
    """Hold a campaign: its messages not yet sent wait (status ``paused``) until launch."""
    campaign = _set_status(services, campaign_id, ("piloting", "running"), status="paused")
    return _move_rows(services, campaign.id, "pending", "paused")


def _move_rows(services: Services, campaign_id: int, old: str, new: str) -> int:
    with services.db.transaction() as session:
        result = session.execute(
            update(OutboxMessage)
            .where(
                OutboxMessage.status == old,
                OutboxMessage.idempotency_key.like(f"campaign:{campaign_id}:%"),
            )
            .values(status=new)
            .execution_options(synchronize_session=False)
        )
        return result.rowcount or 0


# -- the pilot's verdict -------------------------------------------------------------------


def arm_rates(session: Session, campaign: Campaign, since: datetime) -> dict[str, dict]:
    """Per arm: size, customers who bought since ``since``, opt-outs and blocks."""
    rates: dict[str, dict] = {}
    for arm, status in (("pilot", "queued"), ("holdout", "held_out")):
        members = select(CampaignTarget.customer_id).where(
            CampaignTarget.campaign_id == campaign.id,
            CampaignTarget.arm == arm,
            CampaignTarget.status == status,
        )
        size = session.scalar(select(func.count()).select_from(members.subquery())) or 0
        bought = (
            session.scalar(
                select(func.count(func.distinct(Order.customer_id))).where(
                    Order.customer_id.in_(members), Order.ordered_at >= since
                )
            )
            or 0
        )
        opted = (
            session.scalar(
                select(func.count(func.distinct(ConsentChange.customer_id))).where(
                    ConsentChange.customer_id.in_(members),
                    ConsentChange.opted_out.is_(True),
                    ConsentChange.occurred_at >= since,
                )
            )
            or 0
        )
        blocked = (
            session.scalar(
                select(func.count()).where(
                    OutboxMessage.customer_id.in_(members),
                    OutboxMessage.idempotency_key.like(f"campaign:{campaign.id}:%"),
                    OutboxMessage.status == "unreachable",
                )
            )
            or 0
        )
        rates[arm] = {
            "size": size,
            "converted": bought,
            "conversion": bought / size if size else 0.0,
            "opted_out": opted,
            "blocked": blocked,
            "optout_rate": (opted + blocked) / size if size else 0.0,
        }
    return rates


def evaluate(services: Services, campaign_id: int) -> Campaign:
    """Decide after the pilot: launch to the rest, or stop with the reason."""
    cfg = services.config.campaigns
    now = services.clock.now()
    with services.db.transaction() as session:
        campaign = session.get(Campaign, campaign_id)
        if campaign is None or campaign.status != "piloting":
            return campaign
        due = campaign.pilot_started_at + timedelta(hours=campaign.pilot_hours)
        if now < due:
            raise CampaignError(f"the pilot of {campaign.name!r} runs until {due.isoformat()}")
        rates = arm_rates(session, campaign, campaign.pilot_started_at)
        pilot, holdout = rates["pilot"], rates["holdout"]
        uplift = pilot["conversion"] - holdout["conversion"]
        reason = None
        if pilot["size"] < cfg.min_pilot_size:
            reason = f"pilot too small: {pilot['size']} < {cfg.min_pilot_size} customers"
        elif pilot["optout_rate"] > cfg.max_optout_rate:
            reason = (
                f"opt-out/block rate {pilot['optout_rate']:.1%} in the pilot is above "
                f"{cfg.max_optout_rate:.1%}"
            )
        elif uplift <= cfg.min_uplift:
            reason = (
                f"pilot conversion {pilot['conversion']:.1%} did not beat the holdout's "
                f"{holdout['conversion']:.1%} by more than {cfg.min_uplift:.1%}"
            )
        campaign.verdict = {
            "at": now.isoformat(),
            "pilot": pilot,
            "holdout": holdout,
            "uplift": uplift,
            "decision": "stop" if reason else "launch",
            "reason": reason or f"uplift {uplift:.1%} beats {cfg.min_uplift:.1%}",
        }
        if reason:
            campaign.status = "stopped"
            campaign.stop_reason = reason
            log.info("campaign %s stopped after its pilot: %s", campaign.name, reason)
    if reason is None:
        log.info(
            "campaign %s: pilot beat the holdout by %.1f%%; launching", campaign_id, uplift * 100
        )
        launch(services, campaign_id)
    with services.db.sessions() as session:
        return session.get(Campaign, campaign_id)


def record_click(
    session: Session, campaign_id: int, customer_id: int, action: str, now: datetime
) -> bool:
    """A tracked button was pressed; True the first time for this customer and action."""
    from storage.db import insert_ignore

    return (
        insert_ignore(
            session,
            CampaignEvent,
            {
                "campaign_id": campaign_id,
                "customer_id": customer_id,
                "kind": "click",
                "detail": action[:64],
                "occurred_at": now,
            },
            ["campaign_id", "customer_id", "kind", "detail"],
        )
        == 1
    )
