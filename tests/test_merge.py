"""Merging two customers who share tags and interest scores, on SQLite and PostgreSQL."""

from __future__ import annotations

import math
from datetime import timedelta

import pytest
from sqlalchemy import select

from storage.identity_links import merge_customers
from storage.models import CustomerTag, Tag
from storage.repos import add_tag, upsert_customer
from storage.tag_scores import TagInterest, bump_interest, current_log2, days_since_epoch

HALF_LIFE = 10.0  # days


def customer(s, external: str, now) -> int:
    c, _ = upsert_customer(
        s, "sandbox", external, display_name=external, locale="zh-CN",
        timezone="Asia/Shanghai", now=now,
    )  # fmt: skip
    s.flush()
    return c.id


def interest(s, customer_id: int, tag: str) -> TagInterest | None:
    tag_id = s.scalar(select(Tag.id).where(Tag.name == tag))
    return s.get(TagInterest, (customer_id, tag_id))


def customer_tag(s, customer_id: int, tag: str) -> CustomerTag | None:
    tag_id = s.scalar(select(Tag.id).where(Tag.name == tag))
    return s.get(CustomerTag, (customer_id, tag_id))


def test_shared_interest_scores_add_up_at_one_reference_time(db, clock):
    t0 = clock.now()
    with db.transaction() as s:
        into, source = customer(s, "a", t0), customer(s, "b", t0)
        for cid in (into, source):
            add_tag(s, cid, "母婴", source="rule", now=t0)
        add_tag(s, source, "早餐", source="rule", now=t0)
        bump_interest(s, into, "母婴", 4.0, t0, half_life_days=HALF_LIFE)  # 2 at t0+10d
        bump_interest(s, source, "早餐", 1.5, t0, half_life_days=HALF_LIFE)
        t1 = t0 + timedelta(days=10)
        bump_interest(s, source, "母婴", 3.0, t1, half_life_days=HALF_LIFE)  # 3 at t1
        bump_interest(s, source, "母婴", 1.0, t1, half_life_days=HALF_LIFE)  # 4 at t1

    with db.transaction() as s:
        merge_customers(s, into, source, reason="manager", now=t1 + timedelta(days=1))

    with db.sessions() as s:
        row = interest(s, into, "母婴")
        assert row.score == pytest.approx(2.0 + 4.0)  # into decayed to t1, plus source at t1
        assert row.last_hit_at == t1 and row.first_hit_at == t0 and row.hits == 3
        later = t1 + timedelta(days=HALF_LIFE)
        assert row.score_at(later) == pytest.approx(3.0)
        # The SQL form of the score agrees, so segments like tagscore:母婴 >= 3 see the sum.
        log2_now = s.scalar(
            select(current_log2(later))
            .where(TagInterest.customer_id == into)
            .where(TagInterest.tag_id == row.tag_id)  # the customer has a second tag's row
        )
        assert log2_now == pytest.approx(math.log2(3.0))
        assert row.decay_key == pytest.approx(math.log2(6.0) + days_since_epoch(t1) / HALF_LIFE)
        # The tag only the merged customer had moved over; nothing stays on the old record.
        assert interest(s, into, "早餐").score == pytest.approx(1.5)
        assert s.scalars(select(TagInterest).where(TagInterest.customer_id == source)).all() == []

    with db.transaction() as s:  # the next hit continues from the sum
        score = bump_interest(s, into, "母婴", 1.0, t1, half_life_days=HALF_LIFE)
    assert score == pytest.approx(7.0)


def test_shared_tag_keeps_the_widest_span_and_expiry(db, clock):
    t0 = clock.now()
    day = timedelta(days=1)
    with db.transaction() as s:
        into, source = customer(s, "a", t0), customer(s, "b", t0)
        add_tag(s, into, "母婴", source="keyword", now=t0 + 2 * day, ttl=5 * day)
        add_tag(s, source, "母婴", source="event", now=t0, ttl=30 * day)
        add_tag(s, source, "母婴", source="event", now=t0 + 4 * day, ttl=30 * day)
        add_tag(s, into, "VIP", source="manager", now=t0 + 3 * day, ttl=day)
        add_tag(s, source, "VIP", source="manager", now=t0)  # no expiry
        add_tag(s, into, "早餐", source="keyword", now=t0 + 9 * day)  # no expiry
        add_tag(s, source, "早餐", source="keyword", now=t0 + 1 * day, ttl=day)

    with db.transaction() as s:
        merge_customers(s, into, source, reason="manager", now=t0 + 10 * day)

    with db.sessions() as s:
        baby = customer_tag(s, into, "母婴")
        assert (baby.first_seen_at, baby.last_seen_at) == (t0, t0 + 4 * day)
        assert baby.expires_at == t0 + 34 * day
        assert baby.source == "keyword"  # the surviving row
        vip = customer_tag(s, into, "VIP")
        assert (vip.first_seen_at, vip.last_seen_at, vip.expires_at) == (t0, t0 + 3 * day, None)
        breakfast = customer_tag(s, into, "早餐")
        assert (breakfast.first_seen_at, breakfast.expires_at) == (t0 + day, None)
        assert breakfast.last_seen_at == t0 + 9 * day
        assert s.scalars(select(CustomerTag).where(CustomerTag.customer_id == source)).all() == []
