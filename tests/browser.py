"""Headless Chromium for browser tests: Debian's /usr/bin/chromium driven by Playwright.

Starting Chromium costs a second or more of a busy machine, so each test process (each
pytest-xdist worker) starts it once, on its first browser test, and every test gets a
fresh browser context (its own cookies, storage and cache) and page: tests stay
independent, only the browser process is shared. Contexts a test opened itself
(``page.context.browser.new_context()``) are closed with its own when the test ends.
``close_browser`` ends the process at the end of the test session (tests/conftest.py).

Playwright's sync API runs its driver connection on an event loop of its own, suspended
between calls in a greenlet, and marks that loop as this thread's running loop after
every call (playwright/_impl/_greenlets.py). The asyncio tests that run between two
browser tests of a worker start loops of their own, which asyncio refuses while another
loop is marked as running; so a browser test marks Playwright's loop as running while
it drives the page and clears the mark when it ends, as stopping Playwright would.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import Iterator
from typing import Any

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]

#: The test process's Playwright driver and Chromium, started by the first browser test.
_shared: dict[str, Any] = {}


def _browser() -> Any:
    """The process's Chromium, started (again, should it have died) when needed."""
    sync_api = pytest.importorskip("playwright.sync_api")
    browser = _shared.get("browser")
    if browser is not None and browser.is_connected():
        return browser
    close_browser()
    playwright = sync_api.sync_playwright().start()
    _shared["playwright"] = playwright
    _shared["browser"] = playwright.chromium.launch(
        executable_path=CHROMIUM, headless=True, args=ARGS
    )
    return _shared["browser"]


def close_browser() -> None:
    """Stop the process's Chromium and its Playwright driver, if they were started."""
    browser, playwright = _shared.pop("browser", None), _shared.pop("playwright", None)
    if playwright is None:
        return
    asyncio.events._set_running_loop(playwright._loop)
    with contextlib.suppress(Exception):  # already gone: nothing left to stop
        if browser is not None:
            browser.close()
    with contextlib.suppress(Exception):
        playwright.stop()
    asyncio.events._set_running_loop(None)


@contextlib.contextmanager
def chromium_page() -> Iterator:
    """A fresh page in a fresh browser context of the process's headless Chromium."""
    if "playwright" in _shared:  # Playwright's loop, as after each of its calls
        asyncio.events._set_running_loop(_shared["playwright"]._loop)
    browser: Any = None
    before: set[Any] = set()
    try:
        browser = _browser()
        before = set(browser.contexts)
        context = browser.new_context(locale="zh-CN")
        page = context.new_page()
        page.set_default_timeout(15000)
        yield page
    finally:
        if browser is not None:
            for opened in [c for c in browser.contexts if c not in before]:
                with contextlib.suppress(Exception):  # closed by the test already
                    opened.close()
        asyncio.events._set_running_loop(None)  # free for the next test's own loop
