"""The sandbox is safe to expose: off next to real channels, guarded, no internal errors,
and its offers are demo codes that no shop redeems for a real order."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from starlette.testclient import TestClient

from bot.app.assembly import build
from bot.app.config import ConfigError
from bot.core.filters import Filter
from bot.core.routing import Handler
from bot.web import sandbox_api
from tests.support import LiveServer, SandboxHarness
from tests.test_coupons_everywhere import at_offer

ROOT = Path(__file__).resolve().parent.parent
SIYU = [sys.executable, "-m", "bot.app.cli"]
API_KEY = "shop-api-key-0123456789"


def with_telegram(config, **web):
    return config.replace(
        telegram=replace(
            config.telegram,
            token="123456:TEST-token-for-exposure-checks-abcdefgh",
            mode="webhook",
            webhook_secret="hook-secret",
            base_url="http://127.0.0.1:9/bot{token}",
        ),
        web=replace(config.web, **web),
        api=replace(config.api, key=API_KEY),
    )


# -- on or off ------------------------------------------------------------------------------


def test_a_real_channel_turns_the_default_sandbox_off(config, sqlite_db, clock):
    app = build(with_telegram(config), db=sqlite_db, clock=clock)
    assert app.sandbox is None and "sandbox" not in app.runtime.adapters
    client = TestClient(app.asgi)
    assert client.get("/").status_code == 404
    r = client.post("/sandbox/api/messages", json={"user_id": "manager", "text": "/start"})
    assert r.status_code == 404


def test_without_real_channels_the_sandbox_is_on(config, sqlite_db, clock):
    assert build(config, db=sqlite_db, clock=clock).sandbox is not None


def test_explicitly_enabled_next_to_a_real_channel_it_runs_on_loopback_only(
    config, sqlite_db, clock
):
    on = with_telegram(config).replace(sandbox=replace(config.sandbox, enabled=True))
    assert build(on, db=sqlite_db, clock=clock).sandbox is not None
    exposed = with_telegram(config, host="0.0.0.0").replace(
        sandbox=replace(config.sandbox, enabled=True)
    )
    with pytest.raises(ConfigError, match="loopback"):
        build(exposed, db=sqlite_db, clock=clock)


def test_siyu_run_refuses_an_exposed_sandbox_with_exit_2_and_one_line(tmp_path):
    cfg = tmp_path / "siyu.toml"
    cfg.write_text(
        f'[database]\nurl = "sqlite:///{tmp_path / "siyu.db"}"\n'
        '[web]\nhost = "0.0.0.0"\n[sandbox]\nenabled = true\n'
        '[telegram]\ntoken = "123456:TEST-token-for-exposure-checks-abcdefgh"\n',
        encoding="utf-8",
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for command in ("run", "check-config"):
        done = subprocess.run(
            [*SIYU, "--config", str(cfg), command],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        assert done.returncode == 2, (command, done.stdout, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "sandbox.enabled" in lines[0] and "loopback" in lines[0]
        assert "TEST-token" not in done.stderr


async def test_no_manager_by_default_so_the_manager_persona_is_a_customer(config, sqlite_db, clock):
    bare = config.replace(roles=replace(config.roles, managers=[]))
    h = SandboxHarness(bare, sqlite_db, clock)
    with LiveServer(h.app) as server, httpx.Client(base_url=server.url) as client:
        assert client.get("/sandbox/api/profile/manager").status_code == 404
        r = client.post("/sandbox/api/messages", json={"user_id": "manager", "text": "/start"})
        assert r.status_code == 202
        assert client.get("/sandbox/api/profile/manager").json()["role"] == "customer"


# -- the guarded API ------------------------------------------------------------------------


@pytest.fixture
def live(config, sqlite_db, clock):
    h = SandboxHarness(config, sqlite_db, clock)
    with LiveServer(h.app) as server:
        yield h, server


def inbound(h) -> list[str]:
    with h.db.sessions() as s:
        from sqlalchemy import select

        from storage.models import SandboxMessage

        return list(s.scalars(select(SandboxMessage.text).where(SandboxMessage.direction == "in")))


def test_only_application_json_is_taken(live):
    h, server = live
    r = httpx.post(
        f"{server.url}/sandbox/api/messages",
        content=b'{"user_id": "u1", "text": "hi"}',
        headers={"Content-Type": "text/plain"},
    )
    assert r.status_code == 415 and r.json()["code"] == "json_only"
    assert inbound(h) == []
    ok = httpx.post(f"{server.url}/sandbox/api/messages", json={"user_id": "u1", "text": "hi"})
    assert ok.status_code == 202 and inbound(h) == ["hi"]


def test_cross_site_and_rebinding_requests_are_refused(live):
    h, server = live
    url = f"{server.url}/sandbox/api/messages"
    body = {"user_id": "u1", "text": "hi"}
    foreign = httpx.post(url, json=body, headers={"Origin": "http://evil.example"})
    assert foreign.status_code == 403 and foreign.json()["code"] == "sandbox_origin"
    fetch = httpx.post(url, json=body, headers={"Sec-Fetch-Site": "cross-site"})
    assert fetch.status_code == 403
    # DNS rebinding: evil.example resolves to 127.0.0.1, the browser sends its own Host.
    port = server.port
    rebound = httpx.post(url, json=body, headers={"Host": f"evil.example:{port}"})
    assert rebound.status_code == 403 and rebound.json()["code"] == "sandbox_host"
    page = httpx.get(f"{server.url}/", headers={"Host": f"evil.example:{port}"})
    assert page.status_code == 403
    stream = httpx.get(
        f"{server.url}/sandbox/api/chats/u1/messages", headers={"Host": f"evil.example:{port}"}
    )
    assert stream.status_code == 403
    assert inbound(h) == []
    same = httpx.post(url, json=body, headers={"Origin": server.url})
    assert same.status_code == 202 and inbound(h) == ["hi"]


def test_bodies_are_capped_before_they_are_read(live):
    h, server = live
    big = b'{"user_id": "u1", "text": "' + b"x" * (20 * 1024 * 1024) + b'"}'
    r = httpx.post(
        f"{server.url}/sandbox/api/messages",
        content=big,
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 413 and r.json()["code"] == "body_too_large"

    def chunks():  # no Content-Length: counted while it streams in
        yield b'{"user_id": "u1", "text": "'
        for _ in range(64):
            yield b"y" * 1024
        yield b'"}'

    r = httpx.post(
        f"{server.url}/sandbox/api/messages",
        content=chunks(),
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 413
    assert inbound(h) == []


def test_the_limit_is_answered_before_the_body_is_sent(live):
    _, server = live
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(
            f"POST /sandbox/api/messages HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
            "Content-Type: application/json\r\nContent-Length: 20000000\r\n\r\n".encode()
        )
        head = sock.recv(4096)  # answered although not one byte of the body was sent
    assert head.startswith(b"HTTP/1.1 413")


def test_a_failing_handler_is_reported_without_its_text(live):
    h, server = live

    def explode(ctx):
        raise RuntimeError("SELECT token FROM secrets WHERE password = 'hunter2'")

    boom = Filter(lambda ctx: ctx.event.text == "boom", "boom")
    h.runtime.router.add(Handler(name="explodes", callback=explode, filter=boom, group=-1))
    r = httpx.post(f"{server.url}/sandbox/api/messages", json={"user_id": "u1", "text": "boom"})
    assert r.status_code == 202
    body = r.json()
    assert len(body["errors"]) == 1 and body["event_id"] in body["errors"][0]
    assert "SELECT" not in r.text and "hunter2" not in r.text and "RuntimeError" not in r.text


def test_live_streams_are_bounded(live, monkeypatch):
    _, server = live
    monkeypatch.setattr(sandbox_api, "MAX_STREAMS", 2)
    url = f"{server.url}/sandbox/api/stream?chat_id=u1"
    with (
        httpx.Client(timeout=10) as client,
        client.stream("GET", url) as one,
        client.stream("GET", url) as two,
    ):
        readers = [s.iter_lines() for s in (one, two)]  # kept: dropping one closes it
        for stream, lines in zip((one, two), readers, strict=True):
            assert stream.status_code == 200
            assert next(lines) == ": connected"  # its first step ran: it is counted
        third = client.get(url)
        assert third.status_code == 503 and third.headers["Retry-After"]
    statuses = []
    with httpx.Client(timeout=10) as client:
        for _ in range(40):  # the server notices the drops within moments
            with client.stream("GET", url) as again:
                statuses.append(again.status_code)
            if statuses[-1] == 200:
                break
            time.sleep(0.05)
    assert statuses[-1] == 200  # the dropped ones were released


# -- demo codes -----------------------------------------------------------------------------


async def test_sandbox_offers_are_demo_codes_no_shop_redeems(config, sqlite_db, clock):
    cfg = with_telegram(config).replace(sandbox=replace(config.sandbox, enabled=True))
    h = SandboxHarness(cfg, sqlite_db, clock)
    code = await at_offer(h)
    assert code.startswith("DEMO-WKND-")
    shop = TestClient(h.app.asgi)  # the shop's till: the coupon API with the key
    r = shop.post(
        "/api/coupons/redeem",
        json={"code": code, "amount": "300.00"},
        headers={"Authorization": f"Bearer {API_KEY}"},
    )
    assert r.status_code == 403 and r.json()["reason"] == "demo"
    # The sandbox itself may play the till with its demo code.
    await h.say("manager", f"/redeem {code}")
    await h.deliver()
    assert any(code in m for m in await h.bot_messages("manager"))
    again = shop.post("/api/coupons/redeem", json={"code": code}, headers={"X-API-Key": API_KEY})
    assert again.json()["reason"] == "demo"
