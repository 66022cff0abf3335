"""Odd input gets a clear 400 (or 413), never a 500: huge numbers, lone surrogates, NUL
characters (PostgreSQL refuses them in text), deep JSON, bodies over the limit."""

from __future__ import annotations

import socket
from dataclasses import replace

import httpx
import pytest
from starlette.testclient import TestClient

from tests.support import LiveServer, SandboxHarness
from tests.test_inbox_web import add_staff, flagged, login

API_KEY = "odd-input-key-0123456789"
HUGE = "1" + "0" * 30


@pytest.fixture
def live(config, db, clock):
    harness = SandboxHarness(config.replace(api=replace(config.api, key=API_KEY)), db, clock)
    with LiveServer(harness.app) as server:
        yield harness, server


def test_huge_numbers_in_queries_are_400(live):
    _, server = live
    with httpx.Client(base_url=server.url, timeout=10) as client:
        for path in (
            f"/sandbox/api/chats/u1/messages?after={HUGE}",
            f"/sandbox/api/stream?chat_id=u1&after={HUGE}",
            "/sandbox/api/chats/u1/messages?after=10^30",
            "/sandbox/api/chats/u1/messages?after=-1",
        ):
            r = client.get(path)
            assert r.status_code == 400, (path, r.text)
            assert r.json()["code"] == "bad_integer" and "after" in r.json()["error"]


def test_lone_surrogates_and_nul_in_json_are_400(live):
    _, server = live
    with httpx.Client(base_url=server.url, timeout=10) as client:
        for raw, code in (
            (b'{"user_id": "u1", "text": "\\ud800 hi"}', "text_surrogate"),
            (b'{"user_id": "u\\u0000", "text": "hi"}', "text_nul"),
            (b'{"user_id": "u1", "text": "hi", "\\udfff": 1}', "text_surrogate"),
        ):
            r = client.post(
                "/sandbox/api/messages",
                content=raw,
                headers={"Content-Type": "application/json", "Accept-Language": "en"},
            )
            assert r.status_code == 400 and r.json()["code"] == code, r.text
            assert "stored" in r.json()["error"] or "Unicode" in r.json()["error"]
        for raw in (
            b'{"customer": "sandbox:\\u0000x", "name": "x"}',
            b'{"customer": "sandbox:x", "name": "\\ud83d"}',
        ):
            r = client.post("/api/customers", content=raw, headers={"X-API-Key": API_KEY})
            assert r.status_code == 400, r.text


def test_nul_in_paths_and_queries_is_400(live):
    _, server = live
    with httpx.Client(base_url=server.url, timeout=10) as client:
        for path in (
            "/api/customers/sandbox/u%001",
            "/sandbox/api/chats/u%00/messages",
            "/sandbox/api/stream?chat_id=u%00",
            "/r/abc%00def",
        ):
            r = client.get(path, headers={"X-API-Key": API_KEY})
            assert r.status_code == 400, (path, r.status_code, r.text)
            assert r.json()["code"] == "url_nul"


def test_deep_json_and_impossible_numbers_are_400(live):
    _, server = live
    auth = {"X-API-Key": API_KEY, "Content-Type": "application/json"}
    with httpx.Client(base_url=server.url, timeout=10) as client:
        for raw, code in (
            (b"[" * 100_000 + b"]" * 100_000, "json_too_deep"),
            (b'{"orders": ' + b"[" * 40 + b"]" * 40 + b"}", "json_too_deep"),
            (b'{"order_id": "A1", "amount": 1e999999}', "bad_number"),
            (b'{"order_id": "A1", "amount": ' + b"9" * 5000 + b"}", "bad_number"),
            (b'{"order_id": "A1", "amount": NaN}', "bad_number"),
            (b"\xff\xfe{}", "not_utf8"),
        ):
            r = client.post("/api/orders", content=raw, headers=auth)
            assert r.status_code == 400, (code, r.status_code, r.text[:200])
            assert r.json()["code"] == code


def test_api_bodies_over_the_limit_are_refused_before_reading(live):
    _, server = live
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(
            f"POST /api/orders HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: {API_KEY}\r\n"
            "Content-Type: application/json\r\nContent-Length: 50000000\r\n\r\n".encode()
        )
        assert sock.recv(4096).startswith(b"HTTP/1.1 413")
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(  # the inbox login form too: every endpoint is bounded
            b"POST /inbox/login HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\n"
            b"Content-Length: 50000000\r\n\r\n"
        )
        assert sock.recv(4096).startswith(b"HTTP/1.1 413")


async def test_inbox_ids_and_forms_with_odd_input_are_400(config, db, clock):
    h = SandboxHarness(config, db, clock)
    add_staff(h.db, clock, "alice")
    ticket = await flagged(h)
    alice, token = login(h, "alice")
    assert alice.get(f"/inbox/c/{HUGE}").status_code == 400
    assert alice.get(f"/inbox/partials/c/{HUGE}").status_code == 400
    r = alice.post(f"/inbox/c/{ticket}/note", data={"csrf": token, "text": "note\x00here"})
    assert r.status_code == 400
    r = alice.post("/inbox/redeem", data={"csrf": token, "code": "ABCD", "ticket": HUGE})
    assert r.status_code == 303  # treated as no conversation, not a 500
    assert TestClient(h.app.asgi).get("/healthz").status_code == 200


async def test_the_telegram_webhook_refuses_deep_json_with_400(config, sqlite_db, clock):
    from tests.telegram_fake_api import TelegramHarness

    async with TelegramHarness(config, sqlite_db, clock, mode="webhook") as tg:
        transport = httpx.ASGITransport(app=tg.app.asgi)
        headers = {"X-Telegram-Bot-Api-Secret-Token": "s3cret-token"}
        async with httpx.AsyncClient(transport=transport, base_url="http://siyu") as client:
            deep = b"[" * 50_000 + b"]" * 50_000
            r = await client.post("/telegram/webhook", content=deep, headers=headers)
            assert r.status_code == 400
            huge = b'{"update_id": ' + b"9" * 5000 + b"}"
            r = await client.post("/telegram/webhook", content=huge, headers=headers)
            assert r.status_code == 400


def test_a_400_digit_wechat_timestamp_is_400_before_any_signature_work(config, sqlite_db, clock):
    from bot.app.assembly import build
    from tests.wechat_fakes import random_aes_key

    cfg = config.replace(
        wechat=replace(
            config.wechat, app_id="wx0123456789", app_secret="s", token="t",
            encoding_aes_key=random_aes_key(),
        ),
        wecom=replace(
            config.wecom, corp_id="ww0123456789", secret="s", agent_id=1, token="t",
            encoding_aes_key=random_aes_key(),
        ),
    )  # fmt: skip
    client = TestClient(build(cfg, db=sqlite_db, clock=clock).asgi)
    stamp = "9" * 400
    for path in ("/wechat/callback", "/wecom/callback"):
        query = f"?timestamp={stamp}&nonce=n&signature=x&msg_signature=x&echostr=e"
        for method in ("GET", "POST"):
            r = client.request(method, path + query, content=b"<xml></xml>")
            assert r.status_code == 400, (path, method, r.status_code, r.text[:200])


def test_a_chunked_form_over_the_limit_is_cut_off_with_413(config, sqlite_db, clock):
    h = SandboxHarness(config, sqlite_db, clock)
    client = TestClient(h.app.asgi)

    def endless_form():  # no Content-Length: the app-wide limit counts as it streams
        yield b"username=alice&password="
        for _ in range(3 * 1024):
            yield b"x" * 1024

    r = client.post(
        "/inbox/login",
        content=endless_form(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 413 and r.json()["code"] == "body_too_large"
