"""The console's dashboard numbers on SQLite and PostgreSQL: brand-local days, finished days
rolled up once into console_daily, today counted live, the outbox by channel and status."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from sqlalchemy import select

from bot.web.console import queries
from storage.console import DailyCount
from storage.models import CustomerTag, Group, Interaction, Membership, OutboxMessage, Tag
from storage.scores import CustomerScore
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


def test_the_whole_table_counts_count_only_what_holds_now(db, config, monkeypatch):
    """Customers per channel, active members per group (most first, ties by group), live
    tags (no expiry or a later one) and customers per lifecycle stage, tier and RFM group:
    each read from its own small index on PostgreSQL, the figures the same on both."""
    monkeypatch.setattr(queries, "_snapshots", {})  # nothing reused from another test
    ids = [make_customer(db, f"s{i}", NOW) for i in range(4)]
    ids.append(make_customer(db, "t0", NOW, channel="telegram"))
    earlier, later = datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 3, 9, tzinfo=UTC)
    with db.transaction() as s:
        groups = [Group(channel="sandbox", external_id=f"g{i}", title=f"G{i}") for i in range(3)]
        tags = [Tag(name="母婴"), Tag(name="vip"), Tag(name="old")]
        s.add_all([*groups, *tags])
        s.flush()
        g0, g1, g2 = (g.id for g in groups)
        # g1: two active (one inactive not counted); g0 and g2: one active each (a tie)
        for group_id, customer_id, active in [
            (g1, ids[0], True), (g1, ids[1], True), (g1, ids[2], False),
            (g0, ids[3], True), (g2, ids[4], True), (g2, ids[0], False),
        ]:  # fmt: skip
            s.add(Membership(group_id=group_id, customer_id=customer_id, active=active))
        for tag, customer_id, expires in [
            (tags[0], ids[0], None), (tags[0], ids[1], later), (tags[0], ids[2], earlier),
            (tags[1], ids[3], None), (tags[2], ids[4], earlier),
        ]:  # fmt: skip
            s.add(CustomerTag(customer_id=customer_id, tag_id=tag.id, source="t",
                              expires_at=expires))  # fmt: skip
        for customer_id, lifecycle, tier, rfm in [
            (ids[0], "active", "gold", "champions"), (ids[1], "active", None, "champions"),
            (ids[2], "dormant", "gold", None), (ids[3], "new", "silver", "at_risk"),
        ]:  # fmt: skip
            s.add(CustomerScore(customer_id=customer_id, last_order_at=earlier,
                                orders_total=1, spend_total_cents=100, frequency=1,
                                monetary_cents=100, spend_12m_cents=100, rfm_group=rfm,
                                lifecycle=lifecycle, tier=tier, computed_at=earlier))  # fmt: skip
    with db.transaction() as s:
        data = queries.dashboard(s, config, queries.Period.last(7, NOW, ZONE))
    assert data["customers"] == 5
    assert data["by_channel"] == [["sandbox", 4], ["telegram", 1]]
    assert data["by_group"] == [["G1", "sandbox", 2], ["G0", "sandbox", 1], ["G2", "sandbox", 1]]
    assert data["top_tags"] == [["母婴", 2], ["vip", 1]]  # one expired; "old" only expired
    assert data["lifecycle"] == [["active", 2], ["dormant", 1], ["new", 1]]
    assert data["tier"] == [["gold", 2], ["silver", 1]]  # most first, then by name
    assert data["rfm"] == [["champions", 2], ["at_risk", 1]]
