"""Customer data over HTTP: only with the API key or a manager's session, never a secret,
coupon codes in full to managers only."""

from __future__ import annotations

from dataclasses import replace

import pytest
from sqlalchemy import select, update
from starlette.testclient import TestClient

from storage.models import OutboxMessage
from tests.support import SandboxHarness
from tests.test_coupons_everywhere import at_offer
from tests.test_inbox_web import add_staff, login

API_KEY = "crm-api-key-0123456789"
APP_SECRET = "wxAPPSECRETe3b0c44298fc1c149afb"
LEAKY = (
    "TransientError: 40001 invalid credential, GET https://api.weixin.qq.com/cgi-bin/token"
    f"?grant_type=client_credential&appid=wx123&secret={APP_SECRET} failed"
)


@pytest.fixture
async def h(config, sqlite_db, clock):
    cfg = config.replace(
        api=replace(config.api, key=API_KEY),
        wechat=replace(config.wechat, app_secret=APP_SECRET),  # no app_id: not started
    )
    harness = SandboxHarness(cfg, sqlite_db, clock)
    code = await at_offer(harness, "u1")
    with sqlite_db.transaction() as s:
        first = s.scalars(select(OutboxMessage.id).order_by(OutboxMessage.id)).first()
        s.execute(update(OutboxMessage).where(OutboxMessage.id == first).values(last_error=LEAKY))
    harness.code = code  # type: ignore[attr-defined]
    return harness


URL = "/api/customers/sandbox/u1"


def test_anonymous_callers_get_no_customer_data(h):
    client = TestClient(h.app.asgi)
    r = client.get(URL)
    assert r.status_code == 401 and r.json()["code"] == "login_required"
    assert "u1" not in r.text and h.code not in r.text
    wrong = client.get(URL, headers={"Authorization": "Bearer not-the-key"})
    assert wrong.status_code == 401


def test_staff_who_are_not_managers_are_refused(h, clock):
    add_staff(h.db, clock, "sam", role="staff")
    staff, _ = login(h, "sam")
    r = staff.get(URL)
    assert r.status_code == 403 and h.code not in r.text


def test_managers_see_the_profile_and_codes_but_no_secret(h, clock):
    add_staff(h.db, clock, "mia", role="manager")
    manager, _ = login(h, "mia")
    r = manager.get(URL)
    assert r.status_code == 200
    profile = r.json()
    assert [c["code"] for c in profile["coupons"]] == [h.code.replace("-", "")]
    assert APP_SECRET not in r.text and "api.weixin.qq.com" not in r.text
    reasons = [o["last_error"] for o in profile["outbox"] if o["last_error"]]
    assert reasons and "invalid credential" in reasons[0] and "[url]" in reasons[0]
    assert r.headers["cache-control"] == "no-store"


def test_the_api_key_sees_the_profile_with_masked_codes(h):
    client = TestClient(h.app.asgi)
    r = client.get(URL, headers={"X-API-Key": API_KEY})
    assert r.status_code == 200
    raw = h.code.replace("-", "")
    assert raw not in r.text and r.json()["coupons"][0]["code"].endswith(raw[-4:])
    assert APP_SECRET not in r.text and "secret=" not in r.text


def test_a_secret_without_url_is_redacted_too(h, clock):
    with h.db.transaction() as s:
        s.execute(update(OutboxMessage).values(last_error=f"token refresh failed for {APP_SECRET}"))
    r = TestClient(h.app.asgi).get(URL, headers={"X-API-Key": API_KEY})
    assert APP_SECRET not in r.text and "[secret]" in r.text
