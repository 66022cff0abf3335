"""The nightly scheduler job recomputes tiers and stages and purges expired tags."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from bot.app.services import Services
from bot.core.templating import Renderer
from bot.customers.orders import OrderInput, store_orders
from scheduler import jobs
from storage import repos
from storage.models import CustomerTag
from storage.scores import score_of


def test_nightly_job_scores_customers_and_purges_expired_tags(config, db, clock):
    with db.transaction() as s:
        customer, _ = repos.upsert_customer(
            s,
            "sandbox",
            "u1",
            display_name="A",
            locale="zh-CN",
            timezone="Asia/Shanghai",
            now=clock.now(),
        )
        order = OrderInput(
            order_id="o-1",
            identity=("sandbox", "u1"),
            phone=None,
            amount_cents=600_000,
            currency="CNY",
            ordered_at=clock.now() - timedelta(days=3),
            items=("外套",),
        )
        assert store_orders(s, [(1, order)], source="test", now=clock.now()).inserted == 1
        repos.add_tag(
            s, customer.id, "活跃", source="rule:activity", now=clock.now(), ttl=timedelta(days=1)
        )
    clock.advance(timedelta(days=2))
    jobs.bind(Services(db=db, config=config, renderer=Renderer(), clock=clock))
    try:
        jobs.nightly_customers()
    finally:
        jobs.bind(None)
    with db.sessions() as s:
        score = score_of(s, customer.id)
        assert score is not None and score.tier == "金卡"
        assert s.scalars(select(CustomerTag)).all() == []


async def test_the_scheduler_registers_the_nightly_job_in_the_brands_zone(config, sqlite_db, clock):
    import asyncio

    from scheduler.service import SchedulerService

    service = SchedulerService(
        Services(db=sqlite_db, config=config, renderer=Renderer(), clock=clock),
        standby_seconds=0.05,
    )
    await service.start()
    try:
        for _ in range(200):
            if service.leading:
                break
            await asyncio.sleep(0.05)
        job = service.scheduler.get_job("nightly")
        assert job.func_ref == "scheduler.jobs:nightly_customers"
        assert str(job.trigger.timezone) == "Asia/Shanghai"
        assert "hour='3'" in str(job.trigger)
    finally:
        await service.stop()
