"""The storage contract: the same behaviour on SQLite and PostgreSQL (the `db` fixture)."""

from __future__ import annotations

import threading
from datetime import timedelta

from sqlalchemy import func, inspect, select

from bot.core.events import ConversationRef
from bot.outbox.queue import claim_due, enqueue, release_claims
from storage import repos
from storage.models import Customer, Identity, OutboxMessage


def test_migrations_create_every_core_table(db):
    names = set(inspect(db.engine).get_table_names())
    for table in (
        "customers",
        "identities",
        "groups",
        "memberships",
        "interactions",
        "tags",
        "customer_tags",
        "conversations",
        "outbox",
        "processed_inbound",
        "sandbox_messages",
    ):
        assert table in names, table
    db.migrate()  # idempotent


def test_one_customer_per_identity_and_several_identities_per_customer(db, clock):
    with db.transaction() as s:
        c1, _i1 = repos.upsert_customer(
            s, "telegram", "42", display_name="A", locale="en", timezone="UTC", now=clock.now()
        )
        c2, _ = repos.upsert_customer(
            s, "telegram", "42", display_name="A", locale="en", timezone="UTC", now=clock.now()
        )
        assert c1.id == c2.id
        s.add(
            Identity(customer_id=c1.id, channel="wechat", external_id="openid-1", display_name="A")
        )
    with db.sessions() as s:
        profile = repos.customer_profile(s, "wechat", "openid-1", clock.now())
        assert profile.customer.id == c1.id
        assert [(i.channel, i.external_id) for i in profile.identities] == [
            ("telegram", "42"),
            ("wechat", "openid-1"),
        ]
        assert s.scalar(select(func.count()).select_from(Customer)) == 1


def test_tags_keep_source_first_and_last_seen_and_expire(db, clock):
    with db.transaction() as s:
        c, _ = repos.upsert_customer(
            s,
            "sandbox",
            "u1",
            display_name="",
            locale="zh-CN",
            timezone="Asia/Shanghai",
            now=clock.now(),
        )
        first = clock.now()
        assert repos.add_tag(
            s, c.id, "活跃", source="rule:activity", now=first, ttl=timedelta(days=30)
        )
        later = first + timedelta(days=3)
        assert not repos.add_tag(
            s, c.id, "活跃", source="rule:activity", now=later, ttl=timedelta(days=30)
        )
        (t,) = repos.tags_of(s, c.id, later)
        assert (t.source, t.first_seen_at, t.last_seen_at, t.expires_at) == (
            "rule:activity",
            first,
            later,
            later + timedelta(days=30),
        )
        assert repos.tags_of(s, c.id, later + timedelta(days=31)) == []
        assert repos.remove_tag(s, c.id, "活跃") and not repos.remove_tag(s, c.id, "活跃")


def test_inbound_ids_are_claimed_once(db, clock):
    with db.transaction() as s:
        assert repos.claim_inbound(s, "telegram:1001", "e1", clock.now())
        assert not repos.claim_inbound(s, "telegram:1001", "e2", clock.now())


def test_conversation_row_is_created_once_and_keeps_state(db, clock):
    with db.transaction() as s:
        c, _ = repos.upsert_customer(
            s, "sandbox", "u1", display_name="", locale="zh-CN", timezone="UTC", now=clock.now()
        )
        conv = repos.load_conversation(s, "sandbox", "g1", "u1", c.id, clock.now())
        conv.state = {"step": 2, "answers": {"destination": "千岛湖"}}
    with db.transaction() as s:
        again = repos.load_conversation(s, "sandbox", "g1", "u1", c.id, clock.now())
        assert again.id == conv.id and again.state["answers"]["destination"] == "千岛湖"


def test_outbox_claims_are_disjoint_between_workers(db, clock):
    ref = ConversationRef("fake", "c", "c")
    with db.transaction() as s:
        for i in range(40):
            enqueue(s, key=f"k{i}", to=ref, text=str(i), now=clock.now())
    got: dict[str, list[int]] = {}
    barrier = threading.Barrier(2)

    def claim(worker: str) -> None:
        with db.transaction() as s:
            barrier.wait(timeout=10) if db.is_postgres else None
            got[worker] = [
                r.id
                for r in claim_due(
                    s,
                    worker=worker,
                    now=clock.now(),
                    lease=timedelta(seconds=60),
                    limit=25,
                    channels=["fake"],
                )
            ]

    threads = [threading.Thread(target=claim, args=(w,)) for w in ("w1", "w2")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not set(got["w1"]) & set(got["w2"])
    assert len(got["w1"]) + len(got["w2"]) == 40
    with db.transaction() as s:
        assert release_claims(s, "w1") == len(got["w1"])
        statuses = dict(
            s.execute(
                select(OutboxMessage.claimed_by, func.count()).group_by(OutboxMessage.claimed_by)
            ).all()
        )
    assert statuses.get("w2") == len(got["w2"])
