"""The sandbox page in a real headless Chromium: /start gets the welcome, a keyword tags."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest

from bot.app.assembly import build
from bot.core.clock import SystemClock
from tests.browser import chromium_page
from tests.support import LiveServer

pytestmark = pytest.mark.browser


def test_customer_starts_and_gets_tagged_in_the_browser(config, sqlite_db):
    config = config.replace(database=replace(config.database, url=sqlite_db.url))
    app = build(config, db=sqlite_db, clock=SystemClock())
    with LiveServer(app) as server, chromium_page() as page:
        page.goto(server.url + "/")
        page.locator("#personas li[data-user='u1']").click()
        page.fill("#composer", "/start")
        page.click("#send")
        welcome = page.locator("#transcript .msg.bot").first
        welcome.wait_for()
        assert "欢迎" in welcome.inner_text()

        page.fill("#composer", "周末去哪玩")
        page.click("#send")
        tag = page.locator("#tags li[data-tag='周末出游']")
        tag.wait_for()
        assert re.search(r"rule:keyword", tag.inner_text())

        # An English-speaking persona gets the English welcome.
        page.locator("#personas li[data-user='u2']").click()
        page.fill("#composer", "/start")
        page.click("#send")
        page.locator("#transcript .msg.bot").first.wait_for()
        assert "welcome" in page.locator("#transcript .msg.bot").first.inner_text().lower()
