"""Official Account callbacks POSTed over HTTP to a running Siyu, built the way WeChat does."""

from __future__ import annotations

import resource
import time
from dataclasses import replace

import httpx
import pytest
from sqlalchemy import func, select
from wechatpy.crypto import WeChatCrypto

from storage.db import Database
from storage.models import Customer, Identity, Interaction, OutboxMessage
from storage.wechat import ServiceWindow, SourceAttribution
from tests.fakes.wechat import OA_APP_ID, CallbackSigner, RunningSiyu, oa_config
from tests.support import free_port

APP_ID = OA_APP_ID
OPENID = "oABCDEFGHIJKLMNOPQRSTUVWXYZ1"


@pytest.fixture
def wx_config(config, sqlite_db, fake_api):
    with_oa = oa_config(config, sqlite_db.url, fake_api)
    return with_oa.replace(api=replace(config.api, key="wx-test-api-key"))  # data needs the key


@pytest.fixture
def signer(wx_config, clock):
    c = wx_config.wechat
    return CallbackSigner(c.token, c.encoding_aes_key, APP_ID, now=lambda: clock.now().timestamp())


@pytest.fixture
async def siyu(wx_config, sqlite_db, clock):
    async with RunningSiyu(wx_config, sqlite_db, clock, free_port()) as running:
        yield running


def fields(clock, **extra) -> dict:
    base = {
        "ToUserName": "gh_account",
        "FromUserName": OPENID,
        "CreateTime": int(clock.now().timestamp()),
    }
    return base | extra


async def post(siyu: RunningSiyu, query: str, body: bytes) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as client:
        return await client.post(f"{siyu.base}/wechat/callback?{query}", content=body)


def count(db: Database, stmt) -> int:
    with db.sessions() as session:
        return session.scalar(stmt)


def test_helper_and_wechatpy_agree_on_the_envelope(signer):
    """The test helper (cryptography) and wechatpy decrypt each other's messages."""
    theirs = WeChatCrypto(signer.token, signer.aes_key, APP_ID)
    xml = "<xml><Content><![CDATA[你好]]></Content></xml>"
    query, body = signer.oa_callback({"FromUserName": OPENID, "Content": "你好"})
    params = dict(p.split("=", 1) for p in query.split("&"))
    assert "你好" in theirs.decrypt_message(
        body.decode(), params["msg_signature"], params["timestamp"], params["nonce"]
    )
    envelope = theirs.encrypt_message(xml, "nonce1", "1700000000")
    assert signer.open_reply(envelope) == {"Content": "你好"}


async def test_url_verification_echoes_and_forged_signature_is_403(siyu, signer):
    async with httpx.AsyncClient() as client:
        ok = await client.get(f"{siyu.base}/wechat/callback?{signer.oa_verify_query('e-42')}")
        forged = CallbackSigner("wrong-token", signer.aes_key, APP_ID, now=signer.now)
        bad = await client.get(f"{siyu.base}/wechat/callback?{forged.oa_verify_query('e-42')}")
    assert (ok.status_code, ok.text) == (200, "e-42")
    assert bad.status_code == 403


async def test_text_gets_a_signed_encrypted_passive_reply(siyu, signer, clock, sqlite_db, fake_api):
    query, body = signer.oa_callback(fields(clock, MsgType="text", Content="/help", MsgId=10001))
    response = await post(siyu, query, body)
    assert response.status_code == 200
    reply = signer.open_reply(response.text)
    assert reply["ToUserName"] == OPENID and reply["MsgType"] == "text"
    assert "/help" in reply["Content"] or "help" in reply["Content"]
    with sqlite_db.sessions() as session:
        row = session.scalars(select(OutboxMessage)).one()
        assert (row.status, row.platform_message_id) == ("sent", "passive")
        window = session.get(ServiceWindow, ("wechat", OPENID))
        assert (window.quota, window.used) == (5, 0)
    assert fake_api.calls_to("message/custom/send") == []


async def test_a_callback_retried_three_times_is_processed_once(siyu, signer, clock, sqlite_db):
    query, body = signer.oa_callback(fields(clock, MsgType="text", Content="早餐", MsgId=555))
    answers = [await post(siyu, query, body) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert count(sqlite_db, select(func.count()).select_from(Interaction)) == 1


async def test_subscribe_with_scene_attributes_the_source_and_welcomes(
    siyu, signer, clock, sqlite_db
):
    query, body = signer.oa_callback(
        fields(clock, MsgType="event", Event="subscribe", EventKey="qrscene_poster-A")
    )
    response = await post(siyu, query, body)
    assert "欢迎" in signer.open_reply(response.text)["Content"]
    with sqlite_db.sessions() as session:
        source = session.scalars(select(SourceAttribution)).one()
        assert (source.source, source.kind) == ("poster-A", "qrscene:subscribe")
    async with httpx.AsyncClient() as client:
        profile = (
            await client.get(
                f"{siyu.base}/api/customers/wechat/{OPENID}",
                headers={"X-API-Key": "wx-test-api-key"},
            )
        ).json()
    assert "来源:poster-A" in [t["tag"] for t in profile["tags"]]


async def test_menu_click_is_routed_and_opens_a_short_window(siyu, signer, clock, sqlite_db):
    query, body = signer.oa_callback(
        fields(clock, MsgType="event", Event="CLICK", EventKey="M_OFFER")
    )
    assert (await post(siyu, query, body)).text == "success"
    with sqlite_db.sessions() as session:
        interaction = session.scalars(select(Interaction)).one()
        assert interaction.kind == "menu"
        window = session.get(ServiceWindow, ("wechat", OPENID))
        assert (window.opened_by, window.quota) == ("click", 3)


async def test_unsubscribe_marks_unreachable_and_opted_out(siyu, signer, clock, sqlite_db):
    for event in ("subscribe", "unsubscribe"):
        query, body = signer.oa_callback(fields(clock, MsgType="event", Event=event))
        assert (await post(siyu, query, body)).status_code == 200
        clock.advance(1)
    with sqlite_db.sessions() as session:
        identity = session.scalars(select(Identity)).one()
        assert identity.unreachable and identity.unreachable_reason == "unsubscribed"
        assert session.get(Customer, identity.customer_id).marketing_opt_out


@pytest.mark.parametrize(
    "tamper",
    ["forged_signature", "wrong_app_id", "stale_timestamp", "plaintext_in_safe_mode"],
)
async def test_refused_callbacks_process_nothing(siyu, signer, clock, sqlite_db, tamper):
    message = fields(clock, MsgType="text", Content="hi", MsgId=77)
    if tamper == "forged_signature":
        forged = CallbackSigner("not-the-token", signer.aes_key, APP_ID, now=signer.now)
        query, body = forged.oa_callback(message)
    elif tamper == "wrong_app_id":
        query, body = signer.oa_callback(message, receiver_id="wxSOMEONEELSE000")
    elif tamper == "stale_timestamp":
        stale = CallbackSigner(
            signer.token, signer.aes_key, APP_ID, now=lambda: signer.now() - 3600
        )
        query, body = stale.oa_callback(message)
    else:
        query, body = signer.oa_callback(message, aes=False)
    response = await post(siyu, query, body)
    assert response.status_code == 403, response.text
    assert count(sqlite_db, select(func.count()).select_from(Interaction)) == 0


BOMB = (
    b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
    + b"".join(
        f'<!ENTITY lol{i} "{("&lol" + str(i - 1 if i > 1 else "") + ";") * 10}">'.encode()
        for i in range(1, 10)
    )
    + b"]><xml><Content>&lol9;</Content></xml>"
)
XXE = (
    b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
    b"<xml><Content>&xxe;</Content></xml>"
)


@pytest.mark.parametrize(
    "payload", [BOMB, XXE, b"<xml><unclosed>"], ids=["bomb", "xxe", "malformed"]
)
async def test_hostile_xml_is_400_fast_with_memory_flat(siyu, signer, sqlite_db, payload):
    ts, nonce = signer.stamp()
    from tests.fakes.wechat import signature

    query = f"signature={signature(signer.token, ts, nonce)}&timestamp={ts}&nonce={nonce}"
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # CPU time of this process (the server runs in it): what an entity expansion would
    # spend, and unlike the wall clock not stretched by other processes on a busy machine.
    started = time.process_time()
    response = await post(siyu, query, payload)
    cpu = time.process_time() - started
    grown_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert response.status_code == 400
    assert cpu < 1.0
    assert grown_kb < 20_000
    assert count(sqlite_db, select(func.count()).select_from(Interaction)) == 0


async def test_oversized_body_is_413(siyu, signer, clock):
    query, _ = signer.oa_callback(fields(clock, MsgType="text", Content="x", MsgId=1))
    response = await post(siyu, query, b"<xml>" + b"x" * 70_000 + b"</xml>")
    assert response.status_code == 413
