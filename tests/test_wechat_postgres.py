"""WeChat storage on PostgreSQL: the shared access token's row lock, and customer merges
(the latter on both backends), including merges racing each other."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy import select

from bot.adapters.wechat.api import OfficialAccountApi, TokenStore
from storage.db import Database
from storage.identity_links import link_unionid, merge_customers
from storage.models import Customer, CustomerTag, Identity, Interaction, Membership, Tag
from storage.scores import CustomerScore
from storage.wechat import AccessToken, CustomerMerge
from tests.support import SandboxHarness

APP_ID = "wx0123456789abcdef"
OPENID = "oABCDEFGHIJKLMNOPQRSTUVWXYZ1"


@pytest.fixture
def pg_databases(pg_url):
    """Four Database objects on one PostgreSQL database, as four Siyu processes have."""
    first = Database(pg_url)
    first.migrate()
    dbs = [first, *(Database(pg_url) for _ in range(3))]
    yield dbs
    for db in dbs:
        db.close()


def run_together(targets) -> None:
    """Start the callables at the same moment on their own threads; re-raise failures."""
    barrier = threading.Barrier(len(targets))
    errors: list[BaseException] = []

    def go(fn):
        barrier.wait()
        try:
            fn()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=go, args=(fn,)) for fn in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors, errors


def test_four_processes_on_postgresql_fetch_the_token_once(pg_databases, clock, fake_api):
    fake_api.token_delay = 0.3  # every process asks while the first fetch is in flight
    clients = [
        OfficialAccountApi(APP_ID, "s", TokenStore(db, clock, 300), fake_api.base_url, 5)
        for db in pg_databases
    ]
    run_together([lambda c=c: c.call(c.message.send_text, OPENID, "hi") for c in clients])
    assert fake_api.token_fetches == 1
    assert len(fake_api.calls_to("message/custom/send")) == 4
    with pg_databases[0].sessions() as s:
        row = s.get(AccessToken, f"wechat:{APP_ID}")
        assert (row.token, row.fetch_count) == ("tok-1", 1)


def test_a_token_refused_in_four_processes_is_refetched_once(pg_databases, clock, fake_api):
    stores = [TokenStore(db, clock, 300) for db in pg_databases]
    fetches: list[str] = []

    def fetch() -> tuple[str, int]:
        time.sleep(0.2)
        fetches.append("x")
        return f"fresh-{len(fetches)}", 7200

    key = "wechat:test"
    assert stores[0].refresh(key, fetch) == "fresh-1"
    got: list[str] = []
    run_together([lambda s=s: got.append(s.refresh(key, fetch, stale="fresh-1")) for s in stores])
    assert got == ["fresh-2"] * 4  # the first replaced it; the others waited and read it
    assert len(fetches) == 2
    clock.advance(timedelta(seconds=7200 - 299))  # inside the margin: refreshed again, once
    assert {s.current(key) for s in stores} == {None}
    run_together([lambda s=s: got.append(s.refresh(key, fetch)) for s in stores])
    assert got[4:] == ["fresh-3"] * 4 and len(fetches) == 3


async def two_customers(h: SandboxHarness) -> tuple[int, int]:
    """Two sandbox customers who share a tag and a group, each with their own history."""
    for user in ("u1", "u2"):
        await h.say(user, "早餐几点有", name=user)
        await h.say(user, "大家好", chat="group-1", name=user)
    await h.say("u2", "有宝宝餐吗")  # a tag only u2 has
    with h.db.sessions() as s:
        ids = {i.external_id: i.customer_id for i in s.scalars(select(Identity))}
    return ids["u1"], ids["u2"]


def add_score(db: Database, customer_id: int, tier: str, now) -> None:
    with db.transaction() as s:
        s.add(
            CustomerScore(
                customer_id=customer_id,
                last_order_at=now,
                orders_total=1,
                spend_total_cents=100,
                frequency=1,
                monetary_cents=100,
                spend_12m_cents=100,
                lifecycle="active",
                tier=tier,
                computed_at=now,
            )
        )


async def test_merge_folds_history_tags_and_groups_on_both_backends(config, db, clock):
    h = SandboxHarness(config, db, clock)
    into, source = await two_customers(h)
    add_score(db, into, "金卡", clock.now())
    add_score(db, source, "银卡", clock.now())  # one score per customer: cannot move
    with db.transaction() as s:
        merge_customers(s, into, source, reason="manager", now=clock.now())
    with db.sessions() as s:
        assert {i.customer_id for i in s.scalars(select(Identity))} == {into}
        tags = s.execute(
            select(Tag.name).join(CustomerTag).where(CustomerTag.customer_id == into)
        ).scalars()
        assert sorted(tags) == sorted(["早餐", "母婴"])  # shared tag once, u2's tag moved
        assert s.scalars(select(CustomerTag).where(CustomerTag.customer_id == source)).all() == []
        assert [m.customer_id for m in s.scalars(select(Membership))] == [into]
        interactions = s.scalars(select(Interaction.customer_id)).all()
        assert len(interactions) == 5 and set(interactions) == {into}
        # the conflicting score stayed on the emptied customer; the merge went through
        assert s.get(CustomerScore, into).tier == "金卡"
        merge = s.scalars(select(CustomerMerge)).one()
        assert (merge.from_customer_id, merge.into_customer_id) == (source, into)
        assert s.get(Customer, source) is not None
    # the merged customer goes on talking as one
    result = await h.say("u2", "早饭呢")
    assert not result.errors


def test_one_person_followed_and_added_at_once_is_one_customer_on_postgresql(pg_databases, clock):
    from storage.repos import upsert_customer

    first, second = pg_databases[:2]
    with first.transaction() as s:
        for channel, external in (("wechat", OPENID), ("wecom", "wmEXT")):
            upsert_customer(
                s, channel, external, display_name="N", locale="zh-CN",
                timezone="Asia/Shanghai", now=clock.now(),
            )  # fmt: skip
    linked = threading.Event()

    def follow() -> None:  # the OA subscribe callback's transaction, slow to commit
        with first.transaction() as s:
            link_unionid(s, "wechat", OPENID, "UNION-1", clock.now())
            linked.set()
            time.sleep(0.3)

    def add() -> None:  # the WeCom add_external_contact callback, meanwhile
        linked.wait(10)
        with second.transaction() as s:
            link_unionid(s, "wecom", "wmEXT", "UNION-1", clock.now())

    run_together([follow, add])
    with first.sessions() as s:
        owners = {i.channel: i.customer_id for i in s.scalars(select(Identity))}
        assert owners["wechat"] == owners["wecom"]
        assert len(s.scalars(select(CustomerMerge)).all()) == 1
