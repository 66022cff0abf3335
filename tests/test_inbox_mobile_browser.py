"""The staff inbox in headless Chromium at 375 px (a phone) and 1440 px (a desktop):
no horizontal scrolling, readable Chinese, pressed buttons by their label, the breakpoint
as steps, canned replies previewed and editable, history at the newest message,
destructive actions set apart and resolve confirmed first. Screenshots go to
tests/artifacts/ (git-ignored)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from bot.app.assembly import build
from bot.conversations.staff import create_staff
from bot.core.clock import SystemClock
from tests.browser import chromium_page
from tests.support import LiveServer

pytestmark = pytest.mark.browser

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"


def no_horizontal_scroll(page) -> bool:
    return page.evaluate(
        "document.documentElement.scrollWidth <= document.documentElement.clientWidth"
    )


def test_inbox_at_375_and_1440_px(config, sqlite_db):
    ARTIFACTS.mkdir(exist_ok=True)
    config = config.replace(database=replace(config.database, url=sqlite_db.url))
    with sqlite_db.transaction() as s:
        create_staff(s, "alice", "s3cret-pass", role="staff", now=SystemClock().now(),
                     display_name="王小丽")  # fmt: skip
        create_staff(s, "mia", "s3cret-pass", role="manager", now=SystemClock().now())
    app = build(config, db=sqlite_db, clock=SystemClock())
    with LiveServer(app) as server, chromium_page() as customer:
        # a customer in the trip flow presses a button, gives dates, then complains
        customer.goto(server.url + "/")
        customer.locator("#personas li[data-user='u1']").click()
        customer.fill("#composer", "周末去哪玩")
        customer.click("#send")
        customer.locator("#transcript .msg.bot .buttons button", has_text="千岛湖").click()
        customer.locator("#transcript .msg.bot", has_text="打算哪天出发").wait_for()
        for text in (
            "本周六",
            "我要投诉，上次的酒店房间很脏，而且前台态度也不好，希望有人尽快联系我处理退款问题",
        ):
            customer.fill("#composer", text)
            customer.click("#send")
        customer.locator("#transcript .msg.bot", has_text="已为您转接人工客服").wait_for()
        for i in range(12):  # a long history
            customer.fill(
                "#composer", f"补充说明第{i + 1}条：房间号 1{i:02d}，入住日期 3 月 {i + 1} 日"
            )
            customer.click("#send")

        staff = customer.context.new_page()
        staff.set_default_timeout(15000)
        staff.set_viewport_size({"width": 375, "height": 812})
        staff.goto(server.url + "/inbox/login")
        staff.fill("#username", "alice")
        staff.fill("#password", "s3cret-pass")
        staff.click("#login")
        row = staff.locator("#queue tr[data-ticket]").first
        row.wait_for()
        assert "关键词" in row.inner_text() and "待接待" in row.inner_text()  # reason in words
        assert "keyword" not in staff.locator("#queue").inner_text()
        assert no_horizontal_scroll(staff)
        staff.screenshot(path=str(ARTIFACTS / "inbox-queue-375.png"), full_page=True)

        staff.locator("#queue a.open-ticket").first.click()
        staff.click("#claim")
        staff.locator("#flash", has_text="已接待").wait_for()
        staff.locator("#history .msg.customer", has_text="补充说明第12条").wait_for()
        # history opens at the newest message
        at_bottom = staff.evaluate(
            "(() => { const h = document.getElementById('history');"
            " return h.scrollHeight - h.scrollTop - h.clientHeight < 4; })()"
        )
        assert at_bottom
        # the pressed button by its label, not its data
        assert staff.locator("#history .msg.customer", has_text="点了按钮「千岛湖」").count() == 1
        assert "flow:weekend_trip_inquiry" not in staff.locator("#history").inner_text()
        # the breakpoint as steps and answers
        steps = staff.locator("#breakpoint ol.steps li").all_inner_texts()
        assert steps[0].startswith("目的地：千岛湖")
        assert steps[1].startswith("出行日期：本周六")
        assert "出行人数" in steps[2] and "当前步骤" in steps[2]
        assert "{" not in staff.locator("#breakpoint").inner_text()
        # canned reply: preview in the box, edit, then send
        staff.select_option("#canned", "greeting")
        box = staff.locator("#reply-text")
        assert box.input_value().startswith("您好，")
        box.fill(box.input_value() + "我们马上核实房间的情况。")
        # destructive actions look different from the rest
        send_bg = staff.eval_on_selector("#send-reply", "e => getComputedStyle(e).backgroundColor")
        for danger in ("#release", "#resolve"):
            color = staff.eval_on_selector(danger, "e => getComputedStyle(e).color")
            assert color != send_bg and color == "rgb(185, 28, 28)"
        assert no_horizontal_scroll(staff)
        staff.screenshot(path=str(ARTIFACTS / "inbox-conversation-375.png"), full_page=True)
        staff.click("#send-reply")
        customer.locator("#transcript .msg.bot", has_text="我们马上核实房间的情况").wait_for()

        # resolve asks first, then closes with a rating request
        staff.click("#resolve")
        staff.locator("#resolve-box").wait_for()
        staff.screenshot(path=str(ARTIFACTS / "inbox-resolve-confirm-375.png"), full_page=True)
        staff.click("#resolve-confirm")
        staff.locator("#flash", has_text="已解决").wait_for()
        customer.locator("#transcript .msg.bot", has_text="请为本次服务打分").wait_for()
        customer.locator("#transcript .msg.bot .buttons button", has_text="⭐⭐⭐⭐⭐").last.click()
        customer.locator("#transcript .msg.bot", has_text="感谢您的评分（5 星）").wait_for()

        # the manager's page at 1440 px: readable audit log, ratings per staff member
        manager = customer.context.new_page()
        manager.set_default_timeout(15000)
        manager.set_viewport_size({"width": 1440, "height": 900})
        manager.goto(server.url + "/inbox/login")
        manager.fill("#username", "mia")
        manager.fill("#password", "s3cret-pass")
        manager.click("#login")
        manager.goto(server.url + "/inbox/manager")
        assert "5.0 分（1 次评分）" in manager.locator("li[data-staff='alice']").inner_text()
        audit = manager.locator("#audit").inner_text()
        assert "回复客户" in audit and "我们马上核实房间的情况" in audit
        assert "\\u" not in audit and "客户评分" in audit
        assert no_horizontal_scroll(manager)
        manager.screenshot(path=str(ARTIFACTS / "inbox-manager-1440.png"), full_page=True)
        manager.set_viewport_size({"width": 375, "height": 812})
        assert no_horizontal_scroll(manager)
        manager.screenshot(path=str(ARTIFACTS / "inbox-manager-375.png"), full_page=True)

        # the queue and a conversation at 1440 px, and the same inbox in English
        staff.set_viewport_size({"width": 1440, "height": 900})
        staff.goto(server.url + "/inbox?view=all")
        assert no_horizontal_scroll(staff)
        staff.screenshot(path=str(ARTIFACTS / "inbox-queue-1440.png"), full_page=True)
        staff.click("#language")
        staff.locator("#flash", has_text="Language: English").wait_for()
        assert "Queue" in staff.locator("header").inner_text()
        staff.screenshot(path=str(ARTIFACTS / "inbox-queue-en-1440.png"), full_page=True)
