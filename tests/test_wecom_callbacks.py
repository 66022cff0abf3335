"""WeCom callbacks over HTTP to a running Siyu; welcome messages, mass-send tasks, groups."""

from __future__ import annotations

from dataclasses import replace

import httpx
import pytest
from sqlalchemy import select
from wechatpy.enterprise.crypto import WeChatCrypto as WecomCrypto

from storage.models import Group, Identity, Membership, OutboxMessage
from storage.wechat import SourceAttribution, WecomMassTask
from tests.support import free_port
from tests.wechat_fakes import (
    CallbackSigner,
    FakeWechatApi,
    RunningSiyu,
    random_aes_key,
    wait_until,
)

CORP = "ww0123456789abcdef"
EXT = "wmEXTERNALCONTACT01"
STAFF = "zhangsan"


@pytest.fixture
def fake_api():
    fake = FakeWechatApi(free_port()).start()
    yield fake
    fake.stop()


@pytest.fixture
def wc_config(config, sqlite_db, fake_api):
    return config.replace(
        database=replace(config.database, url=sqlite_db.url),
        wecom=replace(
            config.wecom,
            corp_id=CORP,
            secret="corp-secret",
            agent_id=1000002,
            token="wecom-token",
            encoding_aes_key=random_aes_key(),
            api_base_url=fake_api.base_url,
            corp_tags=["来源:store-42=etSTORE42"],
        ),
    )


@pytest.fixture
def signer(wc_config, clock):
    c = wc_config.wecom
    return CallbackSigner(c.token, c.encoding_aes_key, CORP, now=lambda: clock.now().timestamp())


@pytest.fixture
async def siyu(wc_config, sqlite_db, clock):
    async with RunningSiyu(wc_config, sqlite_db, clock, free_port()) as running:
        yield running


async def post(siyu, signer, fields: dict, **kw) -> httpx.Response:
    query, body = signer.wecom_callback(fields, **kw)
    async with httpx.AsyncClient(timeout=10) as client:
        return await client.post(f"{siyu.base}/wecom/callback?{query}", content=body)


def contact_event(clock, change: str, **extra) -> dict:
    return {
        "ToUserName": CORP,
        "FromUserName": "sys",
        "CreateTime": int(clock.now().timestamp()),
        "MsgType": "event",
        "Event": "change_external_contact",
        "ChangeType": change,
        "UserID": STAFF,
        "ExternalUserID": EXT,
    } | extra


def test_helper_echostr_is_what_wechatpy_decrypts(signer):
    query = dict(p.split("=", 1) for p in signer.wecom_verify_query("abc").split("&"))
    from urllib.parse import unquote

    theirs = WecomCrypto(signer.token, signer.aes_key, CORP)
    assert (
        theirs.check_signature(
            query["msg_signature"], query["timestamp"], query["nonce"], unquote(query["echostr"])
        )
        == "abc"
    )


async def test_url_verification_decrypts_echostr(siyu, signer):
    async with httpx.AsyncClient() as client:
        ok = await client.get(f"{siyu.base}/wecom/callback?{signer.wecom_verify_query('w-7')}")
        forged = CallbackSigner("bad", signer.aes_key, CORP, now=signer.now)
        bad = await client.get(f"{siyu.base}/wecom/callback?{forged.wecom_verify_query('w-7')}")
    assert (ok.status_code, ok.text) == (200, "w-7")
    assert bad.status_code == 403


async def test_wrong_corp_id_is_refused(siyu, signer, clock, sqlite_db):
    response = await post(
        siyu, signer, contact_event(clock, "add_external_contact"), receiver_id="wwOTHER"
    )
    assert response.status_code == 403
    with sqlite_db.sessions() as session:
        assert session.scalars(select(Identity)).all() == []


async def test_added_contact_gets_the_welcome_and_a_source(
    siyu, signer, clock, sqlite_db, fake_api
):
    event = contact_event(
        clock, "add_external_contact", State="store-42", WelcomeCode="WELCOME-CODE-1"
    )
    for _ in range(3):  # WeChat's retries: processed once
        assert (await post(siyu, signer, event)).text == "success"
    await wait_until(lambda: fake_api.calls_to("externalcontact/send_welcome_msg"))
    (call,) = fake_api.calls_to("externalcontact/send_welcome_msg")
    assert call.body["welcome_code"] == "WELCOME-CODE-1"
    assert "欢迎" in call.body["text"]["content"]
    await wait_until(lambda: fake_api.calls_to("externalcontact/mark_tag"))
    assert fake_api.calls_to("externalcontact/mark_tag")[0].body["add_tag"] == ["etSTORE42"]
    with sqlite_db.sessions() as session:
        source = session.scalars(select(SourceAttribution)).one()
        assert (source.source, source.external_id) == ("store-42", EXT)
        assert len(session.scalars(select(OutboxMessage)).all()) == 1


async def test_later_messages_become_mass_tasks_waiting_for_confirmation(
    siyu, signer, clock, sqlite_db, fake_api
):
    await post(siyu, signer, contact_event(clock, "add_external_contact"))  # no WelcomeCode
    await wait_until(lambda: fake_api.calls_to("externalcontact/add_msg_template"))
    (call,) = fake_api.calls_to("externalcontact/add_msg_template")
    assert (call.body["sender"], call.body["external_userid"]) == (STAFF, [EXT])

    def task_recorded() -> bool:  # the API answered; the task row is written right after
        with sqlite_db.sessions() as session:
            return session.scalars(select(WecomMassTask)).first() is not None

    await wait_until(task_recorded)
    with sqlite_db.sessions() as session:
        task = session.scalars(select(WecomMassTask)).one()
        assert task.status == "pending_confirmation"
    adapter = siyu.adapter("wecom")
    assert await adapter.poll_mass_tasks() == {task.msgid: "pending_confirmation"}
    fake_api.mass_status[task.msgid] = 1  # the staff member confirmed; WeCom sent it
    assert await adapter.poll_mass_tasks() == {task.msgid: "sent"}


async def test_customer_group_member_join_is_a_membership(siyu, signer, clock, sqlite_db):
    event = {
        "ToUserName": CORP,
        "FromUserName": "sys",
        "CreateTime": int(clock.now().timestamp()),
        "MsgType": "event",
        "Event": "change_external_chat",
        "ChatId": "wrGROUP1",
        "ChangeType": "update",
        "UpdateDetail": "add_member",
        "JoinScene": 1,
        "MemChangeCnt": 1,
        "MemChangeList": [EXT],
    }
    assert (await post(siyu, signer, event)).status_code == 200
    with sqlite_db.sessions() as session:
        group = session.scalars(select(Group)).one()
        assert (group.channel, group.external_id) == ("wecom", "wrGROUP1")
        membership = session.scalars(select(Membership)).one()
        assert membership.active and membership.group_id == group.id


async def test_removed_by_customer_marks_unreachable(siyu, signer, clock, sqlite_db):
    await post(siyu, signer, contact_event(clock, "add_external_contact"))
    clock.advance(5)
    await post(siyu, signer, contact_event(clock, "del_follow_user"))
    with sqlite_db.sessions() as session:
        identity = session.scalars(select(Identity).where(Identity.external_id == EXT)).one()
        assert identity.unreachable


async def test_staff_app_text_is_answered_by_app_message(siyu, signer, clock, fake_api):
    event = {
        "ToUserName": CORP,
        "FromUserName": STAFF,
        "CreateTime": int(clock.now().timestamp()),
        "MsgType": "text",
        "Content": "/help",
        "MsgId": "9001",
        "AgentID": 1000002,
    }
    assert (await post(siyu, signer, event)).text == "success"
    await wait_until(lambda: fake_api.calls_to("message/send"))
    call = fake_api.calls_to("message/send")[0]
    assert (call.body["touser"], call.body["agentid"]) == (STAFF, 1000002)
