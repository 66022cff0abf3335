"""The Groups page's forms in headless Chromium: a manager creates an SOP plan and an FAQ
entry by filling the forms and sees them listed; a bad schedule comes back with the
parser's error under the "when" field; a group's moderation rules are edited, a refused
number shown under its field; the page with the forms open fits 1440 and 375 px
(screenshots in tests/artifacts/console/)."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from bot.groups import faq, moderation, sop
from storage import repos
from storage.models import Group
from tests.browser import chromium_page
from tests.console_support import MANAGER, build_console
from tests.support import LiveServer
from tests.test_console_browser import ARTIFACTS, WIDTHS, log_in, no_horizontal_scroll

pytestmark = pytest.mark.browser


@pytest.fixture
def served(config, sqlite_db):
    with sqlite_db.transaction() as s:
        repos.ensure_group(s, "telegram", "-100", "会员群")
    app = build_console(config, sqlite_db)
    with LiveServer(app) as server:
        yield server, sqlite_db


def shoot(page, name: str) -> list[str]:
    """Screenshots of the whole page at each width (``groups-<name>-<width>.png``); the
    widths at which it scrolls sideways."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    wide = []
    for width in WIDTHS:
        page.set_viewport_size({"width": width, "height": 900})
        page.wait_for_timeout(200)
        page.screenshot(path=str(ARTIFACTS / f"groups-{name}-{width}.png"), full_page=True)
        if not no_horizontal_scroll(page):
            wide.append(f"{name}@{width}")
    return wide


def test_create_a_plan_and_an_faq_entry_in_the_browser(served):
    server, db = served
    with chromium_page() as page:
        log_in(page, server.url, MANAGER)
        page.set_viewport_size({"width": 1440, "height": 900})
        page.goto(server.url + "/console/groups")
        # A schedule the parser refuses: the form comes back with it, the error under "when".
        page.click("#plan-box summary")
        page.fill("#plan-name", "evening")
        page.fill("#plan-when", "someday 20:00")
        page.fill("#plan-to", "all")
        page.fill("#plan-text", "{{ group }} 晚上好")
        page.click("#save-plan")
        page.wait_for_load_state("networkidle")
        error = page.locator("[data-error-for='when']")
        assert error.is_visible() and "someday" in error.inner_text()
        assert page.locator("#plan-when").input_value() == "someday 20:00"
        wide = shoot(page, "plan-error")
        # Corrected, the plan is created and listed.
        page.fill("#plan-when", "weekdays 20:00")
        page.click("#save-plan")
        page.locator("#flash").wait_for()
        row = page.locator("tr[data-plan='evening']")
        assert row.get_attribute("data-status") == "active"
        assert "weekdays 20:00" in row.inner_text()
        # An FAQ entry, added the same way.
        page.click("#faq-box summary")
        page.fill("#faq-question", "怎么开发票")
        page.fill("#faq-keywords", "发票,开票")
        page.fill("#faq-answer_zh", "在订单页申请")
        page.fill("#faq-answer_en", "Ask on the order page")
        page.select_option("#faq-groups", "always")
        page.click("#save-faq")
        page.locator("#flash").wait_for()
        entry = page.locator("#faq tr[data-entry]")
        assert entry.count() == 1 and "怎么开发票" in entry.inner_text()
        # Both forms open for editing, at both widths.
        page.click("tr[data-plan='evening'] a[data-action='edit']")
        page.wait_for_load_state("networkidle")
        assert page.locator("#plan-name").input_value() == "evening"
        for width in WIDTHS:
            page.set_viewport_size({"width": width, "height": 900})
            page.click("#faq-box summary")
            page.wait_for_timeout(200)
            page.screenshot(path=str(ARTIFACTS / f"groups-forms-{width}.png"), full_page=True)
            if not no_horizontal_scroll(page):
                wide.append(f"forms@{width}")
            page.click("#faq-box summary")
        assert wide == []
    with db.sessions() as s:
        assert [p.name for p in sop.list_plans(s)] == ["evening"]
        assert [e.question for e in faq.list_entries(s)] == ["怎么开发票"]


def test_edit_a_groups_moderation_rules_in_the_browser(served):
    server, db = served
    with chromium_page() as page:
        log_in(page, server.url, MANAGER)
        page.set_viewport_size({"width": 1440, "height": 900})
        page.goto(server.url + "/console/groups")
        page.click("#group-rules a[data-action='edit-rules']")
        page.wait_for_load_state("networkidle")
        assert page.locator("#mod-warn_limit").input_value() == "3"  # the defaults
        # A flood limit of one message is refused, under its field, with the form as typed.
        page.fill("#mod-flood_count", "1")
        page.fill("#mod-banned_words", "代购\n刷单")
        page.click("#save-rules")
        page.wait_for_load_state("networkidle")
        error = page.locator("[data-error-for='flood_count']")
        assert error.is_visible() and "2" in error.inner_text() and "100" in error.inner_text()
        assert page.locator("#mod-banned_words").input_value() == "代购\n刷单"
        wide = shoot(page, "rules-error")
        # Corrected, the rules are saved and shown in the group's row.
        page.fill("#mod-flood_count", "5")
        page.fill("#mod-flood_seconds", "10")
        page.click("#save-rules")
        page.locator("#flash").wait_for()
        row = page.locator("#group-rules tr[data-group-id]")
        assert "代购、刷单" in row.locator("[data-rule='words']").inner_text()
        assert "5" in row.locator("[data-rule='flood']").inner_text()
        for width in WIDTHS:
            page.set_viewport_size({"width": width, "height": 900})
            page.wait_for_timeout(200)
            page.locator("#rules").screenshot(path=str(ARTIFACTS / f"groups-rules-{width}.png"))
            if not no_horizontal_scroll(page):
                wide.append(f"rules@{width}")
        assert wide == []
    with db.sessions() as s:
        group = s.scalars(select(Group)).one()
        rules = moderation.settings_of(s, group.id)
        assert (rules.flood_count, rules.banned_words) == (5, ("代购", "刷单"))
