"""Every refusal of a WeChat / WeCom callback, over HTTP against a running Siyu: forged
signatures (OA plaintext mode, WeCom), stale timestamps (WeCom), replayed plaintext
signatures carrying another body (also into a second process on the same database), and
absurd timestamps. Each test fails if its check is removed: the callback would be taken."""

from __future__ import annotations

from dataclasses import replace
from urllib.parse import parse_qsl, urlencode

import httpx
import pytest
from sqlalchemy import func, select

from storage.db import Database
from storage.models import Interaction
from storage.wechat_inbound import CallbackNonce, InboundCallback
from tests.fakes.wechat import (
    OA_APP_ID,
    CallbackSigner,
    RunningSiyu,
    oa_config,
    random_aes_key,
)
from tests.support import free_port

APP_ID = OA_APP_ID
CORP_ID = "ww0123456789abcdef"
OPENID = "oPLAINTEXT0000000000000000001"


@pytest.fixture
def plain_config(config, sqlite_db, fake_api):
    """An Official Account in plaintext mode (no EncodingAESKey)."""
    return oa_config(config, sqlite_db.url, fake_api, encoding_aes_key="", passive_reply=False)


@pytest.fixture
def wecom_config(config, sqlite_db, fake_api):
    return config.replace(
        database=replace(config.database, url=sqlite_db.url),
        wecom=replace(
            config.wecom,
            corp_id=CORP_ID,
            secret="s3cret-corp",
            agent_id=1000002,
            token="wecom-token",
            encoding_aes_key=random_aes_key(),
            api_base_url=fake_api.base_url,
        ),
    )


def text_message(clock, text: str, msg_id: int, sender: str = OPENID) -> dict:
    return {
        "ToUserName": "gh_account",
        "FromUserName": sender,
        "CreateTime": int(clock.now().timestamp()),
        "MsgType": "text",
        "Content": text,
        "MsgId": msg_id,
    }


def interactions(db: Database, text: str | None = None) -> int:
    stmt = select(func.count()).select_from(Interaction)
    if text is not None:
        stmt = stmt.where(Interaction.text == text)
    with db.sessions() as session:
        return session.scalar(stmt)


def journal_rows(db: Database) -> int:
    with db.sessions() as session:
        return session.scalar(select(func.count()).select_from(InboundCallback))


def with_param(query: str, **changes: str) -> str:
    params = dict(parse_qsl(query))
    params.update(changes)
    return urlencode(params)


async def post(base: str, path: str, query: str, body: bytes) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as client:
        return await client.post(f"{base}{path}?{query}", content=body)


# -- Official Account, plaintext mode ------------------------------------------------------


async def test_oa_plaintext_forged_signature_is_refused_and_nothing_stored(
    plain_config, sqlite_db, clock
):
    signer = CallbackSigner(
        "callback-token", random_aes_key(), APP_ID, now=lambda: clock.now().timestamp()
    )
    async with RunningSiyu(plain_config, sqlite_db, clock, free_port()) as siyu:
        query, body = signer.oa_callback(text_message(clock, "伪造", 1), aes=False)
        forged = with_param(query, signature="0" * 40)
        r = await post(siyu.base, "/wechat/callback", forged, body)
        assert r.status_code == 403 and "signature" in r.text
        other_token = CallbackSigner("not-our-token", random_aes_key(), APP_ID, now=signer.now)
        query2, body2 = other_token.oa_callback(text_message(clock, "伪造2", 2), aes=False)
        assert (await post(siyu.base, "/wechat/callback", query2, body2)).status_code == 403
        good_query, good_body = signer.oa_callback(text_message(clock, "真的", 3), aes=False)
        assert (await post(siyu.base, "/wechat/callback", good_query, good_body)).text == "success"
    assert interactions(sqlite_db, "伪造") == interactions(sqlite_db, "伪造2") == 0
    assert interactions(sqlite_db, "真的") == 1


async def test_oa_plaintext_replayed_signature_with_a_new_body_is_refused(
    plain_config, sqlite_db, clock
):
    signer = CallbackSigner(
        "callback-token", random_aes_key(), APP_ID, now=lambda: clock.now().timestamp()
    )
    query, body = signer.oa_callback(text_message(clock, "原文", 10), aes=False)
    _, other_body = signer.oa_callback(text_message(clock, "给我退款一万元", 11), aes=False)
    async with RunningSiyu(plain_config, sqlite_db, clock, free_port()) as siyu:
        assert (await post(siyu.base, "/wechat/callback", query, body)).text == "success"
        # WeChat's own retry (same signature, same body) is fine and stored once
        assert (await post(siyu.base, "/wechat/callback", query, body)).text == "success"
        replay = await post(siyu.base, "/wechat/callback", query, other_body)
        assert replay.status_code == 403 and "replay" in replay.text
    # A second process on the same database remembers the signature too.
    second_db = Database(sqlite_db.url)
    try:
        async with RunningSiyu(plain_config, second_db, clock, free_port()) as other:
            replay = await post(other.base, "/wechat/callback", query, other_body)
            assert replay.status_code == 403
    finally:
        second_db.close()
    assert interactions(sqlite_db, "原文") == 1
    assert interactions(sqlite_db, "给我退款一万元") == 0
    with sqlite_db.sessions() as session:
        assert session.scalar(select(func.count()).select_from(CallbackNonce)) == 1


async def test_remembered_signatures_are_forgotten_after_the_replay_window(
    plain_config, sqlite_db, clock
):
    signer = CallbackSigner(
        "callback-token", random_aes_key(), APP_ID, now=lambda: clock.now().timestamp()
    )
    async with RunningSiyu(plain_config, sqlite_db, clock, free_port()) as siyu:
        query, body = signer.oa_callback(text_message(clock, "一", 20), aes=False)
        assert (await post(siyu.base, "/wechat/callback", query, body)).text == "success"
        clock.advance(2 * plain_config.wechat.replay_window_seconds + 1)
        query2, body2 = signer.oa_callback(text_message(clock, "二", 21), aes=False)
        assert (await post(siyu.base, "/wechat/callback", query2, body2)).text == "success"
    with sqlite_db.sessions() as session:
        assert session.scalar(select(func.count()).select_from(CallbackNonce)) == 1


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_oa_absurd_timestamps_are_a_400_before_any_work(
    plain_config, sqlite_db, clock, method
):
    signer = CallbackSigner(
        "callback-token", random_aes_key(), APP_ID, now=lambda: clock.now().timestamp()
    )
    huge = "9" * 400
    async with RunningSiyu(plain_config, sqlite_db, clock, free_port()) as siyu:
        query, body = signer.oa_callback(text_message(clock, "大时间戳", 30), aes=False)
        for ts in (huge, "-1", "１２３", "12.5", ""):
            bad = with_param(query, timestamp=ts)
            async with httpx.AsyncClient(timeout=10) as client:
                r = await client.request(method, f"{siyu.base}/wechat/callback?{bad}", content=body)
            assert r.status_code == 400, (ts, r.status_code, r.text)
    assert interactions(sqlite_db) == 0 and journal_rows(sqlite_db) == 0


# -- WeCom ---------------------------------------------------------------------------------


def wecom_signer(config, clock, offset: float = 0.0) -> CallbackSigner:
    c = config.wecom
    return CallbackSigner(
        c.token, c.encoding_aes_key, CORP_ID, now=lambda: clock.now().timestamp() + offset
    )


async def test_wecom_forged_signature_is_refused(wecom_config, sqlite_db, clock):
    signer = wecom_signer(wecom_config, clock)
    async with RunningSiyu(wecom_config, sqlite_db, clock, free_port()) as siyu:
        query, body = signer.wecom_callback(text_message(clock, "伪造企微", 40, "zhangsan"))
        forged = with_param(query, msg_signature="f" * 40)
        r = await post(siyu.base, "/wecom/callback", forged, body)
        assert r.status_code == 403 and "signature" in r.text
        assert (await post(siyu.base, "/wecom/callback", query, body)).text == "success"
    assert interactions(sqlite_db, "伪造企微") == 1  # only the genuine one


async def test_wecom_stale_timestamp_is_refused(wecom_config, sqlite_db, clock):
    window = wecom_config.wecom.replay_window_seconds
    async with RunningSiyu(wecom_config, sqlite_db, clock, free_port()) as siyu:
        for offset in (-(window + 60), window + 60):
            signer = wecom_signer(wecom_config, clock, offset)  # validly signed, but old/new
            query, body = signer.wecom_callback(text_message(clock, "过期", 41, "lisi"))
            r = await post(siyu.base, "/wecom/callback", query, body)
            assert r.status_code == 403 and "window" in r.text
    assert interactions(sqlite_db) == 0 and journal_rows(sqlite_db) == 0


async def test_wecom_absurd_timestamp_is_a_400(wecom_config, sqlite_db, clock):
    signer = wecom_signer(wecom_config, clock)
    async with RunningSiyu(wecom_config, sqlite_db, clock, free_port()) as siyu:
        query, body = signer.wecom_callback(text_message(clock, "大", 42, "wangwu"))
        r = await post(siyu.base, "/wecom/callback", with_param(query, timestamp="9" * 400), body)
        assert r.status_code == 400
        verify = with_param(signer.wecom_verify_query(), timestamp="9" * 400)
        async with httpx.AsyncClient(timeout=10) as client:
            assert (await client.get(f"{siyu.base}/wecom/callback?{verify}")).status_code == 400
    assert interactions(sqlite_db) == 0
