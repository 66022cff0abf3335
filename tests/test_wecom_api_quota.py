"""WeCom's limits are per API: Siyu counts each endpoint on its own, shared by every
process through Redis; and its batch work (mass-send results, corp tag sync) runs only in
processes that deliver, never in web processes."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import timedelta

import pytest
import redis

from bot.adapters.quotas import QuotaWindow, SharedQuota
from bot.adapters.wechat.api import CALL_PURPOSE, QuotaExceeded, TokenStore, WecomApi
from bot.app.assembly import build
from bot.app.roles import Role
from tests.fakes.wechat import wecom_config

REDIS_URL = "redis://127.0.0.1:6379/10"


def _minute_from_now() -> float:
    """A window offset that makes the current minute-long window start now, so a test's
    calls never straddle two windows (the windows are fixed, on the wall clock)."""
    return (-time.time()) % 60.0


def _client(db, clock, fake_api, name: str, per_minute: int, offset: float) -> WecomApi:
    """One process's WeCom client: its own quota object, one Redis for all."""
    window = QuotaWindow("minute", per_minute, 60.0, offset)
    quota = SharedQuota(name, [window], redis_url=REDIS_URL, reply_reserve=0.25)
    store = TokenStore(db, clock, 300)
    return WecomApi("ww-corp", "corp-secret", store, fake_api.base_url, 5.0, quota=quota)


def test_each_api_has_its_own_count_shared_by_two_clients(db, clock, fake_api):
    name = f"wecom-test-{uuid.uuid4().hex[:8]}"
    offset = _minute_from_now()
    first, second = (_client(db, clock, fake_api, name, 4, offset) for _ in range(2))
    CALL_PURPOSE.set("reply")
    for client in (first, second, first, second):  # 4 of message/send, between them
        client.call(client.message.send_text, 1000002, "zhangsan", "您好")
    with pytest.raises(QuotaExceeded) as refused:
        second.call(second.message.send_text, 1000002, "zhangsan", "再见")
    assert refused.value.errcode == 45009 and 0 < refused.value.wait <= 60
    assert refused.value.endpoint == "message/send"
    assert len(fake_api.calls_to("message/send")) == 4  # the refused call was not made
    # another API still has its whole window
    first.call(first.external_contact.get, "wmEXT1")
    second.call(second.external_contact.get, "wmEXT2")
    assert len(fake_api.calls_to("externalcontact/get")) == 2
    keys = {k.decode() for k in redis.Redis.from_url(REDIS_URL).keys(f"siyu:quota:{name}:*")}
    assert {k.rsplit(":", 2)[0] for k in keys} == {
        f"siyu:quota:{name}:gettoken",  # the access token's fetch is counted on its own
        f"siyu:quota:{name}:message/send",
        f"siyu:quota:{name}:externalcontact/get",
    }


def test_access_token_fetches_count_against_their_own_quota(db, clock, fake_api):
    name = f"wecom-test-{uuid.uuid4().hex[:8]}"
    first, second = (_client(db, clock, fake_api, name, 3, _minute_from_now()) for _ in range(2))
    CALL_PURPOSE.set("reply")
    first.call(first.message.send_text, 1000002, "zhangsan", "您好")  # fetches the token
    clock.advance(timedelta(hours=3))  # expired: the next call fetches a new one
    second.call(second.message.send_text, 1000002, "zhangsan", "在吗")
    clock.advance(timedelta(hours=3))
    first.fetch_access_token()
    clock.advance(timedelta(hours=3))
    with pytest.raises(QuotaExceeded) as refused:
        second.fetch_access_token()
    assert refused.value.endpoint == "gettoken" and 0 < refused.value.wait <= 60
    assert len(fake_api.calls_to("gettoken")) == 3  # the refused fetch was not made
    # message/send keeps its own count: 2 of its 3 used, so it was not what refused
    assert len(fake_api.calls_to("message/send")) == 2


def test_background_calls_leave_the_reserve_to_replies(db, clock, fake_api):
    name = f"wecom-test-{uuid.uuid4().hex[:8]}"
    client = _client(db, clock, fake_api, name, 4, _minute_from_now())
    CALL_PURPOSE.set("marketing")  # what mass-send polling and tag sync count as
    for i in range(3):  # 3 of 4: a quarter is kept for replies
        client.call(client.external_contact.get, f"wmEXT{i}")
    with pytest.raises(QuotaExceeded):
        client.call(client.external_contact.get, "wmEXT9")
    CALL_PURPOSE.set("reply")
    client.call(client.external_contact.get, "wmEXT9")
    assert len(fake_api.calls_to("externalcontact/get")) == 4


@pytest.mark.parametrize(("role", "batch"), [(Role.WEB, False), (Role.WORKER, True)])
async def test_mass_send_polling_and_tag_sync_run_only_where_messages_are_delivered(
    config, sqlite_db, clock, fake_api, role, batch
):
    cfg = wecom_config(config, sqlite_db.url, fake_api, corp_tags=["VIP=etVIP"])
    adapter = build(cfg, db=sqlite_db, clock=clock, role=role).runtime.adapters["wecom"]
    await adapter.start()
    try:
        running = {t.get_name() for t in asyncio.all_tasks()}
        assert ("wecom-mass-poller" in running) is batch
        assert ("wecom-corp-tag-sync" in running) is batch
    finally:
        await adapter.stop()
