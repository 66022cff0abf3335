"""Secrets never in log lines nor in stored errors.

Known secret values are configured, real failures are provoked against local fake
platforms (Telegram 500/401, a WeChat token endpoint answering 500, a WeCom API that is not
there), and then the captured log text and every column of every table are searched for the
secret values. A ``siyu run`` subprocess shows that the CLI's own log set-up masks the
Telegram token in httpx's request lines.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from sqlalchemy import inspect, text

from bot.adapters.wechat.common import open_window
from bot.app.assembly import build
from bot.app.logs import install_redaction
from bot.core.events import ConversationRef
from bot.core.redaction import RedactingFilter, redact, register_secrets
from bot.outbox import queue as outbox
from storage.db import Database
from tests.support import free_port
from tests.telegram_fake_api import TOKEN, TelegramHarness, message, private_chat, user

ROOT = Path(__file__).resolve().parent.parent
APP_SECRET = "wxAppSecret-7f3a9c0d1e2b4a6f"
WECOM_SECRET = "wecomCorpSecret-99aa77bb55cc"
API_KEY = "api-key-d41d8cd98f00b204"
SESSION_KEY = "inbox-session-key-0b1c2d3e"
WEBHOOK_SECRET = "s3cret-token"  # what TelegramHarness configures
SECRETS = (TOKEN, APP_SECRET, WECOM_SECRET, API_KEY, SESSION_KEY, WEBHOOK_SECRET)


class _Failing(BaseHTTPRequestHandler):
    """An API server that answers every request with HTTP 500."""

    def _fail(self) -> None:
        self.send_response(500)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST = _fail

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def failing_api():
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _Failing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/cgi-bin/"
    server.shutdown()
    server.server_close()


def every_stored_text(db: Database) -> str:
    """Every value of every column of every table, as one text."""
    parts = []
    with db.engine.connect() as conn:
        for table in inspect(conn).get_table_names():
            for row in conn.execute(text(f'SELECT * FROM "{table}"')):
                parts.extend(str(v) for v in row)
    return "\n".join(parts)


def with_secrets(config):
    return config.replace(
        api=replace(config.api, key=API_KEY),
        handoff=replace(config.handoff, secret_key=SESSION_KEY),
    )


async def test_no_secret_in_logs_or_rows_after_platform_failures(
    config, sqlite_db, clock, failing_api, caplog
):
    caplog.set_level(logging.DEBUG)
    config = with_secrets(config)
    # Telegram: a send answered 500, then 401 (the token was revoked).
    install_redaction(  # as `siyu run` does: logging is set up before anything runs
        config.replace(
            telegram=replace(config.telegram, token=TOKEN, webhook_secret=WEBHOOK_SECRET)
        )
    )
    harness = TelegramHarness(config, sqlite_db, clock)
    async with harness as tg:
        tg.api.fail_next("sendMessage", 500, "Internal Server Error")
        tg.api.fail_next("sendMessage", 500, "Internal Server Error", after=0)
        await tg.push(message(private_chat(42), user(42, "小林"), "/start"))
        await tg.deliver()
        clock.advance(120)
        tg.api.fail_next("sendMessage", 401, "Unauthorized")
        await tg.deliver()

    # WeChat OA: the access-token endpoint answers 500 (its URL carries secret=AppSecret);
    # WeCom: the API host is not there at all (the error names the URL with corpsecret=).
    cfg = config.replace(
        database=replace(config.database, url=sqlite_db.url),
        sandbox=replace(config.sandbox, enabled=False),
        wechat=replace(
            config.wechat,
            app_id="wx0123456789abcdef",
            app_secret=APP_SECRET,
            token="callback-token",
            api_base_url=failing_api,
        ),
        wecom=replace(
            config.wecom,
            corp_id="ww0123456789",
            secret=WECOM_SECRET,
            agent_id=1000002,
            token="wecom-callback-token",
            api_base_url=f"http://127.0.0.1:{free_port()}/cgi-bin/",
            mass_poll_interval_seconds=3600,
            tag_sync_interval_seconds=3600,
        ),
    )
    app = build(cfg, db=sqlite_db, clock=clock)
    install_redaction(cfg)
    openid = "oSECRETTEST0000000000000001"
    with sqlite_db.transaction() as session:
        now = clock.now()
        open_window(session, "wechat", openid, by="message", at=now, now=now)
        outbox.enqueue(
            session,
            key="secret-test:wechat",
            to=ConversationRef("wechat", openid, openid),
            text="优惠",
            now=now,
        )
        outbox.enqueue(
            session,
            key="secret-test:wecom",
            to=ConversationRef("wecom", "app:zhangsan", "zhangsan"),
            text="通知",
            now=now,
        )
    for _ in range(3):
        await app.runtime.worker.drain_once()
        clock.advance(600)

    stored = every_stored_text(sqlite_db)
    logged = caplog.text
    # The failures really happened and were recorded and logged …
    assert "HTTP Request" in logged and "/bot***/" in logged
    assert "transient failure" in logged
    with sqlite_db.sessions() as session:
        errors = session.execute(
            text("SELECT idempotency_key, last_error FROM outbox WHERE last_error <> ''")
        ).all()
    keys = {k for k, _ in errors}
    assert {"secret-test:wechat", "secret-test:wecom"} <= keys, errors
    assert any("secret=***" in e or "***" in e for _, e in errors), errors
    # … and no secret value is anywhere.
    for secret in SECRETS:
        assert secret not in logged, f"{secret!r} in the logs"
        assert secret not in stored, f"{secret!r} in the database"


def test_redact_masks_token_like_url_parts_whatever_their_value():
    assert redact("GET https://api.telegram.org/bot987654:AAH-xyz_123/getMe") == (
        "GET https://api.telegram.org/bot***/getMe"
    )
    assert redact("url: /cgi-bin/token?grant_type=client_credential&appid=wx1&secret=abc") == (
        "url: /cgi-bin/token?grant_type=client_credential&appid=wx1&secret=***"
    )
    assert "tok-1" not in redact("/cgi-bin/message/send?access_token=tok-1&debug=1")
    assert redact('{"access_token": "tok-9", "expires_in": 7200}') == (
        '{"access_token": "***", "expires_in": 7200}'
    )
    assert redact("postgresql://siyu:pa55word@db:5432/siyu") == "postgresql://siyu:***@db:5432/siyu"
    register_secrets(["a-configured-secret-value"])
    assert redact("boom: a-configured-secret-value!") == "boom: ***!"


def test_exception_text_in_logs_is_redacted(caplog):
    register_secrets(["exception-secret-123456"])
    caplog.handler.addFilter(RedactingFilter())
    try:
        raise RuntimeError("failed with exception-secret-123456 in it")
    except RuntimeError:
        logging.getLogger("siyu.test").exception("oops %s", "exception-secret-123456")
    assert "exception-secret-123456" not in caplog.text
    assert "failed with *** in it" in caplog.text


async def test_siyu_run_logs_never_show_the_telegram_token(tmp_path):
    from tests.telegram_fake_api import FakeBotAPI

    async with FakeBotAPI() as api:
        cfg = tmp_path / "siyu.toml"
        cfg.write_text(
            f"""
[database]
url = "sqlite:///{tmp_path / "siyu.db"}"
[web]
port = {free_port()}
[sandbox]
enabled = false
[telegram]
token = "{TOKEN}"
base_url = "{api.base_url}"
poll_timeout = 1
[logging]
level = "INFO"
"""
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("SIYU_")}
        proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from bot.app.cli import main; main()",
                "run",
                "--config",
                str(cfg),
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            deadline = time.monotonic() + 60  # a fresh database is migrated first
            while len(api.called("getUpdates")) < 2 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        finally:
            proc.send_signal(signal.SIGTERM)
            out, _ = await asyncio.to_thread(proc.communicate, timeout=20)
    assert len(api.called("getUpdates")) >= 2, out
    assert "HTTP Request" in out and "/bot***/getUpdates" in out, out
    assert TOKEN not in out
