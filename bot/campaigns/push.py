"""The push engine campaigns and scenarios share: audience chunk → policy → render → outbox.

For one chunk of customer ids (streamed by keyset from the segment, one transaction per
chunk, so memory stays flat and a crash loses at most the chunk in progress) it:

1. loads the customers and their reachable identities, picks a channel by preference;
2. applies the marketing policy in bulk (bot/policy.py semantics: opt-out, the shared
   frequency cap — where a higher-priority message may replace a still-pending
   lower-priority one —, quiet hours in the customer's zone, WeCom's one mass message per
   customer per day), deferring or dropping with the reason;
3. issues coupon codes idempotently (same issue key → same code);
4. renders the compiled, sandboxed template (a failure drops that one customer with the
   reason ``render_error``; the preview is where template errors fail loudly);
5. bulk-inserts outbox rows keyed ``<prefix>:<customer>:<variant>`` (a re-run queues
   nothing twice) and, for campaigns, one ``campaign_targets`` row per customer.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import jinja2
from sqlalchemy import func, select, type_coerce, update
from sqlalchemy.orm import Session

from bot import policy
from bot.config import Config
from bot.coupons import format_code, issue_codes
from bot.templating import Renderer, TemplateRenderError
from storage.bulk import OutboxRow, insert_outbox_rows, insert_target_rows
from storage.coupons import CouponDefinition
from storage.models import Customer, Identity, OutboxMessage

__all__ = ["ChunkResult", "Push", "Variant", "stable_share"]

NO_QUIET = "00:00-00:00"


def stable_share(*parts: object) -> float:
    """A number in [0, 1) fixed by its inputs (pilot/holdout/variant choice by customer)."""
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


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
    purpose: str = "campaign"
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
        point = stable_share(self.key_prefix, "variant", customer_id) * total
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

    def render(self, variant: Variant, locale: str, variables: dict) -> str:
        try:
            return self.template(variant, locale).render(**variables).strip()
        except jinja2.TemplateError as exc:
            raise TemplateRenderError(
                variant.template or "<inline>", locale, f"{type(exc).__name__}: {exc}"
            ) from exc

    def variables(self, customer: dict, coupon: dict | None) -> dict:
        return {"customer": customer, "coupon": coupon, **self.extra_vars}

    def not_before(self, now: datetime, zone: ZoneInfo) -> datetime:
        due = max(now, self.send_at) if self.send_at else now
        if self.local_time is not None:
            local = due.astimezone(zone)
            at = datetime.combine(local.date(), self.local_time, tzinfo=zone)
            if at < local:
                at += timedelta(days=1)
            due = at.astimezone(now.tzinfo)
        return due

    # -- one chunk -----------------------------------------------------------------------

    def chunk(self, session: Session, ids: list[int], now: datetime) -> ChunkResult:
        """Queue this push for ``ids`` (inside the caller's transaction)."""
        result = ChunkResult()
        if not ids:
            return result
        arms = {cid: self.arm_of(cid) for cid in ids} if self.arm_of else {}
        ids = [cid for cid in ids if not arms or arms[cid] in self.record_arms]
        if not ids:
            return result
        customers = {
            row.id: row
            for row in session.execute(
                select(
                    Customer.id,
                    Customer.display_name,
                    Customer.locale,
                    Customer.timezone,
                    Customer.city,
                    Customer.marketing_opt_out,
                ).where(Customer.id.in_(ids))
            )
        }
        channels = self._channels(session, ids)
        recent = self._recent_counts(session, ids, now)
        marketing = self.config.marketing
        quiet = marketing.quiet_hours if self.quiet_hours else NO_QUIET
        targets: list[dict] = []
        planned: list[tuple[int, Variant, tuple[str, str], datetime, ZoneInfo]] = []
        over_cap: list[int] = []
        for cid in ids:
            c = customers.get(cid)
            arm = arms.get(cid, "rollout")
            variant = self.variant_of(cid)
            result.targeted += 1

            def target(status: str, reason: str | None = None, *, _c=cid, _a=arm, _v=variant):
                targets.append(
                    {
                        "campaign_id": self.campaign_id,
                        "customer_id": _c,
                        "arm": _a,
                        "variant": _v.name,
                        "status": status,
                        "reason": reason,
                        "created_at": now,
                    }
                )

            if c is None:
                continue
            if arm not in self.send_arms:
                result.held_out += 1
                target("held_out", arm)
                continue
            if c.marketing_opt_out:
                result.dropped["opt_out"] += 1
                target("dropped", "opt_out")
                continue
            identity = channels.get(cid)
            if identity is None:
                result.dropped["no_reachable_channel"] += 1
                target("dropped", "no_reachable_channel")
                continue
            if marketing.max_per_window and recent.get(cid, 0) >= marketing.max_per_window:
                over_cap.append(cid)
            zone = self.zone(c.timezone)
            due = self.not_before(now, zone)
            until = policy.quiet_until(due, zone, quiet)
            if until is not None:
                due = until
            planned.append((cid, variant, identity, due, zone))
        superseded = self._supersede(session, over_cap, now) if over_cap else set()
        wecom_busy = self._wecom_today(session, [p for p in planned if p[2][0] == "wecom"], now)
        allowed = [p[0] for p in planned if p[0] not in over_cap or p[0] in superseded]
        codes = self._codes(session, allowed, now)
        rows: list[OutboxRow] = []
        for cid, variant, (channel, external_id), due, _zone in planned:
            c = customers[cid]
            arm = arms.get(cid, "rollout")
            record = {
                "campaign_id": self.campaign_id,
                "customer_id": cid,
                "arm": arm,
                "variant": variant.name,
                "created_at": now,
            }
            if cid in over_cap and cid not in superseded:
                result.dropped["frequency_cap"] += 1
                targets.append(record | {"status": "dropped", "reason": "frequency_cap"})
                continue
            if cid in wecom_busy:
                due = max(due, wecom_busy[cid])
            coupon = None
            if self.coupon is not None:
                code = codes.get(self._issue_key(cid))
                if code is None:
                    result.dropped["coupon_unavailable"] += 1
                    targets.append(record | {"status": "dropped", "reason": "coupon_unavailable"})
                    continue
                coupon = {
                    "code": format_code(code),
                    "title": self.coupon.title,
                    "expires": (now + timedelta(days=self.coupon.valid_days))
                    .astimezone(self.zone(c.timezone))
                    .strftime("%Y-%m-%d"),
                }
            customer = {
                "id": cid,
                "name": c.display_name,
                "display_name": c.display_name,
                "city": c.city or "",
                "locale": c.locale,
            }
            try:
                text = self.render(variant, c.locale, self.variables(customer, coupon))
            except TemplateRenderError:
                result.dropped["render_error"] += 1
                targets.append(record | {"status": "dropped", "reason": "render_error"})
                continue
            payload: dict = {"text": text}
            if self.buttons:
                payload["buttons"] = [
                    {"label": label, "data": f"{self.button_prefix}:{variant.name}:{action}"}
                    for label, action in self.buttons
                ]
            if due > now:
                result.deferred += 1
            result.queued += 1
            targets.append(
                record | {"status": "queued", "reason": "deferred" if due > now else None}
            )
            rows.append(
                OutboxRow(
                    f"{self.key_prefix}:{cid}:{variant.name}",
                    channel,
                    external_id,
                    external_id,
                    cid,
                    self.purpose,
                    self.priority,
                    payload,
                    due,
                    now,
                )
            )
        result.new_rows = insert_outbox_rows(session, rows)
        if self.campaign_id is not None and targets:
            insert_target_rows(session, targets)
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

    def _channels(self, session: Session, ids: list[int]) -> dict[int, tuple[str, str]]:
        """Each customer's preferred reachable identity (channel, external id)."""
        order = {ch: i for i, ch in enumerate(self.config.campaigns.channels)}
        best: dict[int, tuple[int, str, str]] = {}
        rows = session.execute(
            select(Identity.customer_id, Identity.channel, Identity.external_id).where(
                Identity.customer_id.in_(ids),
                Identity.unreachable.is_(False),
                Identity.channel.in_(list(order)),
            )
        )
        for cid, channel, external_id in rows:
            rank = order[channel]
            if cid not in best or rank < best[cid][0]:
                best[cid] = (rank, channel, external_id)
        return {cid: (ch, ext) for cid, (_, ch, ext) in best.items()}

    def _recent_counts(self, session: Session, ids: list[int], now: datetime) -> dict[int, int]:
        """Marketing messages per customer inside the cap window (one grouped query)."""
        marketing = self.config.marketing
        if not marketing.max_per_window:
            return {}
        since = now - timedelta(hours=marketing.window_hours)
        return dict(
            session.execute(
                select(OutboxMessage.customer_id, func.count())
                .where(
                    OutboxMessage.customer_id.in_(ids),
                    OutboxMessage.purpose.in_(policy.MARKETING_PURPOSES),
                    OutboxMessage.created_at > since,
                    OutboxMessage.status.not_in(policy.NOT_COUNTED),
                    OutboxMessage.idempotency_key.not_like(f"{self.key_prefix}:%"),
                )
                .group_by(OutboxMessage.customer_id)
            ).all()
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
            chosen.setdefault(cid, row_id)
        if chosen:
            session.execute(
                update(OutboxMessage)
                .where(
                    OutboxMessage.id.in_(list(chosen.values())), OutboxMessage.status == "pending"
                )
                .values(status="cancelled", last_error=f"superseded by {self.key_prefix}")
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
        last = dict(
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
        for cid, _variant, _identity, due, zone in planned:
            if last.get(cid) is None:
                continue
            prior = last[cid].astimezone(zone).date()
            if prior >= due.astimezone(zone).date():
                next_day = datetime.combine(prior + timedelta(days=1), quiet_end, tzinfo=zone)
                busy[cid] = next_day.astimezone(now.tzinfo)
        return busy
