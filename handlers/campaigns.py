"""Campaign commands for managers, ``/redeem`` for staff, consent for customers, clicks.

Managers (``[roles] managers``): ``/campaign new NAME segment=... template=...|text=...
[coupon=] [pilot=5%] [holdout=5%] [hours=24] [at=09:00] [buttons="领券=claim"]
[variants="a:tpl1,b:tpl2"]``, ``/campaign preview|pilot|launch|pause|stats NAME``, ``/campaign list``. Pilot
and launch are handed to the scheduler (the push runs there, not in a chat handler).
``/redeem CODE [amount]`` redeems a coupon at the till. Customers opt out with ``退订``,
``TD``, ``stop`` or ``/unsubscribe`` and back in with ``订阅``, ``start`` or
``/subscribe``; every change is recorded in ``consent_changes``. Tracked campaign buttons
(``c:<campaign>:<variant>:<action>``) are recorded as clicks.
"""

from __future__ import annotations

from bot.core.amounts import AmountError, parse_amount
from bot.core.context import Context
from bot.core.events import EventKind
from bot.core.filters import Filter
from bot.core.i18n import catalogue, t
from bot.core.template_budget import explain
from bot.core.templating import TemplateRenderError
from bot.customers.segment_language import SegmentError
from bot.marketing.campaigns import manage
from bot.marketing.campaigns.funnel import funnel
from bot.marketing.campaigns.spec import SpecError, parse_spec
from bot.marketing.coupons import format_code, redeem
from storage.campaigns import Campaign, ConsentChange

__all__ = [
    "OPT_IN_WORDS",
    "OPT_OUT_WORDS",
    "campaign_command",
    "consent",
    "is_consent",
    "is_tracked_button",
    "redeem_command",
    "tracked_button",
]

OPT_OUT_WORDS = frozenset({"退订", "td", "stop", "unsubscribe", "/unsubscribe", "/td", "/stop"})
OPT_IN_WORDS = frozenset({"订阅", "start marketing", "subscribe", "/subscribe"})


def _word(ctx: Context) -> str:
    return " ".join(ctx.event.text.strip().lower().split())


is_consent = Filter(
    lambda c: (
        c.event.kind in (EventKind.MESSAGE, EventKind.COMMAND)
        and c.event.is_private
        and _word(c) in OPT_OUT_WORDS | OPT_IN_WORDS
    ),
    "consent",
)

is_tracked_button = Filter(
    lambda c: c.event.kind is EventKind.BUTTON and (c.event.button_data or "").startswith("c:"),
    "tracked_button",
)


def consent(ctx: Context) -> None:
    """Opt out (or in) of marketing; nothing else answers this message."""
    assert ctx.customer is not None
    out = _word(ctx) in OPT_OUT_WORDS
    changed = ctx.customer.marketing_opt_out != out
    ctx.customer.marketing_opt_out = out
    if changed:
        ctx.session.add(
            ConsentChange(
                customer_id=ctx.customer.id,
                opted_out=out,
                source=f"{ctx.event.channel}:{'command' if ctx.event.command else 'keyword'}",
                text=ctx.event.text[:200],
                occurred_at=ctx.now,
            )
        )
        if out:
            manage.attribute_opt_out(ctx.session, ctx.customer.id, ctx.now)
    ctx.reply("consent_opted_out" if out else "consent_opted_in", changed=changed)


def tracked_button(ctx: Context) -> None:
    """``c:<campaign>:<variant>:<action>``: record the click, acknowledge it."""
    assert ctx.customer is not None
    parts = (ctx.event.button_data or "").split(":", 3)
    if len(parts) != 4 or not parts[1].isdigit():
        return
    campaign = ctx.session.get(Campaign, int(parts[1]))
    if campaign is None:
        return
    manage.record_click(ctx.session, campaign.id, ctx.customer.id, parts[3], ctx.now)
    ctx.reply("campaign_clicked", action=parts[3], campaign=campaign.name)


def campaign_command(ctx: Context) -> None:
    """``/campaign new|preview|pilot|launch|pause|stats ...`` (managers)."""
    args = ctx.event.text.strip().split(maxsplit=2)
    action = args[1].lower() if len(args) > 1 else ""
    rest = args[2] if len(args) > 2 else ""
    try:
        if action == "new":
            _new(ctx, rest)
        elif action == "list":
            _list(ctx)
        elif action in ("preview", "pilot", "launch", "pause", "stats") and rest:
            name = rest.split()[0][:64]
            campaign = manage.find_campaign(ctx.session, name)
            if campaign is None:
                ctx.reply(
                    "campaign_error", problem=t("campaign.error.no_such", ctx.locale, name=name)
                )
                return
            getattr(_Actions, action)(ctx, campaign)
        else:
            ctx.reply("campaign_usage")
    except manage.CampaignError as exc:
        ctx.reply("campaign_error", problem=explain(exc, ctx.locale) or exc.text(ctx.locale))
    except SegmentError as exc:
        ctx.reply("campaign_error", problem=explain(exc, ctx.locale) or exc.text(ctx.locale))
    except SpecError as exc:
        ctx.reply("campaign_error", problem=exc.text(ctx.locale))


def _list(ctx: Context) -> None:
    """``/campaign list``: the newest campaigns, their status and reach."""
    campaigns = manage.list_campaigns(ctx.session, limit=20)
    for c in campaigns:
        c["status_label"] = label("campaign.status", c["status"], ctx.locale)
    ctx.reply("campaign_list", campaigns=campaigns)


def label(area: str, code: str | None, locale: str) -> str:
    """``t(f"{area}.{code}")``, or the area's ``other`` text for a code it does not know."""
    key = f"{area}.{code}"
    return t(key if key in catalogue() else f"{area}.other", locale)


def _new(ctx: Context, rest: str) -> None:
    spec = parse_spec(rest, ctx.config)
    renderer = ctx.renderer
    campaign = manage.create_campaign(
        ctx.session,
        spec,
        config=ctx.config,
        renderer=renderer,
        now=ctx.now,
        created_by=f"{ctx.event.channel}:{ctx.event.actor.user_id}",
    )
    ctx.reply("campaign_created", campaign=campaign)


def _request(ctx: Context, campaign: Campaign, action: str) -> None:
    """Pilot or launch: a worker prepares it (the request queues the job)."""
    manage.request(
        ctx.session,
        campaign,
        action,
        config=ctx.config,
        now=ctx.now,
        created_by=f"{ctx.event.channel}:{ctx.event.actor.user_id}",
    )
    ctx.reply("campaign_requested", campaign=campaign, action=action)


class _Actions:
    @staticmethod
    def preview(ctx: Context, campaign: Campaign) -> None:
        try:
            result = manage.preview(
                ctx.session, campaign, config=ctx.config, renderer=ctx.renderer, now=ctx.now
            )
        except TemplateRenderError as exc:
            ctx.reply("campaign_error", problem=f"the template does not render: {exc}")
            return
        ctx.reply("campaign_preview", campaign=campaign, preview=result)

    @staticmethod
    def pilot(ctx: Context, campaign: Campaign) -> None:
        _request(ctx, campaign, "pilot")

    @staticmethod
    def launch(ctx: Context, campaign: Campaign) -> None:
        _request(ctx, campaign, "launch")

    @staticmethod
    def pause(ctx: Context, campaign: Campaign) -> None:
        held = manage.hold(ctx.session, campaign)
        ctx.reply("campaign_paused", campaign=campaign, held=held)

    @staticmethod
    def stats(ctx: Context, campaign: Campaign) -> None:
        """A short readable summary with rates (the full table: ``siyu report campaign``)."""
        summary = manage.stats_summary(funnel(ctx.session, campaign))
        dropped = [
            (label("campaign.drop", reason, ctx.locale), n)
            for reason, n in sorted(summary["dropped_by"].items(), key=lambda kv: -kv[1])
        ]
        ctx.reply(
            "campaign_stats",
            campaign=campaign,
            summary=summary,
            dropped=dropped,
            status_label=label("campaign.status", campaign.status, ctx.locale),
        )


def redeem_command(ctx: Context) -> None:
    """``/redeem CODE [amount]``: staff redeem a customer's coupon."""
    args = ctx.event.args
    if not args:
        ctx.reply("redeem_usage")
        return
    amount_cents = None
    if len(args) > 1:
        try:
            amount_cents = parse_amount(args[1])
        except AmountError as exc:
            locale = ctx.customer.locale if ctx.customer else None
            ctx.send_text(exc.message(locale))
            ctx.reply("redeem_usage")
            return
    result = redeem(
        ctx.session,
        args[0],
        now=ctx.now,
        by=f"{ctx.event.channel}:{ctx.event.actor.user_id}",
        config=ctx.config,
        amount_cents=amount_cents,
        allow_demo=ctx.event.channel == "sandbox",  # demo codes only redeem in the sandbox
        require_amount=True,
    )
    ctx.reply("redeem_result", result=result, code=format_code(result.code) if result.code else "")
