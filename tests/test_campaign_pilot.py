"""Pilot → holdout comparison → automatic launch or stop, with the funnel to show it."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select

from bot.core.clock import FakeClock
from bot.core.templating import Renderer
from bot.marketing.campaigns.funnel import funnel
from bot.marketing.campaigns.manage import create_campaign, run_due, start_pilot
from bot.marketing.campaigns.spec import parse_spec
from bot.marketing.coupons import redeem
from storage.campaigns import Campaign, CampaignTarget, ConsentChange
from storage.coupons import CouponCode
from storage.models import Customer, OutboxMessage
from tests.campaign_support import make_customer, services
from tests.support import run_jobs

N = 200


def _campaign(db, config, clock, text):
    svc = services(db, config, clock)
    for i in range(N):
        make_customer(db, f"u{i}", clock.now(), tags=("早餐",))
    with db.transaction() as session:
        spec = parse_spec(text, config)
        cid = create_campaign(
            session, spec, config=config, renderer=Renderer(), now=clock.now(), created_by="t"
        ).id
    return svc, cid


def _arms(db, cid):
    with db.sessions() as session:
        return dict(
            session.execute(
                select(CampaignTarget.arm, func.count())
                .where(CampaignTarget.campaign_id == cid)
                .group_by(CampaignTarget.arm)
            ).all()
        )


def _messages(db):
    """Campaign messages to customers (the verdict told to managers is not one)."""
    with db.sessions() as session:
        return session.scalar(
            select(func.count())
            .select_from(OutboxMessage)
            .where(OutboxMessage.purpose != "staff_alert")
        )


def test_pilot_that_beats_the_holdout_launches_to_the_rest(db, config):
    config = config.replace(campaigns=replace(config.campaigns, min_pilot_size=10))
    clock = FakeClock(datetime(2026, 3, 6, 2, 0, tzinfo=UTC))  # 10:00 Shanghai
    svc, cid = _campaign(
        db,
        config,
        clock,
        'spring segment="tag:早餐" template=morning_offer coupon=breakfast5 pilot=20% holdout=20% hours=24',
    )
    start_pilot(svc, cid)
    arms = _arms(db, cid)
    assert set(arms) == {"pilot", "holdout"}
    assert 20 <= arms["pilot"] <= 60 and 20 <= arms["holdout"] <= 60
    assert _messages(db) == arms["pilot"]  # the holdout gets nothing

    # Half the pilot redeems its coupon; nobody in the holdout buys.
    with db.transaction() as session:
        codes = session.scalars(select(CouponCode.code).order_by(CouponCode.id)).all()
        assert len(codes) == arms["pilot"]
        for code in codes[: len(codes) // 2]:
            assert redeem(session, code, now=clock.now(), by="staff", config=config).ok

    clock.advance(timedelta(hours=23))
    assert run_due(svc) == []  # the pilot period is not over
    clock.advance(timedelta(hours=1))
    assert run_due(svc) == [("spring", "evaluate")]  # the scheduler queues the verdict
    assert run_due(svc) == []  # once
    assert [j.payload["step"] for j in run_jobs(svc)] == ["evaluate"]
    with db.sessions() as session:
        campaign = session.get(Campaign, cid)
        assert campaign.verdict["decision"] == "launch"
        assert campaign.stop_reason is None
    arms = _arms(db, cid)
    assert arms["rollout"] > N // 2
    assert _messages(db) == arms["pilot"] + arms["rollout"]  # still nothing to the holdout

    with db.sessions() as session:
        rows = {(r.variant, r.arm): r for r in funnel(session, campaign)}
    assert rows[("main", "pilot")].redeemed == len(codes) // 2
    assert rows[("main", "holdout")].queued == 0
    assert rows[("*", "all")].targeted == N


def test_pilot_with_many_opt_outs_stops_with_the_reason(db, config):
    config = config.replace(campaigns=replace(config.campaigns, min_pilot_size=10))
    clock = FakeClock(datetime(2026, 3, 6, 2, 0, tzinfo=UTC))
    svc, cid = _campaign(
        db,
        config,
        clock,
        'pushy segment="tag:早餐" text="{{ customer.name }}，买买买" pilot=20% holdout=20% hours=2',
    )
    start_pilot(svc, cid)
    pilot_size = _arms(db, cid)["pilot"]
    with db.transaction() as session:
        pilot = session.scalars(
            select(CampaignTarget.customer_id).where(
                CampaignTarget.campaign_id == cid, CampaignTarget.arm == "pilot"
            )
        ).all()
        for customer_id in pilot[:5]:
            session.get(Customer, customer_id).marketing_opt_out = True
            session.add(
                ConsentChange(
                    customer_id=customer_id, opted_out=True, source="test", occurred_at=clock.now()
                )
            )
    clock.advance(timedelta(hours=2))
    assert run_due(svc) == [("pushy", "evaluate")]
    run_jobs(svc)
    with db.sessions() as session:
        campaign = session.get(Campaign, cid)
    assert campaign.status == "stopped"
    assert "opt-out/block rate" in campaign.stop_reason
    assert _messages(db) == pilot_size  # nothing more was sent


def test_pilot_without_uplift_stops(db, config):
    config = config.replace(campaigns=replace(config.campaigns, min_pilot_size=10))
    clock = FakeClock(datetime(2026, 3, 6, 2, 0, tzinfo=UTC))
    svc, cid = _campaign(
        db, config, clock, 'flat segment="tag:早餐" template=morning_offer pilot=20% holdout=20%'
    )
    start_pilot(svc, cid)
    clock.advance(timedelta(hours=24))
    run_due(svc)
    run_jobs(svc)
    with db.sessions() as session:
        campaign = session.get(Campaign, cid)
    assert campaign.status == "stopped"
    assert "did not beat the holdout" in campaign.stop_reason


def test_rerun_of_a_launch_queues_nothing_twice(db, config):
    clock = FakeClock(datetime(2026, 3, 6, 2, 0, tzinfo=UTC))
    svc, cid = _campaign(db, config, clock, 'again segment="tag:早餐" template=morning_offer')
    from bot.marketing.campaigns.manage import launch, run_push

    first = launch(svc, cid)
    before = _messages(db)
    assert first.new_rows == before > 0
    second = run_push(
        svc, cid, send_arms={"pilot", "rollout"}, record_arms={"pilot", "holdout", "rollout"}
    )
    assert second.new_rows == 0
    assert _messages(db) == before
