"""The manager console in headless Chromium: create, preview and launch a campaign in the
browser and watch its funnel chart follow deliveries and a redemption (the chart's own data
read back with ``echarts.getInstanceByDom(...).getOption()`` matches the database); the
segment editor's live count and error position; search by phone opens the profile; a staff
account gets 403; every page at 1440 and 375 px wide without horizontal scrolling
(screenshots in tests/artifacts/console/), the Measures and Groups pages included."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import select

from bot.core.clock import SystemClock
from bot.core.i18n import t
from bot.groups import sop
from bot.marketing.campaigns.funnel import funnel
from bot.marketing.coupons import sync_definitions
from bot.measures import loyalty
from bot.measures.periods import parse_period
from bot.web.console.campaigns import FUNNEL_STEPS
from storage.campaigns import Campaign
from storage.coupons import CouponCode
from storage.models import Customer
from tests.browser import chromium_page
from tests.campaign_support import make_customer
from tests.console_measures_support import seed_groups, seed_measures
from tests.console_support import MANAGER, STAFF, build_console
from tests.support import LiveServer

pytestmark = pytest.mark.browser

ARTIFACTS = Path(__file__).resolve().parent / "artifacts" / "console"
WIDTHS = (1440, 375)
CUSTOMERS = 12


def log_in(page, base: str, who: tuple[str, str]) -> None:
    page.goto(base + "/inbox/login")
    page.fill("#username", who[0])
    page.fill("#password", who[1])
    page.click("#login")
    page.wait_for_url(base + "/inbox*")


def chart_data(page, chart_id: str) -> dict[str, list[int]]:
    """Series name → data, read from the live ECharts instance."""
    return page.evaluate(
        """id => {
            const option = echarts.getInstanceByDom(document.getElementById(id + "-box")).getOption();
            return Object.fromEntries(option.series.map(s => [s.name, s.data]));
        }""",
        chart_id,
    )


def db_funnel(db, campaign_id: int) -> dict[str, list[int]]:
    """The database's funnel, keyed like the chart's series."""
    with db.sessions() as s:
        rows = funnel(s, s.get(Campaign, campaign_id))
    names = {"pilot": "试点组", "holdout": "对照组", "rollout": "全量组"}
    return {
        (
            t("console.camp.total", "zh-CN")
            if r.variant == "*"
            else f"{r.variant} · {names[r.arm]}"
        ): [getattr(r, step) for step in FUNNEL_STEPS]
        for r in rows
    }


def wait_for_chart(page, chart_id: str, predicate, timeout: float = 30.0) -> dict:
    """Poll the chart until ``predicate`` holds (the page reloads itself when the
    campaign's status changes, so a read may meet a page being replaced)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            page.wait_for_load_state("load")
            data = chart_data(page, chart_id)
        except Exception:  # the page is navigating: read again
            data = {}
        if data and predicate(data):
            return data
        if time.monotonic() > deadline:
            raise AssertionError(f"{chart_id} never matched: {data}")
        page.wait_for_timeout(300)


def no_horizontal_scroll(page) -> bool:
    return page.evaluate(
        "document.documentElement.scrollWidth <= window.innerWidth"
        " && document.body.scrollWidth <= window.innerWidth"
    )


@pytest.fixture
def served(config, sqlite_db):
    config = config.replace(
        marketing=replace(config.marketing, quiet_hours="00:00-00:00", max_per_window=0)
    )
    now = SystemClock().now()
    for i in range(CUSTOMERS):
        make_customer(
            sqlite_db, f"c{i}", now, tags=("早餐",), name=f"顾客{i}",
            locale="en" if i % 4 == 0 else "zh-CN",
        )  # fmt: skip
    make_customer(sqlite_db, "other", now, tags=("周末出游",), name="王小明")
    with sqlite_db.transaction() as s:
        s.scalars(
            select(Customer).where(Customer.display_name == "王小明")
        ).one().phone = "13900001234"
        sync_definitions(s, config.coupons, now)
    app = build_console(config, sqlite_db, scheduler=True)
    with LiveServer(app) as server:
        yield server, sqlite_db


def test_campaign_created_previewed_launched_and_its_funnel_follows_the_database(served):
    server, db = served
    with chromium_page() as page:
        page.set_viewport_size({"width": 1440, "height": 900})
        log_in(page, server.url, MANAGER)
        page.goto(server.url + "/console/campaigns")
        page.click("#new-campaign")
        page.fill("#c-name", "breakfast_push")
        page.fill("#c-segment", "tag:早餐")
        page.locator("#c-count.ok").wait_for()
        assert page.get_attribute("#c-count", "data-count") == str(CUSTOMERS)
        page.select_option("#c-template", "morning_offer")
        page.select_option("#c-coupon", "breakfast5")
        page.fill("#c-pilot", "0%")
        page.fill("#c-holdout", "25%")
        # The live preview shows real customers in both languages.
        page.locator("#samples .sample[data-locale='en']").first.wait_for()
        assert (
            "Good morning" in page.locator("#samples .sample[data-locale='en']").first.inner_text()
        )
        assert "早上好" in page.locator("#samples .sample[data-locale='zh-CN']").first.inner_text()
        page.click("#create-campaign")
        page.locator("#flash").wait_for()
        campaign_id = int(page.url.rsplit("/", 1)[1])

        page.click("#preview")
        page.locator("#preview-box .sample").first.wait_for()
        assert f"{CUSTOMERS}" in page.locator("#preview-box p").first.inner_text()
        assert chart_data(page, "chart-funnel") == db_funnel(db, campaign_id)

        page.click("#launch")
        page.locator("#flash").wait_for()
        # The scheduler launches it, the worker delivers to the sandbox; the chart follows.
        total = t("console.camp.total", "zh-CN")
        data = wait_for_chart(
            page,
            "chart-funnel",
            lambda d: total in d and d[total][0] == CUSTOMERS and d[total][2] > 0
            and d[total][2] == d[total][0] - sum(
                v[0] for k, v in d.items() if "对照组" in k
            ),
        )  # fmt: skip
        assert data == db_funnel(db, campaign_id)
        assert data[total][4] == 0
        page.locator("#campaign-status", has_text="进行中").wait_for()
        page.locator("#comparison tr[data-arm='treated']").wait_for()
        assert page.locator("#pause").is_visible() and page.locator("#launch").count() == 0
        page.wait_for_timeout(500)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "campaign-funnel-1440.png"), full_page=True)

        # Redeem one of the campaign's codes at the coupons page.
        with db.sessions() as s:
            code = s.scalars(
                select(CouponCode.code).where(CouponCode.campaign_id == campaign_id).limit(1)
            ).one()
        page.goto(server.url + "/console/coupons")
        page.fill("#redeem-code", code)
        page.fill("#redeem-amount", "30")
        page.click("#redeem")
        page.locator("#flash:not(.error)").wait_for()
        page.goto(server.url + f"/console/campaigns/{campaign_id}")
        data = wait_for_chart(page, "chart-funnel", lambda d: d[total][4] == 1)
        assert data == db_funnel(db, campaign_id)
        assert page.locator("#n-redeemed").inner_text() == "1"


def test_segment_editor_search_and_staff_refusal(served):
    server, _ = served
    with chromium_page() as page:
        page.set_viewport_size({"width": 1440, "height": 900})
        log_in(page, server.url, MANAGER)
        page.goto(server.url + "/console/segments")
        page.fill("#s-expression", "tag:早餐 and bogus:1")
        page.locator("#s-count.error").wait_for()
        assert page.get_attribute("#s-count", "data-position") == str(len("tag:早餐 and "))
        assert page.locator("#s-count mark").inner_text() == "b"
        assert "bogus" in page.locator("#s-count .error-text").inner_text()
        page.fill("#s-expression", "tag:早餐")
        page.locator("#s-count.ok").wait_for()
        assert page.get_attribute("#s-count", "data-count") == str(CUSTOMERS)

        page.goto(server.url + "/console/customers")
        page.fill("#q", "13900001234")
        page.click("#search")
        page.locator("#results a.open-customer").click()
        page.locator("#customer-name").wait_for()
        assert "王小明" in page.locator("#customer-name").inner_text()
        assert page.locator("#phone").inner_text() == "13900001234"

        staff = page.context.browser.new_context(locale="zh-CN").new_page()
        log_in(staff, server.url, STAFF)
        answer = staff.goto(server.url + "/console")
        assert answer.status == 403
        assert staff.locator("#forbidden").is_visible()


def test_every_page_fits_1440_and_375_pixels(served):
    server, db = served
    with db.sessions() as s:
        customer_id = s.scalars(select(Customer.id).order_by(Customer.id)).first()
    with chromium_page() as page:
        log_in(page, server.url, MANAGER)
        page.goto(server.url + "/console/segments")
        page.fill("#s-expression", "tag:早餐")
        page.fill("#s-name", "breakfast")
        page.click("#save-segment")
        page.locator("#flash").wait_for()
        page.goto(server.url + "/console/campaigns/new")
        page.fill("#c-name", "weekend")
        page.fill("#c-segment", "tag:早餐")
        page.select_option("#c-template", "weekend_trip")
        page.click("#create-campaign")
        page.locator("#flash").wait_for()
        campaign_url = page.url.replace(server.url, "")
        pages = {
            "dashboard": "/console",
            "campaigns": "/console/campaigns",
            "campaign-new": "/console/campaigns/new",
            "campaign": campaign_url + "?preview=1",
            "segments": "/console/segments",
            "customers": "/console/customers?q=tag:早餐",
            "customer": f"/console/customers/{customer_id}",
            "tags": "/console/tags",
            "coupons": "/console/coupons",
            "flows": "/console/flows",
            "staff": "/console/staff",
        }
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        wide = []
        for width in WIDTHS:
            page.set_viewport_size({"width": width, "height": 900})
            for name, path in pages.items():
                page.goto(server.url + path)
                page.wait_for_load_state("networkidle")
                page.wait_for_timeout(200)
                page.screenshot(path=str(ARTIFACTS / f"{name}-{width}.png"), full_page=True)
                if not no_horizontal_scroll(page):
                    wide.append(f"{name}@{width}")
        assert wide == []
        # The language switch on the page.
        page.goto(server.url + "/console")
        page.select_option("#locale", "en")
        # The switch posts the choice and reloads: wait for the reloaded page, not for
        # network quiet (which can come before the post on a busy machine).
        page.locator("nav a[data-nav='campaigns']", has_text="Campaigns").wait_for()
        assert page.locator("nav a[data-nav='campaigns']").inner_text() == "Campaigns"
        page.set_viewport_size({"width": 1440, "height": 900})
        page.screenshot(path=str(ARTIFACTS / "dashboard-en-1440.png"), full_page=True)


@pytest.fixture
def measured(config, sqlite_db):
    """A served console with loyalty data, survey answers, SOP plans, FAQ and a
    moderation action (tests/console_measures_support.py)."""
    now = SystemClock().now()
    seed_measures(sqlite_db, now)
    seed_groups(sqlite_db, config, now)
    app = build_console(config, sqlite_db)
    with LiveServer(app) as server:
        yield server, sqlite_db, app


def test_measures_and_groups_pages_in_the_browser(measured):
    server, db, app = measured
    config, now = app.runtime.config, SystemClock().now()
    period = parse_period(None, None, zone=config.general.timezone, now=now, default_days=365)
    with db.sessions() as s:
        chain = loyalty.aarrr(s, period, config=config, now=now)
    with chromium_page() as page:

        def accept(dialog) -> None:
            dialog.accept()

        page.on("dialog", accept)
        log_in(page, server.url, MANAGER)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        wide = []
        for width in WIDTHS:
            page.set_viewport_size({"width": width, "height": 900})
            for name, path in (
                ("measures", "/console/measures?days=365"),
                ("groups", "/console/groups"),
            ):
                page.goto(server.url + path)
                page.wait_for_load_state("networkidle")
                page.wait_for_timeout(300)
                page.screenshot(path=str(ARTIFACTS / f"{name}-{width}.png"), full_page=True)
                if not no_horizontal_scroll(page):
                    wide.append(f"{name}@{width}")
        assert wide == []
        # The charts drawn are the chain and the cohorts of bot/measures.
        page.goto(server.url + "/console/measures?days=365")
        page.wait_for_load_state("networkidle")
        drawn = chart_data(page, "chart-aarrr")
        (steps,) = drawn.values()
        assert [p["value"] for p in steps] == [s["customers"] for s in chain.steps]
        assert page.locator("#biggest-loss").inner_text().startswith("流失最多的一步")
        heat = chart_data(page, "chart-cohorts")
        assert heat and all(len(cell) == 3 for cells in heat.values() for cell in cells)
        # Choosing a period and a segment on the form.
        page.check("#period-30")
        page.fill("#segment", "city:杭州")
        page.click("#apply")
        page.wait_for_load_state("networkidle")
        assert "segment=city" in page.url and "days=30" in page.url
        assert page.locator("#segment").input_value() == "city:杭州"
        # Pausing a plan from the Groups page.
        page.goto(server.url + "/console/groups")
        page.click("tr[data-plan='morning'] button[data-action='pause']")
        page.locator("#flash").wait_for()
        assert page.locator("tr[data-plan='morning']").get_attribute("data-status") == "paused"
        # Deleting asks first (the dialog names the plan), then the plan is gone.
        asked = []
        page.remove_listener("dialog", accept)
        page.on("dialog", lambda dialog: (asked.append(dialog.message), dialog.accept()))
        page.click("tr[data-plan='weekly'] button[data-action='delete']")
        page.locator("#flash").wait_for()
        assert asked and "weekly" in asked[0]
        assert page.locator("tr[data-plan='weekly']").count() == 0
        with db.sessions() as s:
            assert [p.name for p in sop.list_plans(s)] == ["morning"]
        page.set_viewport_size({"width": 1440, "height": 900})
        page.goto(server.url + "/console")
        assert page.locator("#tile-repeat .num").inner_text() == "50.0%"
        page.screenshot(path=str(ARTIFACTS / "dashboard-tiles-1440.png"))
