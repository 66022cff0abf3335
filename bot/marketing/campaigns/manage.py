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
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Select,
    all_,
    and_,
    bindparam,
    func,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

from bot.app.config import Config
from bot.core.signals import LinkClicked
from bot.core.template_budget import explain
from bot.core.templating import Renderer, TemplateRenderError
from bot.customers.segments import compile_segment
from bot.jobs import queue
from bot.jobs.worker import JobContext, JobRefused
from bot.marketing import policy
from bot.marketing.campaigns.jobs import enqueue_preparation, lock_of
from bot.marketing.campaigns.push import ChunkResult, Push, Variant, share_by_id
from bot.marketing.campaigns.spec import CampaignSpec, SpecError
from bot.marketing.campaigns.status import (
    ACTIVE,
    CampaignError,
    CampaignStatus,
    IllegalCampaignTransition,
    transition,
)
from bot.marketing.coupons import definition, format_code, new_code
from bot.marketing.links import preview_track
from bot.outbox.states import OutboxPurpose, OutboxStatus, SourceKind
from bot.outbox.states import transition as transition_row
from storage.campaigns import Campaign, CampaignEvent, CampaignTarget, ConsentChange
from storage.db import insert_ignore, rowcount
from storage.models import Customer, OutboxMessage
from storage.orders import Order

if TYPE_CHECKING:
    from bot.app.services import Services

__all__ = [
    "CampaignError",
    "IllegalCampaignTransition",
    "Preview",
    "attribute_opt_out",
    "check_known_tags",
    "check_version",
    "count_link_click",
    "create_campaign",
    "draft_from_spec",
    "evaluate",
    "find_campaign",
    "hold",
    "launch",
    "list_campaigns",
    "pause",
    "prepare",
    "preview",
    "request",
    "require_audience",
    "run_due",
    "start_pilot",
    "stats_summary",
    "tell_verdict",
    "update_draft",
]

log = logging.getLogger(__name__)

PREVIEW_SAMPLES = 3


def find_campaign(session: Session, name: str) -> Campaign | None:
    return session.scalars(select(Campaign).where(Campaign.name == name)).one_or_none()


SAMPLE_NAME = "名" * 128  # the longest name a platform allows


def _trial_render(renderer: Renderer, text: str, spec: CampaignSpec, config: Config) -> None:
    """Render typed campaign text once with sample values under the typed-text budget, so a
    text that would spend the process is refused when it is saved (other render errors
    are the preview's to show)."""
    customer = {
        "id": 0,
        "name": SAMPLE_NAME,
        "display_name": SAMPLE_NAME,
        "city": "杭州",
        "locale": config.general.locale,
    }
    coupon = None
    if spec.coupon:
        coupon = {"code": "SAMP-LE23-4567", "title": "示例", "expires": "2026-12-31"}
    try:
        renderer.render_string(
            text, customer=customer, coupon=coupon, track=preview_track, campaign=spec.name
        )
    except TemplateRenderError as exc:
        if explain(exc, None) is not None:
            raise CampaignError(f"the text is over its budget: {exc.problem}") from exc


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
        raise CampaignError("", "campaign.error.exists", name=spec.name)
    _check_spec(session, spec, config=config, renderer=renderer, now=now)
    campaign = draft_from_spec(spec, config=config, now=now, created_by=created_by)
    session.add(campaign)
    session.flush()
    return campaign


def _check_spec(
    session: Session, spec: CampaignSpec, *, config: Config, renderer: Renderer, now: datetime
) -> None:
    compile_segment(spec.segment, config=config, now=now, session=session)
    check_known_tags(session, spec.segment)
    for v in spec.variants:
        if v.template:
            try:
                renderer.template_name(v.template, config.general.locale)
            except TemplateRenderError:
                raise CampaignError(f"no message template named {v.template!r}") from None
        else:
            _trial_render(renderer, v.text, spec, config)
    if spec.coupon and definition(session, spec.coupon) is None:
        raise CampaignError(f"no coupon named {spec.coupon!r} (see [coupons] in the config)")


#: what editing a draft replaces (its name, author and history stay)
EDITABLE = ("segment", "variants", "buttons", "coupon", "priority", "weight", "pilot_share",
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
    campaign.version = (campaign.version or 0) + 1
    return campaign


def check_version(session: Session, campaign_id: int, seen: int) -> None:
    """Claim campaign ``campaign_id`` at the version its reader saw, before acting on it:
    one atomic UPDATE moves the version on if it is still ``seen`` — of two managers acting
    on the same version, one goes ahead and the other gets a :class:`CampaignError`
    (``campaign.changed_meanwhile``) and nothing is done for them."""
    claimed = rowcount(
        session.execute(
            update(Campaign)
            .where(Campaign.id == campaign_id, Campaign.version == seen)
            .values(version=Campaign.version + 1)
        )
    )
    if not claimed:
        current = session.execute(
            select(Campaign.name, Campaign.version, Campaign.status).where(
                Campaign.id == campaign_id
            )
        ).one_or_none()
        if current is None:
            raise CampaignError(f"no campaign #{campaign_id}")
        name, version, status = current
        raise CampaignError(
            key="campaign.changed_meanwhile", name=name, seen=seen, version=version, status=status
        )


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
        weight=spec.weight or 1,
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
        purpose=OutboxPurpose.CAMPAIGN,
        source=(SourceKind.CAMPAIGN, campaign.id),
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


def _cap_full(config: Config, now: datetime) -> Select | None:
    """The customers whose frequency cap is full (None without a cap): one grouped pass over
    the window's marketing rows (a range on the outbox's created_at index), not one count
    per customer."""
    marketing = config.marketing
    if not marketing.max_per_window:
        return None
    return (
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


def capped_customers(session: Session, config: Config, now: datetime) -> list[int] | Select | None:
    """:func:`_cap_full` looked up once for several queries: on PostgreSQL a list of ids (the
    grouping gets the memory to stay off disk, as the RFM recompute's), elsewhere the
    subquery; None without a cap."""
    full = _cap_full(config, now)
    if full is None or session.get_bind().dialect.name != "postgresql":
        return full
    session.connection().exec_driver_sql("SET LOCAL work_mem = '64MB'")
    return list(session.scalars(full))


#: up to this many ids a list is a NOT IN list; beyond, one array parameter (<> ALL)
_IN_LIST = 500


def eligible_condition(config: Config, now: datetime, capped: Any = _cap_full):
    """SQL: not opted out and the frequency cap not full (what policy.check decides);
    ``capped`` is :func:`capped_customers` if already looked up."""
    conditions: list[ColumnElement[bool]] = [Customer.marketing_opt_out.is_(False)]
    if capped is _cap_full:
        capped = _cap_full(config, now)
    if isinstance(capped, list) and len(capped) > _IN_LIST:
        conditions.append(
            Customer.id != all_(bindparam(None, value=capped, type_=ARRAY(BigInteger)))
        )
    elif capped is not None:
        conditions.append(Customer.id.not_in(capped))
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
    capped = capped_customers(session, config, now)  # once, for the counts and the samples
    eligible = eligible_condition(config, now, capped)
    audience, reachable = session.execute(  # both counts in one pass over the segment
        compiled.select_count().with_only_columns(func.count(), func.count().filter(eligible))
    ).one()
    push = build_push(campaign, session, config, renderer)
    result = Preview(
        audience=audience,
        reachable=reachable,
        pilot=round(reachable * campaign.pilot_share),
        holdout=round(reachable * campaign.holdout_share),
    )
    # samples among the customers who would really get it (not opted out, not capped)
    ids = list(
        session.scalars(
            compiled.select_ids().where(eligible).order_by(Customer.id).limit(PREVIEW_SAMPLES)
        )
    )
    customers = session.scalars(select(Customer).where(Customer.id.in_(ids))).all()
    if not customers:  # still prove every variant renders
        customers = [Customer(id=0, display_name="示例顾客", locale=config.general.locale)]
    coupon = None
    for c in customers:
        if push.coupon is not None:  # a code and expiry as the customer would see them
            expires = (now + timedelta(days=push.coupon.valid_days)).astimezone(
                push.zone(c.timezone)
            )
            coupon = {
                "code": format_code(new_code()),
                "title": push.coupon.title,
                "expires": expires.strftime("%Y-%m-%d"),
            }
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
    services: Services,
    campaign_id: int,
    *,
    send_arms: set[str],
    record_arms: set[str],
    progress: Callable[[int], None] | None = None,
) -> ChunkResult:
    """Stream the campaign's segment in chunks (one transaction each) through the push."""
    config, now = services.config, services.clock.now()
    with services.db.transaction() as session:
        campaign = session.get_one(Campaign, campaign_id)
        push = build_push(campaign, session, config, services.renderer)
        compiled = compile_segment(campaign.segment, config=config, now=now, session=session)
        if push.coupon is not None:
            session.expunge(push.coupon)
    push.send_arms, push.record_arms = frozenset(send_arms), frozenset(record_arms)
    push.on_chunk = progress
    return push.stream(services.db, compiled.select_ids(), now, config.campaigns.chunk_size)


def _set_status(services: Services, campaign_id: int, status: str, **values) -> Campaign:
    with services.db.transaction() as session:
        campaign = session.get(Campaign, campaign_id)
        if campaign is None:
            raise CampaignError(f"no campaign #{campaign_id}")
        _move(campaign, status)
        for k, v in values.items():
            setattr(campaign, k, v)
        return campaign


def _move(campaign: Campaign, status: str) -> None:
    """The one place a campaign's status changes (checked by its transition table); the
    version moves on with it."""
    campaign.status = transition(campaign.status, status, name=campaign.name).value
    campaign.version = (campaign.version or 0) + 1


def start_pilot(
    services: Services, campaign_id: int, *, progress: Callable[[int], None] | None = None
) -> ChunkResult:
    """Send to the pilot arm, record the holdout; the evaluation is due after pilot_hours,
    counted from the first start (a preparation taken over after a crash keeps it)."""
    now = services.clock.now()
    with services.db.transaction() as session:
        campaign = session.get(Campaign, campaign_id)
        if campaign is None:
            raise CampaignError(f"no campaign #{campaign_id}")
        _move(campaign, CampaignStatus.PILOT_PENDING)
        if campaign.pilot_started_at is None:
            campaign.pilot_started_at = now
    result = run_push(
        services,
        campaign_id,
        send_arms={"pilot"},
        record_arms={"pilot", "holdout"},
        progress=progress,
    )
    _set_status(services, campaign_id, CampaignStatus.PILOTING)
    return result


def launch(
    services: Services, campaign_id: int, *, progress: Callable[[int], None] | None = None
) -> ChunkResult:
    """Send to everyone but the holdout (pilot rows already queued are not queued again)."""
    now = services.clock.now()
    campaign = _set_status(
        services, campaign_id, CampaignStatus.LAUNCH_PENDING, launched_at=now, stop_reason=None
    )
    with services.db.transaction() as session:
        _move_rows(session, campaign.id, OutboxStatus.PAUSED, OutboxStatus.PENDING)
    result = run_push(
        services,
        campaign_id,
        send_arms={"pilot", "rollout"},
        record_arms={"pilot", "holdout", "rollout"},
        progress=progress,
    )
    _set_status(services, campaign_id, CampaignStatus.RUNNING)
    return result


def request(
    session: Session,
    campaign: Campaign,
    action: str,
    *,
    config: Config | None = None,
    now: datetime | None = None,
    created_by: str = "",
) -> queue.Enqueued:
    """Ask a worker to pilot or launch: the campaign moves to ``pilot_pending`` /
    ``launch_pending`` and its preparation is queued as a job in the caller's transaction
    (the push runs in a worker process, never in a chat handler or a web request). With
    ``config`` and ``now`` an audience of nobody is refused first."""
    if config is not None and now is not None:
        require_audience(session, campaign, config=config, now=now)
    if action == "pilot":
        if campaign.status != CampaignStatus.DRAFT:
            raise CampaignError(
                f"campaign {campaign.name!r} is {campaign.status}; pilot needs a draft"
            )
        _move(campaign, CampaignStatus.PILOT_PENDING)
    elif action == "launch":
        _move(campaign, CampaignStatus.LAUNCH_PENDING)
    else:  # pragma: no cover - callers pass one of the two
        raise ValueError(action)
    session.flush()
    return enqueue_preparation(
        session,
        campaign.id,
        action,
        campaign.version,
        now=now or datetime.now(UTC),
        created_by=created_by,
        max_attempts=config.jobs.max_attempts if config is not None else 3,
    )


def run_due(services: Services) -> list[tuple[str, str]]:
    """The scheduler's part: queue the preparation of requested pilots and launches that
    have no job (requested before this version, or a job that failed), and the verdict of
    pilots whose period is over. Workers run them (:func:`prepare`); returns what was queued
    as (campaign name, step)."""
    now = services.clock.now()
    queued: list[tuple[str, str]] = []
    with services.db.transaction() as session:
        due = session.execute(
            select(
                Campaign.id,
                Campaign.name,
                Campaign.status,
                Campaign.pilot_started_at,
                Campaign.pilot_hours,
                Campaign.version,
            )
            .where(Campaign.status.in_(("pilot_pending", "launch_pending", "piloting")))
            .order_by(Campaign.id)
        ).all()
        for cid, name, status, started, hours, version in due:
            if status == "piloting":
                if started is None or now < started + timedelta(hours=hours):
                    continue
                step = "evaluate"
            else:
                step = "pilot" if status == "pilot_pending" else "launch"
            if queue.has_open(session, lock_of(cid)):
                continue  # queued or being prepared: once is enough
            job = enqueue_preparation(
                session,
                cid,
                step,
                version,
                now=now,
                created_by="scheduler",
                max_attempts=services.config.jobs.max_attempts,
            )
            if job.created:
                queued.append((name, step))
    return queued


class _PausedMeanwhile(Exception):
    """The campaign was paused while it was being prepared."""


def prepare(services: Services, job: JobContext) -> dict[str, Any]:
    """Run one preparation job (``campaign.prepare``): the requested step if the campaign
    is still where the request left it (else nothing: it was done, paused or stopped).

    Re-running after a crash is safe: the push's idempotency keys (one outbox row per
    campaign and customer) queue nobody twice. A campaign paused while it is prepared
    stops after the chunk in progress, and what that chunk queued waits with the rest."""
    campaign_id, step = int(job.payload["campaign_id"]), str(job.payload["step"])
    with services.db.sessions() as session:
        campaign = session.get(Campaign, campaign_id)
        if campaign is None:
            raise JobRefused(f"no campaign #{campaign_id}")
        status = campaign.status
        total = None
        if step in ("pilot", "launch") and status == f"{step}_pending":
            compiled = compile_segment(
                campaign.segment, config=services.config, now=services.clock.now(),
                session=session,
            )  # fmt: skip
            total = int(session.scalar(compiled.select_count()) or 0)
    done = 0

    def advance(rows: int) -> None:
        nonlocal done
        done += rows
        job.progress(done, total)
        with services.db.sessions() as session:  # paused meanwhile: stop queuing here
            if session.get_one(Campaign, campaign_id).status == CampaignStatus.PAUSED:
                raise _PausedMeanwhile

    try:
        if step == "pilot" and status == CampaignStatus.PILOT_PENDING:
            outcome: dict[str, Any] = start_pilot(services, campaign_id, progress=advance).as_dict()
        elif step == "launch" and status == CampaignStatus.LAUNCH_PENDING:
            outcome = launch(services, campaign_id, progress=advance).as_dict()
        elif step == "evaluate" and status == CampaignStatus.PILOTING:
            judged = evaluate(services, campaign_id)
            outcome = {"verdict": (judged.verdict or {}).get("decision") if judged else None}
        else:
            return {"step": step, "skipped": True, "status": status}
    except _PausedMeanwhile:
        # rows queued by a chunk that committed after the pause wait like the others
        with services.db.transaction() as session:
            held = _move_rows(session, campaign_id, OutboxStatus.PENDING, OutboxStatus.PAUSED)
        job.progress(done, total, force=True)
        return {"step": step, "status": CampaignStatus.PAUSED.value, "held_late": held}
    except CampaignError as exc:
        raise JobRefused(exc.text("en")) from exc
    job.progress(done, total, force=True)
    with services.db.sessions() as session:
        final = session.get_one(Campaign, campaign_id).status
    return {"step": step, "status": final, **outcome}


def pause(services: Services, campaign_id: int) -> int:
    """:func:`hold` a campaign by id in its own transaction (the CLI's ``pause``)."""
    with services.db.transaction() as session:
        campaign = session.get(Campaign, campaign_id)
        if campaign is None:
            raise CampaignError(f"no campaign #{campaign_id}")
        return hold(session, campaign)


def hold(session: Session, campaign: Campaign) -> int:
    """Pause a campaign (chat ``/campaign pause`` and CLI ``pause``): its messages not yet
    sent wait (status ``paused``) until it is launched again; returns how many. Pausing a
    paused campaign is refused (``campaign.error.already_paused``)."""
    if campaign.status == CampaignStatus.PAUSED:
        raise CampaignError("", "campaign.error.already_paused", name=campaign.name)
    _move(campaign, CampaignStatus.PAUSED)
    return _move_rows(session, campaign.id, OutboxStatus.PENDING, OutboxStatus.PAUSED)


def _move_rows(session: Session, campaign_id: int, old: str, new: str) -> int:
    result = session.execute(
        update(OutboxMessage)
        .where(
            OutboxMessage.status == old,
            OutboxMessage.source_kind == SourceKind.CAMPAIGN,
            OutboxMessage.source_id == campaign_id,
        )
        .values(status=transition_row(old, new).value)
        .execution_options(synchronize_session=False)
    )
    return rowcount(result)


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
                    OutboxMessage.source_kind == SourceKind.CAMPAIGN,
                    OutboxMessage.source_id == campaign.id,
                    OutboxMessage.status == OutboxStatus.UNREACHABLE,
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


def evaluate(services: Services, campaign_id: int) -> Campaign | None:
    """Decide after the pilot: launch to the rest, or stop with the reason."""
    cfg = services.config.campaigns
    now = services.clock.now()
    with services.db.transaction() as session:
        campaign = session.get(Campaign, campaign_id)
        if campaign is None or campaign.status != "piloting":
            return campaign
        started = campaign.pilot_started_at
        assert started is not None  # set when the pilot starts
        due = started + timedelta(hours=campaign.pilot_hours)
        if now < due:
            raise CampaignError(f"the pilot of {campaign.name!r} runs until {due.isoformat()}")
        rates = arm_rates(session, campaign, started)
        pilot, holdout = rates["pilot"], rates["holdout"]
        uplift = pilot["conversion"] - holdout["conversion"]
        reason = None
        code = "uplift"
        if pilot["size"] < cfg.min_pilot_size:
            code = "too_small"
            reason = f"pilot too small: {pilot['size']} < {cfg.min_pilot_size} customers"
        elif pilot["optout_rate"] > cfg.max_optout_rate:
            code = "optout"
            reason = (
                f"opt-out/block rate {pilot['optout_rate']:.1%} in the pilot is above "
                f"{cfg.max_optout_rate:.1%}"
            )
        elif uplift <= cfg.min_uplift:
            code = "no_uplift"
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
            "reason_code": code,
            "limits": {
                "min_pilot_size": cfg.min_pilot_size,
                "max_optout_rate": cfg.max_optout_rate,
                "min_uplift": cfg.min_uplift,
            },
        }
        tell_verdict(session, campaign, services.config, services.renderer, now)
        if reason:
            _move(campaign, CampaignStatus.STOPPED)
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


def count_link_click(session: Session, event: LinkClicked) -> None:
    """Follows :class:`LinkClicked`: a campaign's tracked link counts as its ``clicked``."""
    if event.campaign_id is not None:
        record_click(
            session, event.campaign_id, event.customer_id, f"link:{event.seq}", event.occurred_at
        )


def attribute_opt_out(session: Session, customer_id: int, now: datetime) -> None:
    """Count the opt-out against the active campaigns that messaged this customer."""
    campaigns = session.scalars(
        select(CampaignTarget.campaign_id)
        .join(Campaign, Campaign.id == CampaignTarget.campaign_id)
        .where(
            CampaignTarget.customer_id == customer_id,
            CampaignTarget.status == "queued",
            Campaign.status.in_(ACTIVE),
        )
    ).all()
    for campaign_id in campaigns:
        insert_ignore(
            session,
            CampaignEvent,
            {
                "campaign_id": campaign_id,
                "customer_id": customer_id,
                "kind": "opt_out",
                "detail": "",
                "occurred_at": now,
            },
            ["campaign_id", "customer_id", "kind", "detail"],
        )


# -- safety and reading in chat ------------------------------------------------------------


def check_known_tags(session: Session, segment: str) -> None:
    """Refuse tags no customer ever had (a typo such as ``tag:周末出``), suggesting the
    closest existing tags ("did you mean 周末出游?")."""
    import difflib

    from bot.customers.segment_language import And, Not, Or, Predicate, TagScore, parse
    from storage.models import Tag

    wanted: list[str] = []
    stack = [parse(segment)]
    while stack:
        node = stack.pop()
        if isinstance(node, (And, Or)):
            stack.extend(node.items)
        elif isinstance(node, Not):
            stack.append(node.item)
        elif isinstance(node, Predicate):
            if node.field == "tag" and isinstance(node.value, str):
                wanted.append(node.value)
            elif isinstance(node.value, TagScore):
                wanted.append(node.value.tag)
    if not wanted:
        return
    known = set(session.scalars(select(Tag.name).where(Tag.name.in_(wanted))))
    for name in wanted:
        if name in known:
            continue
        every = list(session.scalars(select(Tag.name).order_by(Tag.name).limit(5000)))
        close = difflib.get_close_matches(name, every, n=3, cutoff=0.4)
        close += [n for n in every if (name in n or n in name) and n not in close][:3]
        if close:
            raise CampaignError(
                "", "campaign.error.unknown_tag_suggest", tag=name, suggestions="、".join(close[:3])
            )
        raise CampaignError("", "campaign.error.unknown_tag", tag=name)


def require_audience(session: Session, campaign: Campaign, *, config: Config, now: datetime) -> int:
    """The number of customers the campaign can reach now; refuses an audience of nobody."""
    compiled = compile_segment(campaign.segment, config=config, now=now, session=session)
    reachable = session.scalar(compiled.select_count().where(eligible_condition(config, now))) or 0
    if reachable == 0:
        raise CampaignError("", "campaign.error.empty_audience", name=campaign.name)
    return reachable


def list_campaigns(session: Session, limit: int = 50) -> list[dict]:
    """The newest campaigns with status, segment, audience recorded and messages sent."""
    campaigns = list(
        session.scalars(select(Campaign).order_by(Campaign.id.desc()).limit(min(limit, 500)))
    )
    ids = [c.id for c in campaigns]
    targeted = dict(
        session.execute(
            select(CampaignTarget.campaign_id, func.count())
            .where(CampaignTarget.campaign_id.in_(ids))
            .group_by(CampaignTarget.campaign_id)
        ).all()
    )
    return [
        {
            "name": c.name,
            "status": c.status,
            "segment": c.segment,
            "targeted": targeted.get(c.id, 0),
            "created_at": c.created_at,
            "stop_reason": c.stop_reason,
        }
        for c in campaigns
    ]


def stats_summary(rows) -> dict:
    """A short reading of a funnel: totals and the rates a manager asks about."""

    rows = [r for r in rows if r.variant != "*"]  # the funnel's own total row

    def total(name: str) -> int:
        return sum(getattr(r, name) for r in rows)

    sent, delivered = total("sent"), total("delivered")
    summary: dict[str, Any] = {
        "targeted": total("targeted"),
        "held_out": total("held_out"),
        "dropped": total("dropped"),
        "queued": total("queued"),
        "sent": sent,
        "delivered": delivered,
        "clicked": total("clicked"),
        "redeemed": total("redeemed"),
        "opted_out": total("opted_out"),
    }
    base = delivered or sent
    summary["delivery_rate"] = delivered / sent if sent else 0.0
    summary["click_rate"] = summary["clicked"] / base if base else 0.0
    summary["redeem_rate"] = summary["redeemed"] / base if base else 0.0
    summary["optout_rate"] = summary["opted_out"] / base if base else 0.0
    dropped: dict[str, int] = {}
    for r in rows:
        for reason, n in (r.dropped_by or {}).items():
            dropped[reason] = dropped.get(reason, 0) + n
    summary["dropped_by"] = dropped
    return summary


def tell_verdict(
    session: Session, campaign: Campaign, config: Config, renderer: Renderer, now: datetime
) -> None:
    """Tell the manager who created the campaign (else every manager) in chat, through
    the outbox, that the pilot's verdict launches or stops it, with reason and numbers."""
    from bot.core.events import ConversationRef
    from bot.outbox import queue as outbox

    creator = campaign.created_by or ""
    channel = creator.partition(":")[0]
    targets = [creator] if channel in config.campaigns.channels else list(config.roles.managers)
    verdict = campaign.verdict or {}
    for target in targets:
        channel, _, user = target.partition(":")
        if not user:
            continue
        text = renderer.render(
            "campaign_verdict", config.general.locale, campaign=campaign, verdict=verdict
        )
        outbox.enqueue(
            session,
            key=f"campaign:{campaign.id}:verdict:{target}"[:200],
            to=ConversationRef(channel, user, user),
            text=text,
            purpose="staff_alert",
            priority=20,
            now=now,
        )
