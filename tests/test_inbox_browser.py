"""Staff takeover end to end in headless Chromium: keyword → flagged → claim → reply →
bot silent → release → the bot resumes the flow at its breakpoint."""

from __future__ import annotations

import time
from dataclasses import replace

import httpx
import pytest

from bot.app.assembly import build
from bot.conversations.staff import create_staff
from bot.core.clock import SystemClock
from tests.browser import chromium_page
from tests.support import LiveServer

pytestmark = pytest.mark.browser


def bot_texts(base: str, chat: str) -> list[str]:
    messages = httpx.get(f"{base}/sandbox/api/chats/{chat}/messages").json()["messages"]
    return [m["text"] for m in messages if m["direction"] == "out"]


def test_handoff_end_to_end_in_the_browser(config, sqlite_db):
    config = config.replace(database=replace(config.database, url=sqlite_db.url))
    with sqlite_db.transaction() as s:
        create_staff(s, "alice", "s3cret-pass", role="staff", now=SystemClock().now())
    app = build(config, db=sqlite_db, clock=SystemClock())
    with LiveServer(app) as server, chromium_page() as customer:
        # The customer starts the weekend-trip flow in the sandbox and answers step 1.
        customer.goto(server.url + "/")
        customer.locator("#personas li[data-user='u1']").click()
        customer.fill("#composer", "周末去哪玩")
        customer.click("#send")
        customer.locator("#transcript .msg.bot .buttons button", has_text="千岛湖").click()
        customer.locator("#transcript .msg.bot", has_text="打算哪天出发").wait_for()

        # Staff log in and watch the (empty) queue.
        staff = customer.context.new_page()
        staff.set_default_timeout(15000)
        staff.goto(server.url + "/inbox")
        assert staff.url.endswith("/inbox/login")
        staff.fill("#username", "alice")
        staff.fill("#password", "s3cret-pass")
        staff.click("#login")
        staff.locator("#empty").wait_for()

        # A complaint keyword flags the conversation; the queue updates live (SSE).
        customer.fill("#composer", "我要投诉，酒店太差了")
        customer.click("#send")
        customer.locator("#transcript .msg.bot", has_text="已为您转接人工客服").wait_for()
        staff.locator("#queue tr[data-ticket]", has_text="酒店太差了").wait_for()

        # Claim, reply; the customer sees the staff answer in the sandbox.
        staff.locator("#queue a.open-ticket").first.click()
        staff.click("#claim")
        staff.locator("#flash", has_text="已接待").wait_for()
        assert "出行日期" in staff.locator("#breakpoint li.current").inner_text()
        staff.fill("#reply-text", "您好，我是客服Alice，马上为您处理")
        staff.click("#send-reply")
        customer.locator("#transcript .msg.bot", has_text="马上为您处理").wait_for()

        # The customer answers; staff see it live; the bot says nothing meanwhile.
        before = len(bot_texts(server.url, "u1"))
        customer.fill("#composer", "好的，谢谢")
        customer.click("#send")
        staff.locator("#history .msg.customer", has_text="好的，谢谢").wait_for()
        time.sleep(1.5)
        assert len(bot_texts(server.url, "u1")) == before

        # Release: the bot resumes the flow at the breakpoint, and the flow goes on.
        staff.click("#release")
        staff.locator("#flash", has_text="已交还机器人").wait_for()
        customer.locator(
            "#transcript .msg.bot", has_text="上次您选了千岛湖，还差出行日期～"
        ).wait_for()
        customer.fill("#composer", "本周六")
        customer.click("#send")
        customer.locator("#transcript .msg.bot", has_text="几位一起出行").wait_for()
        staff.close()
