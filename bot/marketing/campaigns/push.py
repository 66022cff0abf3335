"""The push engine campaigns and scenarios share: audience chunk → policy → render → outbox.

The segment is streamed by keyset over customer id, one transaction per chunk (memory
stays flat; a crash loses at most the chunk in progress). For each chunk it:

1. loads the chunk's customers (the keyset query itself), and by three range queries over
   the chunk's id range their preferred reachable identity, their marketing count inside
   the cap window and whether this push recorded them before (no per-customer lookups);
2. applies the marketing policy in bulk (bot/marketing/policy.py semantics: opt-out, the shared
   frequency cap — where a higher-priority message may replace a still-pending
   lower-priority one —, quiet hours in the customer's zone, WeCom's one mass message per
   customer per day), deferring or dropping with the reason;
3. issues coupon codes idempotently (same issue key → same code);
4. renders the compiled, sandboxed template (a failure drops that one customer with the
   reason ``render_error``; the preview is where template errors fail loudly);
5. bulk-inserts outbox rows keyed ``<prefix>:<customer>:<variant>`` (a re-run queues
   nothing twice) and, for campaigns, one ``campaign_targets`` row per customer — COPY
   straight into the tables on PostgreSQL for customers not seen before (storage/bulk.py).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import jinja2
from sqlalchemy import Select, bindparam, func, select, type_coerce, update
from sqlalchemy.orm import Session

from bot.app.config import Config
from bot.core.template_budget import FILE_BUDGET, USER_BUDGET, metered, render_metered
from bot.core.templating import Renderer, TemplateRenderError
from bot.marketing import policy
from bot.marketing.coupons import format_code, issue_codes
from bot.marketing.links import LinkTracker, base_url, insert_links, preview_track, uses_track
from bot.outbox.states import OutboxPurpose, OutboxStatus, transition
from storage.bulk import insert_new, insert_outbox_rows
from storage.campaigns import CampaignTarget
from storage.coupons import CouponDefinition
from storage.db import Database
from storage.models import Customer, Identity, OutboxMessage

__all__ = ["ChunkResult", "Push", "Variant", "share_by_id", "stable_share"]

NO_QUIET = "00:00-00:00"

#: What a push reads of each customer (after the id), in this order.
CUSTOMER_COLUMNS = (
    Customer.display_name,
    Customer.locale,
    Customer.timezone,
    Customer.city,
    Customer.marketing_opt_out,
)


def stable_share(*parts: object) -> float:
    """A number in [0, 1) fixed by its inputs (pilot/holdout/variant choice by customer)."""
    return share_by_id(*parts[:-1])(parts[-1])


def share_by_id(*prefix: object) -> Callable[[object], float]:
    """``stable_share(*prefix, x)`` as a function of ``x``, with the prefix encoded once."""
    head = "".join(f"{p}:" for p in prefix).encode()
    blake2b, from_bytes = hashlib.blake2b, int.from_bytes

    def share(last: object) -> float:
        digest = blake2b(head + str(last).encode(), digest_size=8).digest()
        return from_bytes(digest, "big") / 2**64

    return share


@dataclass(frozen=True)
class Variant:
    """One version of the content: a message template by name, or inline template text."""

    name: str
    template: str = ""
    text: str = ""
    weight: float = 1.0


@dataclass
class ChunkResult:
    """What a push did: queued (new rows), deferred, held out, dropped by reason."""

    targeted: int = 0
    queued: int = 0
    new_rows: int = 0
    held_out: int = 0
    deferred: int = 0
    dropped: Counter = field(default_factory=Counter)

    def add(self, other: ChunkResult) -> None:
        self.targeted += other.targeted
        self.queued += other.queued
        self.new_rows += other.new_rows
        self.held_out += other.held_out
        self.deferred += other.deferred
        self.dropped.update(other.dropped)

    def as_dict(self) -> dict:
        return {
            "targeted": self.targeted,
            "queued": self.queued,
            "new_rows": self.new_rows,
            "held_out": self.held_out,
            "deferred": self.deferred,
            "dropped": dict(self.dropped),
        }


@dataclass
class Push:
    """One push's content and rules; :meth:`chunk` queues it for a chunk of customers."""

    config: Config
    renderer: Renderer
    key_prefix: str
    variants: list[Variant]
    purpose: str = OutboxPurpose.CAMPAIGN
    #: ``(source_kind, source_id)`` stamped on every row (the campaign or scenario)
    source: tuple[str, int] | None = None
    priority: int = 10
    buttons: list[tuple[str, str]] = field(default_factory=list)
    button_prefix: str = ""
    coupon: CouponDefinition | None = None
    campaign_id: int | None = None
    quiet_hours: bool = True
    send_at: datetime | None = None
    local_time: time | None = None
    #: campaign arms: customer id → "pilot" | "holdout" | "rollout"; None: everyone is sent
    arm_of: Callable[[int], str] | None = None
    send_arms: frozenset[str] = frozenset({"pilot", "rollout"})
    record_arms: frozenset[str] = frozenset({"pilot", "holdout", "rollout"})
    extra_vars: dict = field(default_factory=dict)
    _templates: dict = field(default_factory=dict, init=False, repr=False)
    _zones: dict = field(default_factory=dict, init=False, repr=False)
    _variant_share: Callable[[object], float] | None = field(default=None, init=False, repr=False)
    _recent_contents: dict = field(default_factory=dict, init=False, repr=False)
    #: called with the number of customers after each streamed chunk (CLI progress)
    on_chunk: Callable[[int], None] | None = field(default=None, repr=False)

    # -- pieces --------------------------------------------------------------------------

    def zone(self, name: str | None) -> ZoneInfo:
        key = name or self.config.general.timezone
        zone = self._zones.get(key)
        if zone is None:
            try:
                zone = ZoneInfo(key)
            except (ZoneInfoNotFoundError, ValueError):
                zone = ZoneInfo(self.config.general.timezone)
            self._zones[key] = zone
        return zone

    def variant_of(self, customer_id: int) -> Variant:
        if len(self.variants) == 1:
            return self.variants[0]
        total = sum(v.weight for v in self.variants)
        if self._variant_share is None:
            self._variant_share = share_by_id(self.key_prefix, "variant")
        point = self._variant_share(customer_id) * total
        for v in self.variants:
            point -= v.weight
            if point < 0:
                return v
        return self.variants[-1]

    def template(self, variant: Variant, locale: str) -> jinja2.Template:
        """The compiled sandboxed template (cached); raises TemplateRenderError."""
        key = (variant.name, locale)
        cached = self._templates.get(key)
        if cached is None:
            try:
                if variant.template:
                    filename, _ = self.renderer.template_name(variant.template, locale)
                    cached = self.renderer.env.get_template(filename)
                else:
                    cached = self.renderer.env.from_string(variant.text)
            except jinja2.TemplateError as exc:
                raise TemplateRenderError(
                    variant.template or "<inline>", locale, f"{type(exc).__name__}: {exc}"
                ) from exc
            self._templates[key] = cached
        return cached

    def renderer_for(self, variant: Variant, locale: str) -> Callable[..., str]:
        """A fast render function ``(customer, coupon[, track]) -> text`` for one variant
        and locale: the compiled template with its globals and ``extra_vars`` merged once
        (``Template.render`` copies the globals on every call); raises TemplateRenderError
        if the template cannot be loaded. ``track`` is the message's
        :class:`~bot.marketing.links.LinkTracker` when :meth:`tracks_links` says it needs one."""
        template = self.template(variant, locale)
        base = {**template.globals, "track": preview_track, **self.extra_vars}
        root, new_context = (
            template.root_render_func,
            template.new_context,
        )

        budget = FILE_BUDGET if variant.template else USER_BUDGET

        def render(customer: dict, coupon: dict | None, track=None) -> str:
            values = {**base, "customer": customer, "coupon": coupon}
            if track is not None:
                values["track"] = track
            return render_metered(lambda: root(new_context(values, shared=True)), budget).strip()

        return render

    def tracks_links(self, variant: Variant, locale: str) -> bool:
        """Whether this variant's template calls ``track(url)`` (cached)."""
        key = ("track", variant.name, locale)
        if key not in self._templates:
            env = self.renderer.env
            try:
                if variant.template:
                    filename, _ = self.renderer.template_name(variant.template, locale)
                    assert env.loader is not None  # the renderer loads from templates/messages
                    source = env.loader.get_source(env, filename)[0]
                else:
                    source = variant.text
            except (jinja2.TemplateError, TemplateRenderError):
                source = ""
            self._templates[key] = uses_track(env, source)
        return self._templates[key]

    def fingerprint(self, variant: Variant, locale: str) -> str:
        """The content of a variant in a locale (a hash of its template source, before
        personalization): two pushes with the same fingerprint say the same thing."""
        key = ("content", variant.name, locale)
        if key not in self._templates:
            env = self.renderer.env
            try:
                if variant.template:
                    filename, _ = self.renderer.template_name(variant.template, locale)
                    assert env.loader is not None  # the Renderer's FileSystemLoader
                    source = env.loader.get_source(env, filename)[0]
                else:
                    source = variant.text
            except (jinja2.TemplateError, TemplateRenderError):
                source = f"<{variant.template}>"
            normalized = " ".join(source.split())
            self._templates[key] = hashlib.sha1(normalized.encode()).hexdigest()[:16]
        return self._templates[key]

    def render(self, variant: Variant, locale: str, variables: dict) -> str:
        try:
            with metered(FILE_BUDGET if variant.template else USER_BUDGET):
                return self.template(variant, locale).render(**variables).strip()
        except jinja2.TemplateError as exc:
            raise TemplateRenderError(
                variant.template or "<inline>", locale, f"{type(exc).__name__}: {exc}"
            ) from exc

    def variables(self, customer: dict, coupon: dict | None) -> dict:
        return {"customer": customer, "coupon": coupon, "track": preview_track, **self.extra_vars}

    def not_before(self, now: datetime, zone: ZoneInfo) -> datetime:
        due = max(now, self.send_at) if self.send_at else now
        if self.local_time is not None:
            local = due.astimezone(zone)
            at = datetime.combine(local.date(), self.local_time, tzinfo=zone)
            if at < local:
                at += timedelta(days=1)
            due = at.astimezone(now.tzinfo)
        return due

    # -- the audience stream ------------------------------------------------------------

    def stream(self, db: Database, ids: Select, now: datetime, chunk_size: int) -> ChunkResult:
        """Queue this push for every customer ``ids`` (a select of ``Customer.id``) selects:
        keyset chunks by customer id, one transaction each, so memory stays flat."""
        query = (
            ids.add_columns(*CUSTOMER_COLUMNS)
            .where(Customer.id > bindparam("last"))
            .order_by(Customer.id)
            .limit(chunk_size)
        )
        total = ChunkResult()
        last = 0
        while True:
            with db.transaction() as session:
                rows = session.connection().execute(query, {"last": last}).all()
                if not rows:
                    break
                total.add(self.chunk_rows(session, rows, now))
            last = rows[-1][0]
            if self.on_chunk is not None:
                self.on_chunk(len(rows))
        return total

    def chunk(self, session: Session, ids: list[int], now: datetime) -> ChunkResult:
        """Queue this push for the customers ``ids`` (inside the caller's transaction)."""
        if not ids:
            return ChunkResult()
        query = select(Customer.id, *CUSTOMER_COLUMNS).where(Customer.id.in_(ids))
        return self.chunk_rows(session, session.execute(query.order_by(Customer.id)).all(), now)

    def facts(self, session: Session, low: int, high: int, now: datetime) -> tuple[dict, dict, set]:
        """For customers with ids in [low, high], three range queries on customer-id
        indexes (total work over a whole stream is one pass, however sparse the segment):
        the preferred reachable identity, marketing messages inside the cap window (not
        counting this push's own) and who this push recorded before."""
        rank = {ch: i for i, ch in enumerate(self.config.campaigns.channels)}
        best: dict[int, tuple[int, str, str]] = {}
        db = session.connection()  # Core execution: plain rows, no ORM loading
        for cid, channel, external_id in db.execute(
            select(Identity.customer_id, Identity.channel, Identity.external_id)
            .where(Identity.customer_id.between(low, high), Identity.unreachable.is_(False))
            .order_by(Identity.id)
        ):
            r = rank.get(channel)
            if r is not None and (cid not in best or r < best[cid][0]):
                best[cid] = (r, channel, external_id)
        identities = {cid: (ch, ext) for cid, (_, ch, ext) in best.items()}
        marketing = self.config.marketing
        # Marketing rows inside the cap window (not this push's): their count per customer
        # (the frequency cap) and their content fingerprints (duplicate content).
        recent: dict[int, int] = {}
        contents: dict[int, set[str]] = {}
        for cid, content in db.execute(
            select(OutboxMessage.customer_id, OutboxMessage.payload["content"].as_string()).where(
                OutboxMessage.customer_id.between(low, high),
                OutboxMessage.purpose.in_(policy.MARKETING_PURPOSES),
                OutboxMessage.created_at > now - timedelta(hours=marketing.window_hours),
                OutboxMessage.status.not_in(policy.NOT_COUNTED),
                OutboxMessage.idempotency_key.not_like(f"{self.key_prefix}:%"),
            )
        ):
            recent[cid] = recent.get(cid, 0) + 1
            if content:
                contents.setdefault(cid, set()).add(content)
        self._recent_contents = contents
        prior: Select[int] | Select[int | None]
        if self.campaign_id is not None:
            prior = select(CampaignTarget.customer_id).where(
                CampaignTarget.campaign_id == self.campaign_id,
                CampaignTarget.customer_id.between(low, high),
            )
        else:
            prior = select(OutboxMessage.customer_id).where(
                OutboxMessage.customer_id.between(low, high),
                OutboxMessage.idempotency_key.like(f"{self.key_prefix}:%"),
            )
        return identities, recent, set(db.scalars(prior))

    # -- one chunk -----------------------------------------------------------------------

    def chunk_rows(self, session: Session, rows: Sequence, now: datetime) -> ChunkResult:
        """Queue this push for one chunk of customers, rows of ``(id, *CUSTOMER_COLUMNS)``
        ordered by id (inside the caller's transaction)."""
        result = ChunkResult()
        marketing = self.config.marketing
        quiet = marketing.quiet_hours if self.quiet_hours else NO_QUIET
        cap = marketing.max_per_window
        campaign_id = self.campaign_id
        arm_of, send_arms, record_arms = self.arm_of, self.send_arms, self.record_arms
        # (target tuple, customer had a target before)
        targets: list[tuple[tuple, bool]] = []
        planned: list[tuple] = []
        over_cap: list[int] = []
        due_by_zone: dict[str | None, tuple[datetime, ZoneInfo]] = {}
        if not rows:
            return result
        identities, recent, seen = self.facts(session, rows[0][0], rows[-1][0], now)
        recent_contents = self._recent_contents
        for cid, name, locale, tz, city, opted_out in rows:
            arm = arm_of(cid) if arm_of else "rollout"
            if arm not in record_arms:
                continue
            prior = cid in seen
            variant = self.variant_of(cid)
            result.targeted += 1
            if arm not in send_arms:
                result.held_out += 1
                targets.append(((campaign_id, cid, arm, variant.name, "held_out", arm, now), prior))
                continue
            reason = None
            if opted_out:
                reason = "opt_out"
            elif cid not in identities:
                reason = "no_reachable_channel"
            if reason is not None:
                result.dropped[reason] += 1
                targets.append(
                    ((campaign_id, cid, arm, variant.name, "dropped", reason, now), prior)
                )
                continue
            if cap and recent.get(cid, 0) >= cap:
                over_cap.append(cid)
            timing = due_by_zone.get(tz)
            if timing is None:
                zone = self.zone(tz)
                due = self.not_before(now, zone)
                due = policy.quiet_until(due, zone, quiet) or due
                timing = due_by_zone[tz] = (due, zone)
            channel, external_id = identities[cid]
            planned.append(
                (cid, name, locale, city, arm, variant, channel, external_id, timing, prior)
            )
        superseded = self._supersede(session, over_cap, now) if over_cap else set()
        capped = set(over_cap) - superseded
        wecom_busy = self._wecom_today(
            session, [(p[0], p[8][0], p[8][1]) for p in planned if p[6] == "wecom"], now
        )
        codes = self._codes(session, [p[0] for p in planned if p[0] not in capped], now)
        # the payload's JSON after the text, per variant: '}' or ', "buttons": [...]}'
        tails = {
            v.name: (
                ", "
                + json.dumps(
                    {
                        "buttons": [
                            {"label": label, "data": f"{self.button_prefix}:{v.name}:{action}"}
                            for label, action in self.buttons
                        ]
                    },
                    ensure_ascii=False,
                )[1:]
                if self.buttons
                else "}"
            )
            for v in self.variants
        }
        renderers: dict[tuple[str, str], Callable[..., str] | None] = {}
        tracking: dict[tuple[str, str], str | None] = {}  # link base URL if it tracks links
        links: list[dict] = []
        new: list[tuple] = []
        again: list[tuple] = []
        dumps = json.dumps
        for cid, name, locale, city, arm, variant, channel, external_id, timing, prior in planned:
            due, zone = timing

            def target(status: str, reason: str | None, _c=cid, _a=arm, _v=variant, _p=prior):
                targets.append(((campaign_id, _c, _a, _v.name, status, reason, now), _p))

            if cid in capped:
                result.dropped["frequency_cap"] += 1
                target("dropped", "frequency_cap")
                continue
            fingerprint = self.fingerprint(variant, locale)
            if fingerprint in recent_contents.get(cid, ()):
                result.dropped["duplicate_content"] += 1
                target("dropped", "duplicate_content")
                continue
            if cid in wecom_busy:
                due = max(due, wecom_busy[cid])
            coupon = None
            if self.coupon is not None:
                code = codes.get(self._issue_key(cid))
                if code is None:
                    result.dropped["coupon_unavailable"] += 1
                    target("dropped", "coupon_unavailable")
                    continue
                coupon = {
                    "code": format_code(code),
                    "title": self.coupon.title,
                    "expires": (now + timedelta(days=self.coupon.valid_days))
                    .astimezone(zone)
                    .strftime("%Y-%m-%d"),
                }
            customer = {
                "id": cid,
                "name": name,
                "display_name": name,
                "city": city or "",
                "locale": locale,
            }
            key = (variant.name, locale)
            if key not in renderers:
                try:
                    renderers[key] = self.renderer_for(variant, locale)
                except TemplateRenderError:
                    renderers[key] = None
                tracking[key] = (
                    base_url(self.config) if self.tracks_links(variant, locale) else None
                )
            render = renderers[key]
            outbox_key = f"{self.key_prefix}:{cid}:{variant.name}"
            try:
                if render is None:
                    raise jinja2.TemplateError("no template")
                link_base = tracking[key]
                if link_base is None:
                    text = render(customer, coupon)
                else:
                    tracker = LinkTracker(link_base)
                    text = render(customer, coupon, tracker)
                    links += tracker.rows(outbox_key, cid, campaign_id, variant.name, now)
            except Exception:  # a template failing for one customer drops only them
                result.dropped["render_error"] += 1
                target("dropped", "render_error")
                continue
            if due > now:
                result.deferred += 1
            result.queued += 1
            target("queued", "deferred" if due > now else None)
            (again if prior else new).append(
                (
                    outbox_key,
                    channel,
                    external_id,
                    external_id,
                    cid,
                    self.purpose,
                    self.priority,
                    '{"content": "'
                    + fingerprint
                    + '", "text": '
                    + dumps(text, ensure_ascii=False)
                    + tails[variant.name],
                    due,
                    now,
                )
            )
        fresh_targets = []
        if campaign_id is not None:
            # a customer recorded before keeps the first record (as ON CONFLICT DO NOTHING)
            fresh_targets = [t for t, prior in targets if not prior]
        result.new_rows = insert_new(session, new, fresh_targets, source=self.source)
        result.new_rows += insert_outbox_rows(session, again, source=self.source)
        insert_links(session, links)
        return result

    def _issue_key(self, cid: int) -> str:
        return f"{self.key_prefix}:{cid}"

    def _codes(self, session: Session, ids: list[int], now: datetime) -> dict[str, str]:
        if self.coupon is None or not ids:
            return {}
        return issue_codes(
            session,
            self.coupon,
            [(cid, self._issue_key(cid)) for cid in ids],
            now=now,
            campaign_id=self.campaign_id,
        )

    def _supersede(self, session: Session, ids: list[int], now: datetime) -> set[int]:
        """Higher-priority content wins: withdraw one still-pending lower-priority marketing
        message per capped customer; returns the customers who got room that way."""
        pending = session.execute(
            select(OutboxMessage.id, OutboxMessage.customer_id)
            .where(
                OutboxMessage.customer_id.in_(ids),
                OutboxMessage.purpose.in_(policy.MARKETING_PURPOSES),
                OutboxMessage.status == "pending",
                OutboxMessage.priority < self.priority,
                OutboxMessage.idempotency_key.not_like(f"{self.key_prefix}:%"),
            )
            .order_by(OutboxMessage.priority, OutboxMessage.id.desc())
        ).all()
        chosen: dict[int, int] = {}
        for row_id, cid in pending:
            if cid is not None:  # selected by customer, so never NULL
                chosen.setdefault(cid, row_id)
        if chosen:
            session.execute(
                update(OutboxMessage)
                .where(
                    OutboxMessage.id.in_(list(chosen.values())),
                    OutboxMessage.status == OutboxStatus.PENDING,
                )
                .values(
                    status=transition(OutboxStatus.PENDING, OutboxStatus.CANCELLED).value,
                    last_error=f"superseded by {self.key_prefix}",
                )
                .execution_options(synchronize_session=False)
            )
        return set(chosen)

    def _wecom_today(
        self, session: Session, planned: Iterable, now: datetime
    ) -> dict[int, datetime]:
        """WeCom allows one mass message per customer per day: customers who already got
        one today (their local day) wait for the end of tomorrow's quiet hours."""
        planned = list(planned)
        if not planned:
            return {}
        ids = [p[0] for p in planned]
        last: dict[int, datetime] = dict(
            session.execute(
                select(
                    OutboxMessage.customer_id,
                    type_coerce(
                        func.max(OutboxMessage.next_attempt_at), OutboxMessage.next_attempt_at.type
                    ),
                )
                .where(
                    OutboxMessage.customer_id.in_(ids),
                    OutboxMessage.channel == "wecom",
                    OutboxMessage.purpose.in_(policy.MARKETING_PURPOSES),
                    OutboxMessage.status.not_in(policy.NOT_COUNTED),
                    OutboxMessage.created_at > now - timedelta(days=2),
                    OutboxMessage.idempotency_key.not_like(f"{self.key_prefix}:%"),
                )
                .group_by(OutboxMessage.customer_id)
            ).all()
        )
        busy: dict[int, datetime] = {}
        quiet_end = policy.parse_range(self.config.marketing.quiet_hours)[1]
        for cid, due, zone in planned:
            if last.get(cid) is None:
                continue
            prior = last[cid].astimezone(zone).date()
            if prior >= due.astimezone(zone).date():
                next_day = datetime.combine(prior + timedelta(days=1), quiet_end, tzinfo=zone)
                busy[cid] = next_day.astimezone(now.tzinfo)
        return busy
