"""The console's imports page in headless Chromium: a manager uploads an orders CSV with a
bad row, the job page follows the job until it is done and shows the counts and the
rejected row; a file over the bound is stopped in the page before it is sent; the list and
the job page fit 1440 and 375 px without horizontal scrolling (screenshots in
tests/artifacts/console/)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from bot.core.clock import SystemClock
from bot.customers.imports import MAX_FILE_BYTES
from storage.orders import Order
from tests.browser import chromium_page
from tests.campaign_support import make_customer
from tests.console_support import MANAGER, build_console
from tests.support import LiveServer
from tests.test_console_browser import log_in, no_horizontal_scroll

pytestmark = pytest.mark.browser

ARTIFACTS = Path(__file__).resolve().parent / "artifacts" / "console"
ORDERS = (
    "order_id,customer,amount,time,items\n"
    "A-1001,sandbox:ann,128.00,2026-03-01 10:00,豆浆;油条\n"
    "A-1002,sandbox:ann,35.50,2026-03-02 09:30,包子\n"
    "A-1003,sandbox:nobody,20.00,2026-03-02 11:00,\n"
)


@pytest.fixture
def served(config, sqlite_db):
    make_customer(sqlite_db, "ann", SystemClock().now(), name="Ann")
    app = build_console(config, sqlite_db)
    with LiveServer(app) as server:
        yield server, sqlite_db


def test_an_orders_file_is_uploaded_imported_and_its_outcome_shown(served):
    server, db = served
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with chromium_page() as page:
        log_in(page, server.url, MANAGER)
        page.set_viewport_size({"width": 1440, "height": 900})
        page.goto(server.url + "/console/imports")
        page.check("input[name=what][value=orders]")
        big = {"name": "big.csv", "mimeType": "text/csv", "buffer": b"x" * (MAX_FILE_BYTES + 1)}
        page.set_input_files("#import-file", big)
        page.click("#import-submit")
        live = page.locator("#import-live")
        live.wait_for()
        assert "超过上限 1024 KB" in live.inner_text()
        assert page.url == server.url + "/console/imports"  # nothing was sent

        page.set_input_files(
            "#import-file",
            {"name": "三月订单.csv", "mimeType": "text/csv", "buffer": ORDERS.encode()},
        )
        page.click("#import-submit")
        page.wait_for_url(server.url + "/console/imports/*")
        assert "已收到文件「三月订单.csv」" in page.locator("#flash").inner_text()
        page.locator('#import-job[data-status="done"]').wait_for(timeout=30000)
        counts = {
            c.get_attribute("data-count"): c.locator(".num").inner_text()
            for c in page.locator("#import-counts .card").all()
        }
        assert counts == {"inserted": "2", "duplicates": "0", "rejected": "1"}
        assert page.locator("#import-errors tbody tr").count() == 1
        assert "sandbox:nobody" in page.locator("#import-errors").inner_text()
        job_url = page.url
        wide = []
        for width in (1440, 375):
            page.set_viewport_size({"width": width, "height": 900})
            for name, url in (
                ("imports", server.url + "/console/imports"),
                ("import-job", job_url),
            ):
                page.goto(url)
                page.wait_for_load_state("networkidle")
                page.screenshot(path=str(ARTIFACTS / f"{name}-{width}.png"), full_page=True)
                if not no_horizontal_scroll(page):
                    wide.append(f"{name}@{width}")
        assert wide == []
        listing = page.goto(server.url + "/console/imports")
        assert listing is not None and "三月订单.csv" in page.locator("#imports").inner_text()
    with db.sessions() as s:
        assert sorted(s.scalars(select(Order.order_id))) == ["A-1001", "A-1002"]
