"""A/B variants: split by weight, each rendered from its own template, reported apart."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from bot.app.services import Services
from bot.marketing.campaigns.funnel import funnel
from bot.marketing.campaigns.manage import create_campaign, launch
from bot.marketing.campaigns.spec import SpecError, parse_spec
from bot.marketing.coupons import redeem, sync_definitions
from storage.campaigns import Campaign, CampaignTarget
from storage.coupons import CouponCode
from storage.models import Identity
from tests.campaign_support import make_customer
from tests.support import SandboxHarness

N = 120


async def test_two_variants_split_by_weight_render_their_own_templates_and_count_apart(
    db, config, clock
):
    h = SandboxHarness(config, db, clock)
    with db.transaction() as session:
        sync_definitions(session, config.coupons, clock.now())
    for i in range(N):
        make_customer(db, f"v{i}", clock.now(), tags=("早餐",))
    services = Services(db, h.runtime.config, h.runtime.renderer, clock)
    with db.transaction() as session:
        spec = parse_spec(
            'ab segment="tag:早餐" variants="a:morning_offer:3,b:weekend_trip:1" '
            'coupon=breakfast5 pilot=0 holdout=0 buttons="领券=claim"',
            config,
        )
        cid = create_campaign(
            session, spec, config=config, renderer=services.renderer, now=clock.now()
        ).id
    result = launch(services, cid)
    assert result.queued == N
    await h.deliver()

    with db.sessions() as session:
        variant_of = dict(
            session.execute(
                select(CampaignTarget.customer_id, CampaignTarget.variant).where(
                    CampaignTarget.campaign_id == cid
                )
            ).all()
        )
        codes = dict(session.execute(select(CouponCode.customer_id, CouponCode.code)).all())
        users = dict(session.execute(select(Identity.customer_id, Identity.external_id)).all())
    counts = {v: list(variant_of.values()).count(v) for v in ("a", "b")}
    assert counts["a"] + counts["b"] == N
    assert 0.62 * N <= counts["a"] <= 0.88 * N  # weight 3 : 1 → about 75% / 25%

    # each customer got the text of their own variant's template, and its buttons
    for customer_id, variant in list(variant_of.items())[:40]:
        transcript = await h.sandbox.transcript(users[customer_id])
        out = [m for m in transcript if m["direction"] == "out"]
        assert len(out) == 1
        expected, other = ("早上好", "周末快到了") if variant == "a" else ("周末快到了", "早上好")
        assert expected in out[0]["text"] and other not in out[0]["text"]
        assert f"c:{cid}:{variant}:claim" in str(out[0]["buttons"])

    # two customers of b click, one customer of a redeems
    b_customers = [c for c, v in variant_of.items() if v == "b"][:2]
    a_customer = next(c for c, v in variant_of.items() if v == "a")
    for customer_id in b_customers:
        await h.sandbox.receive(
            {
                "user_id": users[customer_id],
                "chat_id": users[customer_id],
                "button_data": f"c:{cid}:b:claim",
            }
        )
    with db.transaction() as session:
        assert redeem(session, codes[a_customer], now=clock.now(), by="staff", config=config).ok

    with db.sessions() as session:
        rows = {(r.variant, r.arm): r for r in funnel(session, session.get(Campaign, cid))}
    a, b = rows[("a", "rollout")], rows[("b", "rollout")]
    assert (a.targeted, b.targeted) == (counts["a"], counts["b"])
    assert (a.queued, a.sent, a.delivered) == (counts["a"],) * 3
    assert (b.queued, b.sent, b.delivered) == (counts["b"],) * 3
    assert (a.clicked, b.clicked) == (0, 2)
    assert (a.redeemed, b.redeemed) == (1, 0)


def test_variant_weights_must_be_positive_numbers(config):
    for bad in ("a:morning_offer:0", "a:morning_offer:x", "a:morning_offer:-1"):
        with pytest.raises(SpecError, match="weight"):
            parse_spec(f'w segment="tag:x" variants="{bad},b:weekend_trip"', config)
    spec = parse_spec('w segment="tag:x" variants="a:morning_offer:2.5,b:weekend_trip"', config)
    assert [(v.name, v.weight) for v in spec.variants] == [("a", 2.5), ("b", 1.0)]
