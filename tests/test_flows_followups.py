"""Follow-ups: rendered from the breakpoint, cancelled, and held by the marketing policy."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from bot.app.config import MarketingConfig
from bot.conversations.followups import send_due_followups
from bot.core.events import ConversationRef
from bot.marketing.coupons import redeem
from bot.marketing.policy import check, quiet_until
from bot.outbox import queue as outbox
from storage.followups import FollowUp
from storage.models import Conversation, Customer
from tests.support import SandboxHarness

DEST = "flow:weekend_trip_inquiry:destination:qiandao"
SHANGHAI = ZoneInfo("Asia/Shanghai")


async def at_dates(h: SandboxHarness, user: str = "u1") -> None:
    await h.say(user, "周末去哪玩")
    await h.sandbox.receive({"user_id": user, "button_data": DEST})
    await h.deliver()


def followups(db) -> list[FollowUp]:
    with db.sessions() as s:
        return list(s.scalars(select(FollowUp).order_by(FollowUp.id)))


def set_customer(db, user: str, **values) -> None:
    with db.transaction() as s:
        conv = s.scalars(select(Conversation).where(Conversation.user_id == user)).one()
        customer = s.get(Customer, conv.customer_id)
        for k, v in values.items():
            setattr(customer, k, v)


async def test_followup_is_not_due_before_its_time(config, sqlite_db, clock):
    h = SandboxHarness(config, sqlite_db, clock)
    await at_dates(h)
    clock.advance(timedelta(hours=23))
    assert send_due_followups(sqlite_db, config, clock)["sent"] == 0
    clock.advance(timedelta(hours=2))
    assert send_due_followups(sqlite_db, config, clock)["sent"] == 1


async def test_opted_out_customer_gets_no_followup(config, sqlite_db, clock):
    h = SandboxHarness(config, sqlite_db, clock)
    await at_dates(h)
    set_customer(sqlite_db, "u1", marketing_opt_out=True)
    clock.advance(timedelta(days=2))
    assert send_due_followups(sqlite_db, config, clock)["opt_out"] == 1
    await h.deliver()
    assert len(await h.bot_messages("u1")) == 2
    assert followups(sqlite_db)[-1].status == "skipped"


async def test_quiet_hours_in_the_customers_time_zone_defer_the_followup(config, sqlite_db, clock):
    # 23:30 in Shanghai when it becomes due: deferred to 08:00 Shanghai time.
    clock.set(datetime(2026, 3, 5, 15, 30, tzinfo=UTC))
    h = SandboxHarness(config, sqlite_db, clock)
    await at_dates(h)
    clock.advance(timedelta(hours=24))
    assert send_due_followups(sqlite_db, config, clock)["deferred_quiet_hours"] == 1
    fu = followups(sqlite_db)[-1]
    assert fu.status == "pending"
    assert fu.due_at.astimezone(SHANGHAI).hour == 8
    clock.set(fu.due_at)
    assert send_due_followups(sqlite_db, config, clock)["sent"] == 1

    # The same moment is day time for a customer in New York: no deferral there.
    set_customer(sqlite_db, "u1", timezone="America/New_York")
    with sqlite_db.sessions() as s:
        c = s.get(Customer, fu.customer_id)
        late_in_shanghai = datetime(2026, 3, 8, 15, 30, tzinfo=UTC)
        assert check(s, c, late_in_shanghai, MarketingConfig(max_per_window=0)).allowed


async def test_frequency_cap_defers_until_the_window_frees(config, sqlite_db, clock):
    h = SandboxHarness(config, sqlite_db, clock)
    await at_dates(h)
    clock.advance(timedelta(hours=23))
    with sqlite_db.transaction() as s:
        conv = s.scalars(select(Conversation)).one()
        for i in range(3):  # three campaign pushes: the default cap is 3 per 7 days
            outbox.enqueue(
                s,
                key=f"campaign:test:{i}",
                to=ConversationRef("sandbox", "u1", "u1"),
                text="promo",
                customer_id=conv.customer_id,
                purpose="campaign",
                now=clock.now(),
            )
    clock.advance(timedelta(hours=2))
    assert send_due_followups(sqlite_db, config, clock)["deferred_frequency_cap"] == 1
    fu = followups(sqlite_db)[-1]
    assert fu.due_at == clock.now() - timedelta(hours=2) + timedelta(days=7)
    clock.set(fu.due_at)
    assert send_due_followups(sqlite_db, config, clock)["sent"] == 1


async def test_coupon_reminder_is_cancelled_when_the_customer_buys(config, sqlite_db, clock):
    h = SandboxHarness(config, sqlite_db, clock)
    await at_dates(h)
    await h.say("u1", "本周六")
    await h.say("u1", "2")
    reminder = followups(sqlite_db)[-1]
    assert (reminder.step, reminder.template, reminder.status) == (
        "offer",
        "trip_coupon_reminder",
        "pending",
    )
    assert reminder.due_at == clock.now() + timedelta(hours=72)
    with sqlite_db.transaction() as s:
        code = s.scalars(select(Conversation)).one().state["flow"]["offer"]["code"]
        assert redeem(s, code, now=clock.now(), by="till", config=config).ok
    assert followups(sqlite_db)[-1].reason == "bought"
    clock.advance(timedelta(days=4))
    assert send_due_followups(sqlite_db, config, clock)["sent"] == 0


async def test_unredeemed_coupon_reminder_renders_from_the_breakpoint(config, sqlite_db, clock):
    h = SandboxHarness(config, sqlite_db, clock)
    await at_dates(h)
    await h.say("u1", "本周六")
    await h.say("u1", "2")
    clock.advance(timedelta(days=3, minutes=1))
    assert send_due_followups(sqlite_db, config, clock)["sent"] == 1
    await h.deliver()
    last = (await h.bot_messages("u1"))[-1]
    assert "周末游立减50元券" in last and "还没使用" in last and "WKND-" in last


async def test_followup_in_the_marketing_window_counts_for_the_cap(config, sqlite_db, clock):
    cfg = config.replace(marketing=replace(config.marketing, max_per_window=1))
    h = SandboxHarness(cfg, sqlite_db, clock)
    await at_dates(h, "u1")
    clock.advance(timedelta(days=1, minutes=1))
    assert send_due_followups(sqlite_db, cfg, clock)["sent"] == 1
    with sqlite_db.sessions() as s:
        customer = s.scalars(select(Customer)).one()
        decision = check(s, customer, clock.now(), cfg.marketing)
    assert (decision.allowed, decision.reason) == (False, "frequency_cap")


@pytest.mark.parametrize(
    ("local", "until_hour"),
    [("23:30", 8), ("03:00", 8), ("07:59", 8), ("08:00", None), ("21:59", None), ("22:00", 8)],
)
def test_quiet_hours_wrap_midnight(local, until_hour):
    hour, minute = map(int, local.split(":"))
    moment = datetime(2026, 3, 6, hour, minute, tzinfo=SHANGHAI).astimezone(UTC)
    until = quiet_until(moment, SHANGHAI, "22:00-08:00")
    assert (until.astimezone(SHANGHAI).hour if until else None) == until_hour
    if until:
        assert until > moment and until - moment <= timedelta(hours=10)


async def test_the_one_scheduler_runs_followups_and_the_sla(config, sqlite_db, clock):
    """Follow-ups and SLA escalation are the scheduler's ``conversations:due`` job, run only
    by the process holding the scheduler lock (no per-process loop any more)."""
    import asyncio

    from bot.app.services import Services
    from bot.core.templating import Renderer
    from scheduler import jobs
    from scheduler.service import SchedulerService
    from storage.handoff import HandoffTicket

    h = SandboxHarness(config, sqlite_db, clock)
    await at_dates(h)
    await h.say("u2", "我要投诉")
    clock.advance(timedelta(days=1, minutes=1))
    services = Services(db=sqlite_db, config=config, renderer=Renderer(), clock=clock)
    jobs.bind(services)
    try:
        jobs.conversations_due()
    finally:
        jobs.bind(None)
    assert followups(sqlite_db)[-1].status == "sent"
    with sqlite_db.sessions() as s:
        assert s.scalars(select(HandoffTicket.escalated_at)).one() is not None

    leader = SchedulerService(services, standby_seconds=0.05)
    await leader.start()
    try:
        for _ in range(200):
            if leader.leading:
                break
            await asyncio.sleep(0.05)
        job = leader.scheduler.get_job("conversations:due")
        assert job.func_ref == "scheduler.jobs:conversations_due"
        interval = config.conversations.followup_interval_seconds
        assert job.trigger.interval == timedelta(seconds=interval)
    finally:
        await leader.stop()
