"""Inbox sessions: Secure cookies behind HTTPS, and logout ends the session on the server."""

from __future__ import annotations

from dataclasses import replace

import pytest
from starlette.testclient import TestClient

from tests.support import SandboxHarness
from tests.test_inbox_web import PASSWORD, add_staff, csrf_of


def login_response(h: SandboxHarness, name: str, base_url: str = "http://testserver"):
    client = TestClient(h.app.asgi, follow_redirects=False, base_url=base_url)
    token = csrf_of(client.get("/inbox/login").text)
    r = client.post("/inbox/login", data={"username": name, "password": PASSWORD, "csrf": token})
    assert r.status_code == 303, r.text
    return client, r


@pytest.mark.parametrize(("public_url", "secure"), [("https://crm.example.com", True), ("", False)])
def test_the_cookie_is_secure_when_the_public_url_is_https(
    config, sqlite_db, clock, public_url, secure
):
    cfg = config.replace(links=replace(config.links, base_url=public_url))
    h = SandboxHarness(cfg, sqlite_db, clock)
    add_staff(sqlite_db, clock, "alice")
    _, r = login_response(h, "alice", base_url="https://testserver")
    cookie = r.headers["set-cookie"].lower()
    assert ("; secure" in cookie) is secure
    assert "httponly" in cookie and "samesite=strict" in cookie


def test_a_copied_cookie_stops_working_after_logout(config, sqlite_db, clock):
    h = SandboxHarness(config, sqlite_db, clock)
    add_staff(sqlite_db, clock, "mia", role="manager")
    browser, _ = login_response(h, "mia")
    thief = TestClient(h.app.asgi, follow_redirects=False)
    thief.cookies.set("siyu_inbox", browser.cookies["siyu_inbox"])
    assert thief.get("/inbox").status_code == 200
    assert thief.get("/api/customers/sandbox/nobody").status_code == 404  # a manager: let in

    token = csrf_of(browser.get("/inbox").text)
    assert browser.post("/inbox/logout", data={"csrf": token}).status_code == 303

    assert thief.get("/inbox").status_code == 303  # back to the login page
    assert thief.get("/inbox/api/queue").status_code == 401
    assert thief.get("/api/customers/sandbox/nobody").status_code == 401
    # Logging in again gives a new, working session.
    again, _ = login_response(h, "mia")
    assert again.get("/inbox").status_code == 200
    assert thief.get("/inbox").status_code == 303
