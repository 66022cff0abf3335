"""Imports from the console over real HTTP: a manager uploads a CSV or JSON file of
customers, orders or tags; the served process (role ``all``, so it runs the job worker
too) imports it as a batch job; the page shows status, counts and the rejected rows.
Every refusal (role, CSRF, size, format, encoding, a form sent twice) is checked."""

from __future__ import annotations

import html
import json
import re
import time
import uuid

import httpx
import pytest
from sqlalchemy import func, select

from bot.conversations.staff import create_staff, set_locale
from bot.core.clock import SystemClock
from bot.customers.imports import MAX_ERRORS_KEPT, MAX_FILE_BYTES
from storage.handoff import StaffUser
from storage.jobs import BatchJob
from storage.models import Customer, CustomerTag, Identity, Tag
from storage.orders import Order
from tests.campaign_support import make_customer
from tests.console_support import MANAGER, STAFF, build_console, login
from tests.support import LiveServer

EN_MANAGER = ("ella", "manager-pass-2")


@pytest.fixture
def served(config, sqlite_db):
    now = SystemClock().now()
    make_customer(sqlite_db, "ann", now, name="Ann")
    app = build_console(config, sqlite_db)
    with sqlite_db.transaction() as s:  # maria reads zh-CN, ella en
        set_locale(
            s, s.scalar(select(StaffUser.id).where(StaffUser.username == MANAGER[0])), "zh-CN"
        )
        ella = create_staff(s, EN_MANAGER[0], EN_MANAGER[1], role="manager", now=now)
        s.flush()
        set_locale(s, ella.id, "en")
    with LiveServer(app) as server:
        yield server, sqlite_db


def _form(client: httpx.Client) -> dict[str, str]:
    page = client.get("/console/imports")
    assert page.status_code == 200, page.text
    token = re.search(r'name="token" value="([0-9a-f]{32})"', page.text).group(1)
    return {"csrf": client.csrf, "token": token}


def upload(client, what: str, name: str, body: bytes, **fields) -> httpx.Response:
    data = _form(client) | {"what": what} | fields
    return client.post("/console/imports", data=data, files={"file": (name, body)})


def wait_done(client, url: str, timeout: float = 30.0) -> str:
    """The job page once the job is no longer queued or running."""
    deadline = time.monotonic() + timeout
    while True:
        page = client.get(url)
        assert page.status_code == 200, page.text
        status = re.search(r'id="import-job" data-status="(\w+)"', page.text).group(1)
        if status not in ("queued", "running"):
            return page.text
        assert time.monotonic() < deadline, f"the import is still {status}"
        time.sleep(0.1)


def flash(client, answer: httpx.Response) -> str:
    assert answer.status_code == 303, answer.text
    page = client.get(answer.headers["location"]).text
    return html.unescape(re.search(r'id="flash">(.*?)</div>', page, re.S).group(1))


def _reasons(page: str) -> list[str]:
    """The reasons column of the rejected rows on a job page."""
    table = re.search(r'id="import-errors".*?</table>', page, re.S)
    return [
        html.unescape(r)
        for r in re.findall(r'<td data-label="[^"]+">([^<]*)</td></tr>', table.group(0))
    ]


def jobs(db) -> int:
    with db.sessions() as s:
        return s.scalar(select(func.count()).select_from(BatchJob))


def test_orders_csv_is_imported_by_a_job_with_counts_and_rejected_rows(served):
    server, db = served
    manager = login(server.url, MANAGER)
    body = (
        b"order_id,customer,amount,time\n"
        b"o-1,sandbox:ann,35.00,2026-03-01 10:00\n"
        b"o-2,sandbox:nobody,20.00,2026-03-01 11:00\n"
        b"o-3,sandbox:ann,-5,2026-03-01 12:00\n"
    )
    answer = upload(manager, "orders", "march.csv", body)
    assert answer.status_code == 303
    url = answer.headers["location"]
    assert re.fullmatch(r"/console/imports/\d+", url)
    page = wait_done(manager, url)
    assert 'data-status="done"' in page
    counts = dict(re.findall(r'data-count="(\w+)"><div class="num">(\d+)</div>', page))
    assert counts == {"inserted": "1", "duplicates": "0", "rejected": "2"}
    rows = re.findall(
        r'<td class="num" data-label="[^"]+">(\d+)</td><td data-label="[^"]+">([^<]*)</td>', page
    )
    assert rows == [("3", "o-2"), ("4", "o-3")]  # CSV line numbers and the order ids
    reasons = _reasons(page)
    assert reasons == ["没有身份为 sandbox:nobody 的客户", "金额不能小于 0，收到的是 '-5'"]
    # the job keeps each reason's code and parameters; an English reader sees English
    english = _reasons(login(server.url, EN_MANAGER).get(url).text)
    assert english == [
        "no customer with identity sandbox:nobody",
        "'amount' must be 0 or more, got '-5'",
    ]
    with db.sessions() as s:
        assert s.scalars(select(Order.order_id)).all() == ["o-1"]
        job = s.scalars(select(BatchJob)).one()
        assert job.result["errors"] == [
            {"where": 3, "key": "o-2", "code": "intake.row.no_identity",
             "params": {"who": "sandbox:nobody"}},
            {"where": 4, "key": "o-3", "code": "amount.negative",
             "params": {"raw": "'-5'", "limit": "100000000"}},
        ]  # fmt: skip
        assert (job.kind, job.created_by, job.attempts) == ("import", "staff:maria", 1)
        assert job.progress == {"done": 2, "total": 2}
        # the file (phones, identities) is dropped once the job has ended
        assert job.payload == {"what": "orders", "format": "csv", "file": "march.csv"}
    listing = manager.get("/console/imports").text
    assert f'href="{url}">march.csv</a>' in listing

    again = upload(manager, "orders", "march.csv", body)  # the same file later: no new order
    page = wait_done(manager, again.headers["location"])
    counts = dict(re.findall(r'data-count="(\w+)"><div class="num">(\d+)</div>', page))
    assert counts["inserted"] == "0" and counts["duplicates"] == "1"


def test_customers_json_and_tags_csv_are_imported(served):
    server, db = served
    manager = login(server.url, MANAGER)
    customers = {"customers": [
        {"customer": "sandbox:zoe", "name": "Zoe", "city": "杭州"},
        {"customer": "sandbox:ann", "city": "上海"},
        {"customer": "nonsense"},
    ]}  # fmt: skip
    answer = upload(manager, "customers", "people.json", json.dumps(customers).encode())
    page = wait_done(manager, answer.headers["location"])
    counts = dict(re.findall(r'data-count="(\w+)"><div class="num">(\d+)</div>', page))
    assert counts == {"created": "1", "updated": "1", "unchanged": "0", "rejected": "1"}
    tags = b"customer,tag,ttl_days\nsandbox:zoe,VIP,30\nsandbox:ghost,VIP,\n"
    answer = upload(manager, "tags", "vip.csv", tags)
    page = wait_done(manager, answer.headers["location"])
    counts = dict(re.findall(r'data-count="(\w+)"><div class="num">(\d+)</div>', page))
    assert counts == {"added": "1", "refreshed": "0", "rejected": "1"}
    with db.sessions() as s:
        zoe = s.scalars(select(Customer).join(Identity).where(Identity.external_id == "zoe")).one()
        assert (zoe.display_name, zoe.city) == ("Zoe", "杭州")
        tagged = s.scalars(
            select(Tag.name).join(CustomerTag).where(CustomerTag.customer_id == zoe.id)
        ).all()
        assert tagged == ["VIP"]


def test_a_file_that_cannot_be_used_fails_the_job_with_the_reason(served):
    server, db = served
    manager = login(server.url, MANAGER)
    answer = upload(manager, "orders", "wrong.csv", b"id,amount\n1,2\n")
    page = html.unescape(wait_done(manager, answer.headers["location"]))
    assert 'data-status="failed"' in page
    assert "缺少列 order_id, time" in page  # in the manager's locale
    english = html.unescape(login(server.url, EN_MANAGER).get(answer.headers["location"]).text)
    assert "missing column(s) order_id, time" in english
    answer = upload(manager, "tags", "broken.json", b'{"tags": [')
    page = html.unescape(wait_done(manager, answer.headers["location"]))
    assert "不是有效的 JSON：第 1 行" in page
    with db.sessions() as s:  # refused input is not retried, and is not kept
        failed = s.scalars(select(BatchJob).order_by(BatchJob.id)).all()
        assert [(j.attempts, "input" in j.payload) for j in failed] == [(1, False), (1, False)]


def test_only_the_first_rejected_rows_are_kept_with_the_whole_count(served):
    server, _ = served
    manager = login(server.url, MANAGER)
    lines = ["customer,tag"] + [f"sandbox:nobody{i},VIP" for i in range(MAX_ERRORS_KEPT + 10)]
    answer = upload(manager, "tags", "many.csv", "\n".join(lines).encode())
    page = wait_done(manager, answer.headers["location"])
    assert page.count("没有身份为") == MAX_ERRORS_KEPT
    assert f'data-count="rejected"><div class="num">{MAX_ERRORS_KEPT + 10}<' in page


def test_uploads_are_refused_with_a_clear_reason_and_nothing_is_queued(served):
    server, db = served
    manager = login(server.url, MANAGER)
    big = b"customer,tag\n" + b"sandbox:a,x\n" * (MAX_FILE_BYTES // 12 + 1)
    assert "超过上限 1024 KB" in flash(manager, upload(manager, "tags", "big.csv", big))
    assert "不是 .csv 或 .json" in flash(manager, upload(manager, "tags", "x.xlsx", b"a,b\n"))
    assert "UTF-8" in flash(manager, upload(manager, "tags", "gbk.csv", "客户".encode("gbk")))
    assert "空的" in flash(manager, upload(manager, "tags", "empty.csv", b"  \n"))
    assert "请选择导入内容" in flash(manager, upload(manager, "people", "a.csv", b"a\n"))
    assert "过期" in flash(manager, upload(manager, "tags", "a.csv", b"a\n", token="nope"))
    assert jobs(db) == 0


def test_a_form_sent_twice_queues_one_import(served):
    server, db = served
    manager = login(server.url, MANAGER)
    fields = _form(manager) | {"what": "tags"}
    body = b"customer,tag\nsandbox:ann,VIP\n"
    first = manager.post("/console/imports", data=fields, files={"file": ("a.csv", body)})
    second = manager.post("/console/imports", data=fields, files={"file": ("a.csv", body)})
    assert first.headers["location"] == second.headers["location"]
    assert jobs(db) == 1


def test_staff_anonymous_and_a_wrong_csrf_token_cannot_import(served):
    server, db = served
    body = {"file": ("a.csv", b"customer,tag\nsandbox:ann,VIP\n")}
    data = {"what": "tags", "token": uuid.uuid4().hex}
    staff = login(server.url, STAFF)
    assert staff.get("/console/imports").status_code == 403
    assert (
        staff.post("/console/imports", data=data | {"csrf": staff.csrf}, files=body).status_code
        == 403
    )
    anonymous = httpx.Client(base_url=server.url)
    answer = anonymous.post("/console/imports", data=data, files=body)
    assert answer.status_code in (303, 401, 403)
    manager = login(server.url, MANAGER)
    answer = manager.post("/console/imports", data=data | {"csrf": "wrong"}, files=body)
    assert answer.status_code == 403
    assert jobs(db) == 0
    assert manager.get("/console/imports/999").status_code == 404
