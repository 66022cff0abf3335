"""Customers in the console: search (name, phone, channel id, tag), the 360° profile with
its timeline, and tag / untag / merge — through ``storage.repos`` and
``storage.identity_links.merge_customers``, as the chat commands and the CLI do.
"""

from __future__ import annotations

import re
from datetime import datetime

from sqlalchemy import select
from starlette.requests import Request
from starlette.responses import Response

from bot.app.services import Services
from bot.core.i18n import t
from bot.web.console import queries
from bot.web.console.common import (
    back,
    endpoint,
    form_of,
    int_param,
    locale_of,
    manager_of,
    page,
    run,
    runtime_of,
)
from storage import repos
from storage.campaigns import Campaign, CampaignEvent, CampaignTarget
from storage.coupons import CouponCode, CouponDefinition
from storage.handoff import HandoffTicket
from storage.identity_links import MergeError, merge_customers
from storage.models import (
    Conversation,
    Customer,
    CustomerTag,
    Identity,
    Interaction,
    OutboxMessage,
    Tag,
)
from storage.orders import Order
from storage.scores import CustomerScore

__all__ = ["act", "load_profile", "profile", "search", "timeline"]

MAX_QUERY = 100
#: entries of each kind on the timeline
RECENT = 50
TAG_NAME = re.compile(r"^[^\s,;]{1,64}$")


@endpoint
async def search(request: Request) -> Response:
    user = await manager_of(request)
    query = request.query_params.get("q", "")[:MAX_QUERY]
    runtime = runtime_of(request)

    def find() -> list[dict]:
        with runtime.db.sessions() as session:
            return queries.search_customers(session, query)

    results = await run(request, find) if query.strip() else []
    return page(
        request, "console/customers.html", user, section="customers", q=query, results=results
    )


def timeline(session, customer_id: int) -> list[dict]:
    """The customer's history, newest first: messages, tags, orders, coupons, campaigns,
    handoffs (each kind bounded to its most recent entries)."""
    items: list[dict] = []

    def add(kind: str, at: datetime | None, text: str, meta: str = "") -> None:
        if at is not None:
            items.append({"kind": kind, "at": at, "text": text, "meta": meta})

    for i in session.scalars(
        select(Interaction)
        .where(Interaction.customer_id == customer_id)
        .order_by(Interaction.id.desc())
        .limit(RECENT)
    ):
        add("message", i.occurred_at, i.text or f"[{i.kind}]", f"← {i.channel}")
    for o in session.scalars(
        select(OutboxMessage)
        .where(OutboxMessage.customer_id == customer_id)
        .order_by(OutboxMessage.id.desc())
        .limit(RECENT)
    ):
        add(
            "message",
            o.created_at,
            (o.payload or {}).get("text", ""),
            f"→ {o.purpose} · {o.status}",
        )
    for ct, name in session.execute(
        select(CustomerTag, Tag.name)
        .join(Tag, Tag.id == CustomerTag.tag_id)
        .where(CustomerTag.customer_id == customer_id)
        .order_by(CustomerTag.first_seen_at.desc())
        .limit(RECENT)
    ):
        add("tag", ct.first_seen_at, name, ct.source)
    for order in session.scalars(
        select(Order)
        .where(Order.customer_id == customer_id)
        .order_by(Order.ordered_at.desc())
        .limit(RECENT)
    ):
        add(
            "order",
            order.ordered_at,
            f"{order.amount_cents / 100:.2f} {order.currency}",
            order.order_id,
        )
    for code, title in session.execute(
        select(CouponCode, CouponDefinition.title)
        .join(CouponDefinition, CouponDefinition.id == CouponCode.definition_id)
        .where(CouponCode.customer_id == customer_id)
        .order_by(CouponCode.id.desc())
        .limit(RECENT)
    ):
        add("coupon", code.issued_at, title, f"{code.code} · issued")
        add("coupon", code.redeemed_at, title, f"{code.code} · redeemed")
    for target, name in session.execute(
        select(CampaignTarget, Campaign.name)
        .join(Campaign, Campaign.id == CampaignTarget.campaign_id)
        .where(CampaignTarget.customer_id == customer_id)
        .order_by(CampaignTarget.created_at.desc())
        .limit(RECENT)
    ):
        add(
            "campaign",
            target.created_at,
            name,
            f"{target.arm} · {target.variant} · {target.status}",
        )
    for event, name in session.execute(
        select(CampaignEvent, Campaign.name)
        .join(Campaign, Campaign.id == CampaignEvent.campaign_id)
        .where(CampaignEvent.customer_id == customer_id)
        .order_by(CampaignEvent.id.desc())
        .limit(RECENT)
    ):
        add("campaign", event.occurred_at, name, f"{event.kind} {event.detail}".strip())
    for ticket in session.scalars(
        select(HandoffTicket)
        .where(HandoffTicket.customer_id == customer_id)
        .order_by(HandoffTicket.id.desc())
        .limit(RECENT)
    ):
        add(
            "handoff",
            ticket.created_at,
            ticket.detail or ticket.reason,
            f"{ticket.status} {ticket.owner or ''}".strip(),
        )
    items.sort(key=lambda item: item["at"], reverse=True)
    return items  # fmt: skip


def load_profile(runtime: Services, customer_id: int) -> dict | None:
    """The 360° profile: the customer, identities, breakpoints, tags, scores, timeline."""
    now = runtime.clock.now()
    with runtime.db.sessions() as session:
        customer = session.get(Customer, customer_id)
        if customer is None:
            return None
        identities = list(
            session.scalars(select(Identity).where(Identity.customer_id == customer_id))
        )
        conversations = list(
            session.scalars(
                select(Conversation)
                .where(Conversation.customer_id == customer_id)
                .order_by(Conversation.updated_at.desc())
                .limit(10)
            )
        )
        tags = [
            {"name": ct.tag.name, "source": ct.source, "expires_at": ct.expires_at}
            for ct in repos.tags_of(session, customer_id, now)
        ]
        session.expunge_all()
        return {
            "customer": customer,
            "identities": identities,
            "conversations": conversations,
            "tags": tags,
            "score": session.get(CustomerScore, customer_id),
            "timeline": timeline(session, customer_id),
        }


@endpoint
async def profile(request: Request) -> Response:
    user = await manager_of(request)
    data = await run(request, load_profile, runtime_of(request), int_param(request, "customer_id"))
    if data is None:
        return page(request, "console/not_found.html", user, status=404, section="customers")
    return page(request, "console/customer.html", user, section="customers", **data)


@endpoint
async def act(request: Request) -> Response:
    """Tag, untag, or merge another customer into this one."""
    user = await manager_of(request)
    customer_id = int_param(request, "customer_id")
    action = request.path_params["action"]
    data = await form_of(request, user)
    locale = locale_of(request, user)
    here = f"/console/customers/{customer_id}"
    runtime = runtime_of(request)
    now = runtime.clock.now()
    tag = data.get("tag", "").strip()
    if action in ("tag", "untag") and not TAG_NAME.match(tag):
        return back(request, here, t("console.cust.bad_tag", locale), error=True)
    raw_other = data.get("from_id", "").strip().lstrip("#")
    if action == "merge" and not (raw_other.isdigit() and len(raw_other) <= 18):
        return back(request, here, t("console.cust.bad_merge", locale), error=True)
    if action not in ("tag", "untag", "merge"):
        return Response(status_code=404)

    def change() -> str:
        with runtime.db.transaction() as session:
            if session.get(Customer, customer_id) is None:
                raise MergeError(t("console.not_found", locale))
            if action == "tag":
                repos.add_tag(session, customer_id, tag, source=f"staff:{user.username}", now=now)
                return t("console.cust.tagged", locale, tag=tag)
            if action == "untag":
                if not repos.remove_tag(session, customer_id, tag):
                    raise MergeError(t("console.cust.no_tag", locale, tag=tag))
                return t("console.cust.untagged", locale, tag=tag)
            merge_customers(
                session,
                customer_id,
                int(raw_other),
                reason=f"manager {user.username} (console)",
                now=now,
            )
            return t("console.cust.merged", locale, other=raw_other)  # fmt: skip

    try:
        message = await run(request, change)
    except MergeError as exc:
        return back(request, here, str(exc), error=True)
    return back(request, here, message)
