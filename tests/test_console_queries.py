"""The console's dashboard numbers on SQLite and PostgreSQL: brand-local days, finished days
rolled up once into console_daily, today counted live, the outbox by channel and status."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from sqlalchemy import select

from bot.web.console import queries
from storage.console import DailyCount
from storage.models import Interaction, OutboxMessage
from tests.campaign_support import make_customer

ZONE = ZoneInfo("Asia/Shanghai")
NOW = datetime(2026, 3, 6, 4, 0, tzinfo=UTC)  # 12:00 in Shanghai


def message(db, customer_id: int, at: datetime) -> None:
    with db.transaction() as s:
        s.add(Interaction(customer_id=customer_id, event_id="e", channel="sandbox",
                          chat_id="c", kind="message", text="hi", payload={}, occurred_at=at))  # fmt: skip


def test_messages_per_local_day_rolled_up_once_and_today_live(db, config):
    cid = make_customer(db, "u1", NOW)
    local = lambda *a: datetime(*a, tzinfo=ZONE)  # noqa: E731
    message(db, cid, local(2026, 3, 4, 23, 30))  # 15:30 UTC on the 4th: the 4th locally
    message(db, cid, local(2026, 3, 5, 0, 30))  # 16:30 UTC on the 4th: the 5th locally
    message(db, cid, local(2026, 3, 5, 9, 0))
    message(db, cid, local(2026, 3, 6, 8, 0))  # today
    with db.transaction() as s:
        s.add(OutboxMessage(idempotency_key="k1", channel="sandbox", chat_id="c", user_id="u1",
                            customer_id=cid, payload={}, status="sent", created_at=local(2026, 3, 5, 10, 0),
                            next_attempt_at=local(2026, 3, 5, 10, 0),
                            sent_at=local(2026, 3, 5, 10, 2)))  # fmt: skip
    period = queries.Period.last(7, NOW, ZONE)
    with db.transaction() as s:
        data = queries.dashboard(s, config, period)
    assert data["labels"][-3:] == ["2026-03-04", "2026-03-05", "2026-03-06"]
    assert data["inbound"][-3:] == [1, 2, 1]
    assert data["outbound"][-3:] == [0, 1, 0]
    assert data["outbox"]["by_status"] == [["sandbox", "sent", 1]]
    assert dict(data["outbox"]["lateness"])["lt5m"] == 1
    with db.sessions() as s:
        done = set(s.scalars(select(DailyCount.day).where(DailyCount.metric == "_done")))
        stored = s.scalar(
            select(DailyCount.value).where(
                DailyCount.day == "2026-03-05", DailyCount.metric == "inbound"
            )
        )
    assert done == set(data["labels"][:-1]) and stored == 2  # today is never frozen
    # Today keeps counting live; finished days are read from the rollup.
    message(db, cid, local(2026, 3, 6, 9, 0))
    with db.transaction() as s:
        again = queries.dashboard(s, config, period)
    assert again["inbound"][-3:] == [1, 2, 2]
