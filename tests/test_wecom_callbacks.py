"""WeCom callbacks over HTTP to a running Siyu; welcome messages, mass-send tasks (batched
per staff member for campaigns), customer groups, corp tags."""

from __future__ import annotations

from dataclasses import replace

import httpx
import pytest
from sqlalchemy import select
from wechatpy.enterprise.crypto import WeChatCrypto as WecomCrypto

from bot.core.events import ConversationRef
from bot.outbox import queue as outbox
from storage.models import Group, Identity, Membership, OutboxMessage
from storage.wechat import SourceAttribution, WecomMassTask
from tests.fakes.wechat import (
    WECOM_CORP_ID,
    CallbackSigner,
    RunningSiyu,
    wait_until,
    wecom_config,
)
from tests.support import free_port

CORP = WECOM_CORP_ID
EXT = "wmEXTERNALCONTACT01"
STAFF = "zhangsan"


@pytest.fixture
def wc_config(config, sqlite_db, fake_api):
    return wecom_config(
        config, sqlite_db.url, fake_api, secret="corp-secret", corp_tags=["来源:store-42=etSTORE42"]
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
    await wait_until(lambda: outbox_rows(sqlite_db)[task.outbox_key][0] == "awaiting_confirm")
    fake_api.mass_status[task.msgid] = 1  # the staff member confirmed; WeCom sent it
    assert await adapter.poll_mass_tasks() == {task.msgid: "sent"}
    assert outbox_rows(sqlite_db)[task.outbox_key] == ("sent", None, f"mass:{task.msgid}")


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


def mark_tag_calls(fake_api) -> list[tuple[list, list]]:
    return [
        (c.body.get("add_tag", []), c.body.get("remove_tag", []))
        for c in fake_api.calls_to("externalcontact/mark_tag")
    ]


async def test_every_later_tag_change_reaches_wecom_corp_tags(
    wc_config, signer, clock, sqlite_db, fake_api
):
    from datetime import timedelta

    from storage import repos

    cfg = wc_config.replace(
        wecom=replace(
            wc_config.wecom,
            corp_tags=[*wc_config.wecom.corp_tags, "VIP=etVIP", "活跃=etACTIVE"],
            tag_sync_interval_seconds=0.05,
        )
    )
    async with RunningSiyu(cfg, sqlite_db, clock, free_port()) as siyu:
        await post(siyu, signer, contact_event(clock, "add_external_contact", State="store-42"))
        await wait_until(lambda: mark_tag_calls(fake_api) == [(["etSTORE42"], [])])

        with sqlite_db.transaction() as s:  # a manager, an import or the nightly rules
            customer = repos.find_identity(s, "wecom", EXT).customer_id
            repos.add_tag(s, customer, "VIP", source="manager:test", now=clock.now())
            repos.add_tag(
                s, customer, "活跃", source="rule", now=clock.now(), ttl=timedelta(hours=1)
            )
        await wait_until(lambda: len(mark_tag_calls(fake_api)) == 2)
        assert mark_tag_calls(fake_api)[1] == (["etACTIVE", "etVIP"], [])

        with sqlite_db.transaction() as s:
            repos.remove_tag(s, customer, "VIP")
        clock.advance(timedelta(hours=2))  # 活跃 expires
        await wait_until(lambda: len(mark_tag_calls(fake_api)) == 3)
        assert mark_tag_calls(fake_api)[2] == ([], ["etACTIVE", "etVIP"])
        assert await siyu.adapter("wecom").sync_corp_tags() == 0  # nothing left to change
    call = fake_api.calls_to("externalcontact/mark_tag")[-1]
    assert (call.body["userid"], call.body["external_userid"]) == (STAFF, EXT)


# -- campaign sends: one task per staff member; groups through their owner ----------------

OFFER = "周末特惠：千岛湖两晚 8 折"


def queue_campaign(db, clock, to: ConversationRef, key: str, text: str = OFFER) -> None:
    with db.transaction() as s:
        outbox.enqueue(s, key=key, to=to, text=text, purpose="campaign", now=clock.now())


def tasks(db) -> list[WecomMassTask]:
    with db.sessions() as s:
        return list(s.scalars(select(WecomMassTask).order_by(WecomMassTask.id)))


async def test_a_campaign_is_one_task_per_staff_member_and_groups_go_via_their_owner(
    wc_config, signer, clock, sqlite_db, fake_api
):
    cfg = wc_config.replace(wecom=replace(wc_config.wecom, mass_batch_seconds=1.0))
    contacts = {"wmA": "zhangsan", "wmB": "zhangsan", "wmC": "zhangsan", "wmD": "lisi"}
    async with RunningSiyu(cfg, sqlite_db, clock, free_port()) as siyu:
        for ext, staff in contacts.items():
            event = contact_event(clock, "add_external_contact", ExternalUserID=ext, UserID=staff)
            assert (await post(siyu, signer, event)).text == "success"
        # each welcome (a reply, no welcome code) is its own task, sent at once
        await wait_until(lambda: len(fake_api.calls_to("externalcontact/add_msg_template")) == 4)
        await wait_until(lambda: len(tasks(sqlite_db)) == 4)

        for ext in contacts:
            queue_campaign(sqlite_db, clock, ConversationRef("wecom", ext, ext), f"c1:{ext}")
        for chat in ("wrGROUP1", "wrGROUP2"):
            queue_campaign(sqlite_db, clock, ConversationRef("wecom", chat, ""), f"c1:{chat}")
        queue_campaign(  # another text cannot share a task
            sqlite_db, clock, ConversationRef("wecom", "wmA", "wmA"), "c2:wmA", "另一条"
        )
        siyu.runtime.worker.wake()
        await wait_until(lambda: len(fake_api.calls_to("externalcontact/add_msg_template")) == 8)

    calls = fake_api.calls_to("externalcontact/add_msg_template")[4:]
    by_sender = {
        (c.body["sender"], c.body["text"]["content"]): sorted(
            c.body.get("external_userid") or c.body.get("chat_id_list")
        )
        for c in calls
    }
    assert by_sender == {
        ("zhangsan", OFFER): ["wmA", "wmB", "wmC"],
        ("lisi", OFFER): ["wmD"],
        ("staff-owner", OFFER): ["wrGROUP1", "wrGROUP2"],
        ("zhangsan", "另一条"): ["wmA"],
    }
    group_call = next(c for c in calls if c.body["sender"] == "staff-owner")
    assert group_call.body["chat_type"] == "group"
    assert sorted(
        c.body["chat_id"] for c in fake_api.calls_to("externalcontact/groupchat/get")
    ) == [
        "wrGROUP1",
        "wrGROUP2",
    ]
    with sqlite_db.sessions() as s:
        statuses = s.scalars(
            select(OutboxMessage.status).where(OutboxMessage.purpose == "campaign")
        ).all()
    assert statuses == ["awaiting_confirm"] * 7  # handed to WeCom; the staff must confirm

    campaign_tasks = [t for t in tasks(sqlite_db) if t.outbox_key.startswith("c")]
    leads = [t for t in campaign_tasks if t.status == "pending_confirmation"]
    assert len(leads) == 4 and all(t.msgid for t in leads)
    zhangsan = next(t for t in leads if t.sender == "zhangsan" and t.text == OFFER)
    assert len(zhangsan.targets["members"]) == 3

    async with RunningSiyu(cfg, sqlite_db, clock, free_port()) as siyu:
        fake_api.mass_status[zhangsan.msgid] = 1  # zhangsan confirmed; WeCom sent it
        polled = await siyu.adapter("wecom").poll_mass_tasks()
    assert polled[zhangsan.msgid] == "sent"
    members = {t.id: t.status for t in tasks(sqlite_db) if t.id in zhangsan.targets["members"]}
    assert set(members.values()) == {"sent"}
    rows = outbox_rows(sqlite_db)
    assert {k: rows[k][0] for k in rows if k.startswith("c")} == {
        "c1:wmA": "sent",
        "c1:wmB": "sent",
        "c1:wmC": "sent",
        "c1:wmD": "awaiting_confirm",
        "c1:wrGROUP1": "awaiting_confirm",
        "c1:wrGROUP2": "awaiting_confirm",
        "c2:wmA": "awaiting_confirm",
    }
    assert rows["c1:wmB"][2] == f"mass:{zhangsan.msgid}"


def outbox_rows(db) -> dict[str, tuple[str, str | None, str | None]]:
    """Outbox key → (status, last_error, platform_message_id)."""
    with db.sessions() as s:
        return {
            r.idempotency_key: (r.status, r.last_error, r.platform_message_id)
            for r in s.scalars(select(OutboxMessage))
        }


async def test_mass_send_outcomes_reach_the_outbox_and_survive_a_restart(
    wc_config, signer, clock, sqlite_db, fake_api
):
    cfg = wc_config.replace(wecom=replace(wc_config.wecom, mass_batch_seconds=0.2))
    contacts = {"wmA": STAFF, "wmB": STAFF, "wmC": STAFF, "wmD": "lisi"}
    mass = "externalcontact/add_msg_template"
    async with RunningSiyu(cfg, sqlite_db, clock, free_port()) as siyu:
        for ext, staff in contacts.items():
            event = contact_event(clock, "add_external_contact", ExternalUserID=ext, UserID=staff)
            assert (await post(siyu, signer, event)).text == "success"
        await wait_until(lambda: len(fake_api.calls_to(mass)) == 4)  # the welcomes
        await wait_until(lambda: len(tasks(sqlite_db)) == 4)

        # lisi's task is refused for good: its message fails at once, with the reason
        fake_api.fail_next(mass, 40058, "invalid parameter")
        queue_campaign(sqlite_db, clock, ConversationRef("wecom", "wmD", "wmD"), "c1:wmD")
        siyu.runtime.worker.wake()
        await wait_until(lambda: outbox_rows(sqlite_db)["c1:wmD"][0] == "failed")
        assert "40058" in outbox_rows(sqlite_db)["c1:wmD"][1]

        # zhangsan's contacts and a group: handed to WeCom, waiting for confirmation
        for ext in ("wmA", "wmB", "wmC"):
            queue_campaign(sqlite_db, clock, ConversationRef("wecom", ext, ext), f"c1:{ext}")
        queue_campaign(sqlite_db, clock, ConversationRef("wecom", "wrGROUP1", ""), "c1:wrGROUP1")
        siyu.runtime.worker.wake()
        await wait_until(lambda: len(fake_api.calls_to(mass)) == 7)
        waiting = ["c1:wmA", "c1:wmB", "c1:wmC", "c1:wrGROUP1"]
        await wait_until(
            lambda: [outbox_rows(sqlite_db)[k][0] for k in waiting] == ["awaiting_confirm"] * 4
        )
        polled = await siyu.adapter("wecom").poll_mass_tasks()  # nobody confirmed yet
        assert set(polled.values()) == {"pending_confirmation"}
        assert await siyu.runtime.worker.drain_once() == 0  # the worker never claims them

    # a crash/restart while WeCom waits for the staff member: nothing is sent again
    assert [outbox_rows(sqlite_db)[k][0] for k in waiting] == ["awaiting_confirm"] * 4
    by_sender = {
        t.sender: t.msgid for t in tasks(sqlite_db) if t.outbox_key.startswith("c1:") and t.msgid
    }
    async with RunningSiyu(cfg, sqlite_db, clock, free_port()) as siyu:
        await siyu.runtime.worker.drain_once()
        fake_api.mass_status[by_sender[STAFF]] = {"wmA": 1, "wmB": 3, "wmC": 2}
        fake_api.mass_status[by_sender["staff-owner"]] = 1
        polled = await siyu.adapter("wecom").poll_mass_tasks()
        assert len(fake_api.calls_to(mass)) == 7
    assert polled[by_sender[STAFF]] == "partly_sent"
    rows = outbox_rows(sqlite_db)
    assert rows["c1:wmA"] == ("sent", None, f"mass:{by_sender[STAFF]}")
    assert rows["c1:wrGROUP1"] == ("sent", None, f"mass:{by_sender['staff-owner']}")
    assert rows["c1:wmB"][0] == "failed" and "limit" in rows["c1:wmB"][1]
    assert rows["c1:wmC"][0] == "unreachable" and "not a contact" in rows["c1:wmC"][1]
    assert rows["c1:wmD"][0] == "failed"


def test_messages_awaiting_confirmation_count_for_the_frequency_cap(sqlite_db, clock):
    from bot.app.config import MarketingConfig
    from bot.marketing import policy
    from storage import repos

    cap = MarketingConfig(quiet_hours="00:00-00:00", max_per_window=1, window_hours=24)
    with sqlite_db.transaction() as s:
        customer, _ = repos.upsert_customer(
            s, "wecom", "wmA", display_name="", locale="zh-CN", timezone="UTC", now=clock.now()
        )
        to = ConversationRef("wecom", "wmA", "wmA")
        outbox.enqueue(
            s,
            key="c1:wmA",
            to=to,
            text=OFFER,
            purpose="campaign",
            customer_id=customer.id,
            now=clock.now(),
        )
        s.flush()
        row = s.scalars(select(OutboxMessage)).one()
        row.status = "awaiting_confirm"
        s.flush()
        assert policy.check(s, customer, clock.now(), cap).reason == "frequency_cap"
        row.status = "failed"  # a refused task does not use the customer's quota
        s.flush()
        assert policy.check(s, customer, clock.now(), cap).allowed
