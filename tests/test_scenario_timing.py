"""Scenarios reach each customer at their own local time, once, and only inside the window."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from bot.core.clock import FakeClock
from bot.marketing.scenarios import sync_scenarios, tick
from storage.campaigns import ScenarioRun
from storage.models import OutboxMessage
from tests.campaign_support import make_customer, services


def _setup(db, config, clock):
    svc = services(db, config, clock)
    with db.transaction() as session:
        ids = sync_scenarios(session, config.scenarios.definitions, clock.now())
        from storage.campaigns import Scenario

        morning = session.scalars(select(Scenario).where(Scenario.name == "morning_offer")).one()
    assert morning.id in ids
    return svc, morning.id


def _queued(db):
    with db.sessions() as session:
        return session.execute(
            select(
                OutboxMessage.user_id, OutboxMessage.next_attempt_at, OutboxMessage.payload
            ).order_by(OutboxMessage.id)
        ).all()


def test_morning_offer_at_seven_local_in_shanghai_and_london(db, config):
    # 2026-03-06 22:59 UTC = 06:59 in Shanghai on Saturday the 7th; 22:59 in London.
    clock = FakeClock(datetime(2026, 3, 6, 22, 59, tzinfo=UTC))
    make_customer(db, "sh", clock.now(), timezone="Asia/Shanghai", tags=("早餐",))
    make_customer(db, "ldn", clock.now(), timezone="Europe/London", tags=("早餐",), locale="en")
    make_customer(db, "notag", clock.now(), timezone="Asia/Shanghai")
    svc, sid = _setup(db, config, clock)

    assert tick(svc, sid).get("Asia/Shanghai") is None  # 06:59: not yet
    assert _queued(db) == []
    clock.set(datetime(2026, 3, 6, 23, 0, tzinfo=UTC))  # 07:00 Shanghai
    tick(svc, sid)
    rows = _queued(db)
    assert [r.user_id for r in rows] == ["sh"]
    assert rows[0].next_attempt_at == clock.now()  # due at once: 07:00 local
    assert "早上好" in rows[0].payload["text"]

    tick(svc, sid)  # a second tick in the same window queues nothing more
    assert len(_queued(db)) == 1

    clock.set(datetime(2026, 3, 7, 7, 0, tzinfo=UTC))  # 07:00 London (GMT in March)
    tick(svc, sid)
    rows = _queued(db)
    assert [r.user_id for r in rows] == ["sh", "ldn"]
    assert rows[1].next_attempt_at == clock.now()
    assert "Good morning" in rows[1].payload["text"]


def test_missed_window_is_caught_up_inside_it_and_recorded_outside(db, config):
    # Down at 07:00 Shanghai, up at 08:10: still sent.
    clock = FakeClock(datetime(2026, 3, 7, 0, 10, tzinfo=UTC))  # 08:10 Shanghai
    make_customer(db, "sh", clock.now(), tags=("早餐",))
    svc, sid = _setup(db, config, clock)
    assert tick(svc, sid) == {"Asia/Shanghai": "sent"}
    assert len(_queued(db)) == 1

    # Next day, up only at 11:00: skipped and recorded as missed.
    clock.set(datetime(2026, 3, 8, 3, 0, tzinfo=UTC))
    assert tick(svc, sid) == {"Asia/Shanghai": "missed"}
    assert len(_queued(db)) == 1
    with db.sessions() as session:
        runs = session.scalars(select(ScenarioRun).order_by(ScenarioRun.local_date)).all()
    assert [(r.local_date, r.status) for r in runs] == [
        ("2026-03-07", "sent"),
        ("2026-03-08", "missed"),
    ]
    assert "07:00-09:00" in runs[1].reason
    clock.advance(timedelta(hours=1))
    assert tick(svc, sid) == {}  # recorded once


def test_weekend_trip_only_on_friday_afternoon_and_quiet_hours_defer(db, config):
    clock = FakeClock(datetime(2026, 3, 5, 7, 0, tzinfo=UTC))  # Thursday 15:00 Shanghai
    make_customer(db, "sh", clock.now(), tags=("周末出游",))
    svc, _ = _setup(db, config, clock)
    with db.sessions() as session:
        from storage.campaigns import Scenario

        trip = session.scalars(select(Scenario).where(Scenario.name == "weekend_trip")).one().id
    assert tick(svc, trip) == {}
    clock.set(datetime(2026, 3, 6, 7, 0, tzinfo=UTC))  # Friday 15:00
    assert tick(svc, trip) == {"Asia/Shanghai": "sent"}
    assert len(_queued(db)) == 1
