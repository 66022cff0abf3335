"""The manager console over real HTTP against a served Siyu: who may see it, CSRF and
bounds, the segment count API, campaign creation, customer search and actions, staff
accounts, coupons, tag rules, the CSV export, the language switch and the dashboard's
numbers matching the database."""

from __future__ import annotations

import csv
import html
import io
import json
import re
import time
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import func, select

from bot.core.clock import SystemClock
from bot.customers.rule_syntax import parse_rule, rule_line
from bot.marketing.coupons import definition, issue_one, sync_definitions
from storage import repos
from storage.campaigns import Campaign, Scenario, ScenarioRun
from storage.coupons import CouponCode
from storage.handoff import StaffUser
from storage.models import Customer, CustomerTag, Identity
from storage.segments import SavedSegment
from storage.tag_rules import TagRule
from tests.campaign_support import make_customer
from tests.console_support import MANAGER, STAFF, build_console, login
from tests.support import LiveServer

PAGES = [
    "/console",
    "/console/campaigns",
    "/console/campaigns/new",
    "/console/segments",
    "/console/customers?q=x",
    "/console/tags",
    "/console/coupons",
    "/console/flows",
    "/console/staff",
]


@pytest.fixture
def served(config, sqlite_db):
    now = SystemClock().now()
    ids = {
        "ann": make_customer(sqlite_db, "ann", now, tags=("早餐",), name="Ann"),
        "bo": make_customer(sqlite_db, "bo", now, tags=("早餐", "周末出游"), name="Bo"),
        "cy": make_customer(sqlite_db, "cy", now, name="Cy", channel="telegram"),
    }
    with sqlite_db.transaction() as s:
        s.get(Customer, ids["bo"]).phone = "13812345678"
        sync_definitions(s, config.coupons, now)
    app = build_console(config, sqlite_db)
    with LiveServer(app) as server:
        yield server, sqlite_db, ids


def wait_status(db, campaign_id: int, status: str, timeout: float = 30.0) -> None:
    """Wait until the campaign reaches ``status`` (a job worker moves it on)."""
    deadline = time.monotonic() + timeout
    while True:
        with db.sessions() as s:
            current = s.get(Campaign, campaign_id).status
        if current == status:
            return
        assert time.monotonic() < deadline, f"campaign is {current}, not {status}"
        time.sleep(0.05)


def chart_option(html: str, chart_id: str) -> dict:
    found = re.search(rf'<script type="application/json" id="{chart_id}">(.*?)</script>', html)
    assert found, chart_id
    return json.loads(found.group(1))


def test_anonymous_goes_to_login_staff_get_403_managers_see_every_page(served):
    server, _, _ = served
    anonymous = httpx.Client(base_url=server.url, follow_redirects=False)
    staff = login(server.url, STAFF)
    manager = login(server.url, MANAGER)
    for path in PAGES:
        answer = anonymous.get(path)
        assert answer.status_code == 303 and answer.headers["location"] == "/inbox/login", path
        refused = staff.get(path)
        assert refused.status_code == 403, path
        assert 'id="forbidden"' in refused.text
        shown = manager.get(path)
        assert shown.status_code == 200, path
        assert "/console/static/vendor/echarts/echarts.min.js" in shown.text
    # The JSON helpers refuse too, with JSON.
    for client, status in ((anonymous, 401), (staff, 403)):
        answer = client.post("/console/api/segment-count", data={"expression": "tag:早餐"})
        assert answer.status_code == status
        assert "error" in answer.json()
    # ECharts ships inside the package with its licence (no CDN).
    script = anonymous.get("/console/static/vendor/echarts/echarts.min.js")
    assert script.status_code == 200 and len(script.content) > 500_000
    licence = anonymous.get("/console/static/vendor/echarts/LICENSE")
    assert "Apache License" in licence.text


def test_a_deactivated_manager_is_logged_out_of_the_console(served):
    server, db, _ = served
    manager = login(server.url, MANAGER)
    assert manager.get("/console").status_code == 200
    with db.transaction() as s:
        s.scalars(select(StaffUser).where(StaffUser.username == MANAGER[0])).one().active = False
    assert manager.get("/console").status_code == 303


def test_posts_need_the_session_csrf_token_and_fields_are_bounded(served):
    server, db, ids = served
    manager = login(server.url, MANAGER)
    answer = manager.post(f"/console/customers/{ids['ann']}/tag", data={"tag": "vip"})
    assert answer.status_code == 403
    answer = manager.post(
        f"/console/customers/{ids['ann']}/tag", data={"tag": "vip", "csrf": "forged"}
    )
    assert answer.status_code == 403
    answer = manager.post(
        "/console/segments",
        data={"name": "big", "expression": "tag:早餐 or " * 600, "csrf": manager.csrf},
    )
    assert answer.status_code == 400
    assert "4000" in answer.text
    with db.sessions() as s:
        assert s.scalar(select(func.count()).select_from(SavedSegment)) == 0
        assert not repos.tags_of(s, ids["ann"], SystemClock().now())[1:]


def test_segment_count_api_counts_and_points_at_the_error(served):
    server, _, _ = served
    manager = login(server.url, MANAGER)
    answer = manager.post(
        "/console/api/segment-count", data={"expression": "tag:早餐", "csrf": manager.csrf}
    ).json()
    assert answer["count"] == 2
    answer = manager.post(
        "/console/api/segment-count",
        data={"expression": "tag:早餐 and bogus:1", "csrf": manager.csrf},
    ).json()
    assert answer["position"] == len("tag:早餐 and ")
    assert "error" in answer and "count" not in answer
    too_long = manager.post(
        "/console/api/segment-count", data={"expression": "x" * 2001, "csrf": manager.csrf}
    ).json()
    assert "error" in too_long


def test_create_campaign_from_the_form_and_refuse_a_bad_one_without_storing_it(served):
    server, db, _ = served
    manager = login(server.url, MANAGER)
    bad = manager.post(
        "/console/campaigns/new",
        data={"name": "spring", "segment": "tag:早餐 and (", "text": "hi", "csrf": manager.csrf},
    )
    assert bad.status_code == 400
    assert 'id="form-error"' in bad.text and "tag:早餐 and (" in bad.text  # the form is kept
    good = manager.post(
        "/console/campaigns/new",
        data={
            "name": "spring",
            "segment": "tag:早餐",
            "template": "morning_offer",
            "coupon": "breakfast5",
            "pilot": "10%",
            "holdout": "10%",
            "csrf": manager.csrf,
        },
    )
    assert good.status_code == 303
    with db.sessions() as s:
        campaign = s.scalars(select(Campaign)).one()
        assert (campaign.name, campaign.segment, campaign.coupon) == (
            "spring",
            "tag:早餐",
            "breakfast5",
        )
        assert campaign.created_by == "staff:maria" and campaign.status == "draft"
    assert good.headers["location"] == f"/console/campaigns/{campaign.id}"
    listed = manager.get("/console/campaigns").text
    assert 'data-campaign="spring"' in listed
    preview = manager.get(f"/console/campaigns/{campaign.id}?preview=1").text
    assert 'data-locale="zh-CN"' in preview and 'data-locale="en"' in preview
    # Launch queues the preparation, as /campaign launch does; the served process (role
    # all) runs it as a worker would.
    manager.post(f"/console/campaigns/{campaign.id}/launch", data={"csrf": manager.csrf})
    wait_status(db, campaign.id, "running")
    # A running campaign can be held (as /campaign pause does); pausing it again is
    # refused with the reason and changes nothing.
    manager.post(f"/console/campaigns/{campaign.id}/pause", data={"csrf": manager.csrf})
    with db.sessions() as s:
        assert s.get(Campaign, campaign.id).status == "paused"
    refused = manager.post(
        f"/console/campaigns/{campaign.id}/pause",
        data={"csrf": manager.csrf},
        follow_redirects=True,
    )
    assert 'class="flash error"' in refused.text
    with db.sessions() as s:
        assert s.get(Campaign, campaign.id).status == "paused"


def test_live_preview_renders_real_customers_in_both_locales(served):
    server, _, _ = served
    manager = login(server.url, MANAGER)
    answer = manager.post(
        "/console/api/campaign-preview",
        data={"segment": "tag:早餐", "text": "你好 {{ customer.name }}", "csrf": manager.csrf},
    ).json()
    assert answer["audience"] == 2
    assert {(s["customer"], s["locale"]) for s in answer["samples"]} == {
        ("Ann", "zh-CN"), ("Ann", "en"), ("Bo", "zh-CN"), ("Bo", "en"),
    }  # fmt: skip
    assert "你好 Ann" in [s["text"] for s in answer["samples"]]
    broken = manager.post(
        "/console/api/campaign-preview",
        data={"segment": "tag:早餐", "text": "{{ customer.name ", "csrf": manager.csrf},
    ).json()
    assert "error" in broken


def test_search_by_phone_name_channel_id_and_tag_then_act_on_the_profile(served):
    server, db, ids = served
    manager = login(server.url, MANAGER)
    for query, expected in (
        ("13812345678", {ids["bo"]}),
        ("5678", {ids["bo"]}),
        ("Ann", {ids["ann"]}),
        ("cy", {ids["cy"]}),
        ("tag:周末出游", {ids["bo"]}),
    ):
        html = manager.get("/console/customers", params={"q": query}).text
        assert {int(x) for x in re.findall(r'data-customer="(\d+)"', html)} == expected, query
    profile = manager.get(f"/console/customers/{ids['bo']}").text
    assert "13812345678" in profile and "周末出游" in profile
    manager.post(f"/console/customers/{ids['bo']}/tag", data={"tag": "vip", "csrf": manager.csrf})
    manager.post(
        f"/console/customers/{ids['bo']}/untag", data={"tag": "早餐", "csrf": manager.csrf}
    )
    bad = manager.post(
        f"/console/customers/{ids['bo']}/tag",
        data={"tag": "two words", "csrf": manager.csrf},
        follow_redirects=True,
    )
    assert 'class="flash error"' in bad.text
    with db.sessions() as s:
        tags = {ct.tag.name: ct.source for ct in repos.tags_of(s, ids["bo"], SystemClock().now())}
    assert tags == {"周末出游": "test", "vip": "staff:maria"}
    manager.post(
        f"/console/customers/{ids['ann']}/merge",
        data={"from_id": f"#{ids['cy']}", "csrf": manager.csrf},
    )
    with db.sessions() as s:
        owners = set(s.scalars(select(Identity.customer_id).where(Identity.external_id == "cy")))
    assert owners == {ids["ann"]}
    assert manager.get("/console/customers/999999").status_code == 404
    assert manager.get("/console/customers/abc").status_code == 400


def test_staff_accounts_add_reset_disable_role_and_keep_one_manager(served):
    server, db, _ = served
    manager = login(server.url, MANAGER)
    manager.post(
        "/console/staff",
        data={"username": "lee", "password": "lee-pass-1", "role": "staff", "csrf": manager.csrf},
    )
    lee = login(server.url, ("lee", "lee-pass-1"))
    assert lee.get("/console").status_code == 403
    manager.post("/console/staff/lee/passwd", data={"password": "lee-pass-2", "csrf": manager.csrf})
    login(server.url, ("lee", "lee-pass-2"))
    manager.post("/console/staff/lee/role", data={"role": "manager", "csrf": manager.csrf})
    assert lee.get("/console").status_code == 200
    manager.post("/console/staff/lee/disable", data={"csrf": manager.csrf})
    assert lee.get("/console").status_code == 303
    short = manager.post(
        "/console/staff/sam/passwd", data={"password": "short", "csrf": manager.csrf},
        follow_redirects=True,
    )  # fmt: skip
    assert 'class="flash error"' in short.text
    # maria is now the only active manager: she cannot demote or disable herself.
    for action, data in (("role", {"role": "staff"}), ("disable", {})):
        answer = manager.post(
            f"/console/staff/maria/{action}",
            data=data | {"csrf": manager.csrf},
            follow_redirects=True,
        )
        assert "last active manager" in answer.text
    with db.sessions() as s:
        maria = s.scalars(select(StaffUser).where(StaffUser.username == "maria")).one()
        assert maria.active and maria.role == "manager"


def test_redeem_a_coupon_and_see_it_counted(served):
    server, db, ids = served
    manager = login(server.url, MANAGER)
    now = SystemClock().now()
    with db.transaction() as s:
        code = issue_one(s, definition(s, "breakfast5"), ids["ann"], "test:ann", now=now).code
    below = manager.post(
        "/console/coupons/redeem", data={"code": code, "amount": "10", "csrf": manager.csrf},
        follow_redirects=True,
    )  # fmt: skip
    assert "20.00" in below.text and 'class="flash error"' in below.text
    done = manager.post(
        "/console/coupons/redeem", data={"code": code, "amount": "30", "csrf": manager.csrf},
        follow_redirects=True,
    )  # fmt: skip
    assert 'class="flash error"' not in done.text
    row = re.search(r'<tr data-coupon="breakfast5">(.*?)</tr>', done.text, re.S).group(1)
    assert re.search(r'class="num redeemed"[^>]*>1<', row)
    with db.sessions() as s:
        assert s.scalars(select(CouponCode.status)).one() == "redeemed"


def test_saved_segment_export_is_csv_with_formulas_neutralized(served):
    server, db, ids = served
    with db.transaction() as s:
        s.get(Customer, ids["ann"]).display_name = "=HYPERLINK(1)"
    manager = login(server.url, MANAGER)
    manager.post(
        "/console/segments",
        data={"name": "breakfast", "expression": "tag:早餐", "csrf": manager.csrf},
    )
    listed = manager.get("/console/segments").text
    assert re.search(r'data-segment="breakfast".*?<td class="num"[^>]*>2<', listed, re.S)
    answer = manager.get("/console/segments/breakfast/export.csv")
    assert answer.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(answer.text.lstrip("\ufeff"))))
    assert len(rows) == 3
    assert {r[1] for r in rows[1:]} == {"'=HYPERLINK(1)", "Bo"}
    assert manager.get("/console/segments/nope/export.csv").status_code == 404


def test_tag_rules_added_and_deleted_from_the_console(served):
    server, db, _ = served
    manager = login(server.url, MANAGER)
    manager.post(
        "/console/tags/rules", data={"rule": "keyword 咖啡 拿铁,美式", "csrf": manager.csrf}
    )
    bad = manager.post(
        "/console/tags/rules", data={"rule": "keyword", "csrf": manager.csrf}, follow_redirects=True
    )
    assert 'class="flash error"' in bad.text
    with db.sessions() as s:
        rule = s.scalars(select(TagRule)).one()
        assert (rule.tag, rule.spec["keywords"], rule.created_by) == (
            "咖啡",
            ["拿铁", "美式"],
            "staff:maria",
        )
    page = manager.get("/console/tags").text
    assert f'data-rule="{rule.id}"' in page
    manager.post(f"/console/tags/rules/{rule.id}/delete", data={"csrf": manager.csrf})
    with db.sessions() as s:
        assert s.get(TagRule, rule.id).active is False


def _version(db, campaign_id: int) -> int:
    with db.sessions() as s:
        return s.get(Campaign, campaign_id).version


def test_two_managers_on_one_campaign_the_second_is_told_and_nothing_is_lost(served):
    server, db, _ = served
    first, second = login(server.url, MANAGER), login(server.url, MANAGER)
    first.post("/console/campaigns/new",
               data={"name": "winter", "segment": "tag:早餐", "text": "hi", "csrf": first.csrf})  # fmt: skip
    with db.sessions() as s:
        campaign_id = s.scalars(select(Campaign.id).where(Campaign.name == "winter")).one()
    seen = _version(db, campaign_id)
    # both open the edit form: it carries the version they saw
    for client in (first, second):
        form = client.get(f"/console/campaigns/{campaign_id}/edit").text
        assert f'name="version" value="{seen}"' in form
    saved = first.post(f"/console/campaigns/{campaign_id}/edit", data={
        "segment": "tag:周末出游", "text": "first", "version": str(seen), "csrf": first.csrf})  # fmt: skip
    assert saved.status_code == 303
    second.post("/console/locale", data={"locale": "en", "next": "/console", "csrf": second.csrf})
    late = second.post(f"/console/campaigns/{campaign_id}/edit", data={
        "segment": "tag:早餐", "text": "second", "version": str(seen), "csrf": second.csrf})  # fmt: skip
    assert late.status_code == 400
    assert "was changed by someone else" in late.text and "Reload the page" in late.text
    assert 'value="tag:早餐"' in late.text or "tag:早餐</textarea>" in late.text  # kept
    with db.sessions() as s:
        campaign = s.get(Campaign, campaign_id)
        assert campaign.segment == "tag:周末出游"
        assert campaign.variants["items"][0]["text"] == "first"
    # both look at the campaign page; the first launches, the second's pilot is refused
    seen = _version(db, campaign_id)
    for client in (first, second):
        page = client.get(f"/console/campaigns/{campaign_id}").text
        assert f'name="version" value="{seen}"' in page
    first.post(f"/console/campaigns/{campaign_id}/launch",
               data={"version": str(seen), "csrf": first.csrf})  # fmt: skip
    refused = second.post(f"/console/campaigns/{campaign_id}/pilot",
                          data={"version": str(seen), "csrf": second.csrf}, follow_redirects=True)  # fmt: skip
    assert 'class="flash error"' in refused.text and "was changed by someone else" in refused.text
    wait_status(db, campaign_id, "running")  # the launch went ahead, the pilot did not
    second.post("/console/locale", data={"locale": "zh-CN", "next": "/console",
                                         "csrf": second.csrf})  # fmt: skip
    again = second.post(f"/console/campaigns/{campaign_id}/launch",
                        data={"version": str(seen), "csrf": second.csrf}, follow_redirects=True)  # fmt: skip
    assert "已被他人修改" in again.text


def test_of_two_launches_at_once_exactly_one_goes_ahead(db):
    import threading

    from bot.marketing.campaigns import manage

    with db.transaction() as s:
        campaign = Campaign(name="race", segment="tag:x", variants={"items": []}, buttons={},
                            status="draft", verdict={}, created_by="t")  # fmt: skip
        s.add(campaign)
        s.flush()
        campaign_id, seen = campaign.id, campaign.version
    outcomes: list[str] = []
    barrier = threading.Barrier(2)

    def act() -> None:
        barrier.wait()
        try:
            with db.transaction() as s:
                manage.check_version(s, campaign_id, seen)
                time.sleep(0.3)  # hold the claim while the other one tries
                manage.request(s, s.get(Campaign, campaign_id), "launch")
            outcomes.append("done")
        except manage.CampaignError as exc:
            assert exc.key == "campaign.changed_meanwhile"
            outcomes.append("refused")

    threads = [threading.Thread(target=act) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["done", "refused"]
    with db.sessions() as s:
        campaign = s.get(Campaign, campaign_id)
        assert campaign.status == "launch_pending" and campaign.version > seen + 1


@pytest.mark.parametrize(
    ("field", "value", "zh", "en"),
    [("hours", "abc", "不是数字", "is not a number"),
     ("variants", "a:morning_offer:0", "权重须为正数", "the weight must be a positive number"),
     ("at", "soon", "应为本地时刻", "must be a local time"),
     ("buttons", "领券", "应写成 文字=动作", "must be '<label>=<action>'"),
     ("pilot", "abc", "不是比例", "is not a share")],
)  # fmt: skip
def test_a_bad_definition_is_explained_in_the_managers_language(served, field, value, zh, en):
    server, db, _ = served
    manager = login(server.url, MANAGER)
    form = {"name": "spring", "segment": "tag:早餐", "text": "hi", field: value,
            "csrf": manager.csrf}  # fmt: skip
    if field == "variants":
        form.pop("text")
    for locale, words in (("zh-CN", zh), ("en", en)):
        manager.post("/console/locale",
                     data={"locale": locale, "next": "/console", "csrf": manager.csrf})  # fmt: skip
        bad = manager.post("/console/campaigns/new", data=form)
        assert bad.status_code == 400
        error = re.search(r'id="form-error">(.*?)</div>', bad.text, re.S).group(1)
        assert html.unescape(words) in html.unescape(error), (locale, error)
    with db.sessions() as s:
        assert s.scalar(select(func.count()).select_from(Campaign)) == 0


def test_a_tag_rule_is_edited_in_place(served):
    server, db, _ = served
    manager = login(server.url, MANAGER)
    manager.post("/console/tags/rules", data={"rule": "keyword 咖啡 拿铁 ttl=30",
                                              "csrf": manager.csrf})  # fmt: skip
    with db.sessions() as s:
        rule = s.scalars(select(TagRule)).one()
    # the edit form starts from the rule's own text
    page = manager.get("/console/tags").text
    assert 'value="keyword 咖啡 拿铁 ttl=30"' in page
    answer = manager.post(
        f"/console/tags/rules/{rule.id}/edit",
        data={"rule": "keyword 咖啡 拿铁,美式 exclude=奶茶 weight=2", "csrf": manager.csrf},
    )
    assert answer.status_code == 303
    with db.sessions() as s:
        rules = list(s.scalars(select(TagRule)))
        assert [r.id for r in rules] == [rule.id]  # the same row: no delete and re-add
        edited = rules[0]
        assert edited.active and edited.created_by == "staff:maria"
        assert edited.spec == {"keywords": ["拿铁", "美式"], "exclude": ["奶茶"]}
        assert (edited.weight, edited.ttl_days) == (2.0, 0)
        assert edited.updated_at > rule.updated_at  # running processes reload their rules
    page = manager.get("/console/tags").text
    assert 'value="keyword 咖啡 拿铁,美式 exclude=奶茶 weight=2"' in page
    # bad text or a deleted rule: a clear refusal, the rule unchanged
    bad = manager.post(f"/console/tags/rules/{rule.id}/edit",
                       data={"rule": "keyword 咖啡", "csrf": manager.csrf}, follow_redirects=True)  # fmt: skip
    assert 'class="flash error"' in bad.text
    gone = manager.post("/console/tags/rules/999/edit", data={"rule": "keyword a b",
                        "csrf": manager.csrf}, follow_redirects=True)  # fmt: skip
    assert 'class="flash error"' in gone.text and "999" in gone.text
    assert manager.post(f"/console/tags/rules/{rule.id}/edit",
                        data={"rule": "keyword a b"}).status_code == 403  # fmt: skip
    with db.sessions() as s:
        assert s.get(TagRule, rule.id).spec["keywords"] == ["拿铁", "美式"]
        assert s.scalar(select(func.count()).select_from(TagRule)) == 1


@pytest.mark.parametrize(
    "text",
    ["keyword 早餐 包子,豆浆 exclude=外卖 ttl=30 weight=2.5", "event 周末 button=weekend ttl=7",
     "activity 活跃 5/7d group=-100 silent=14", "keyword 'a b' 'x y'"],
)  # fmt: skip
def test_a_rules_text_reads_back_as_the_same_rule(text):
    fields = parse_rule(text)
    row = TagRule(**fields, active=True)
    assert parse_rule(rule_line(row)) == fields


def test_language_switch_is_remembered_for_the_staff_member(served):
    server, db, _ = served
    manager = login(server.url, MANAGER)
    assert "营销活动" in manager.get("/console/campaigns").text
    manager.post("/console/locale", data={"locale": "en", "next": "/console", "csrf": manager.csrf})
    assert "New campaign" in manager.get("/console/campaigns").text
    again = login(server.url, MANAGER)  # a new session keeps the choice
    assert 'lang="en"' in again.get("/console").text
    with db.sessions() as s:
        assert (
            s.scalars(select(StaffUser.locale).where(StaffUser.username == "maria")).one() == "en"
        )


def test_dashboard_charts_carry_the_database_numbers(served):
    server, db, ids = served
    now = SystemClock().now()
    with db.transaction() as s:
        s.get(Customer, ids["ann"]).last_active_at = now - timedelta(days=2)
        s.get(Customer, ids["bo"]).last_active_at = now - timedelta(days=20)
    manager = login(server.url, MANAGER)
    html = manager.get("/console?days=7").text
    channels = chart_option(html, "chart-channels")["series"][0]["data"]
    assert {d["name"]: d["value"] for d in channels} == {"sandbox": 2, "telegram": 1}
    tags = chart_option(html, "chart-tags")
    assert dict(zip(tags["yAxis"]["data"], tags["series"][0]["data"], strict=True)) == {
        "早餐": 2,
        "周末出游": 1,
    }
    assert re.search(r'id="n-active7">2<', html) and re.search(r'id="n-active30">3<', html)
    assert len(chart_option(html, "chart-messages")["xAxis"]["data"]) == 7
    with db.sessions() as s:
        assert s.scalar(select(func.count()).select_from(CustomerTag)) == 3


def test_scenario_funnel_per_day(served):
    server, db, _ = served
    with db.transaction() as s:
        scenario = Scenario(name="morning_offer", enabled=True, definition={})
        s.add(scenario)
        s.flush()
        s.add(ScenarioRun(scenario_id=scenario.id, timezone="Asia/Shanghai",
                          local_date="2026-03-05", status="sent", queued=3, dropped=1,
                          reason="opt_out=1"))  # fmt: skip
    manager = login(server.url, MANAGER)
    assert "/console/scenarios/morning_offer" in manager.get("/console/campaigns").text
    html = manager.get("/console/scenarios/morning_offer").text
    assert re.search(r'id="n-targeted">4<', html)
    assert "2026-03-05" in html and "已退订 1" in html
    assert manager.get("/console/scenarios/nope").status_code == 404


def test_a_draft_is_edited_and_a_started_campaign_is_not(served):
    server, db, _ = served
    manager = login(server.url, MANAGER)
    manager.post(
        "/console/campaigns/new",
        data={"name": "autumn", "segment": "tag:早餐", "text": "hi", "csrf": manager.csrf},
    )
    with db.sessions() as s:
        campaign_id = s.scalars(select(Campaign.id).where(Campaign.name == "autumn")).one()
    form = manager.get(f"/console/campaigns/{campaign_id}/edit").text
    assert 'value="autumn"' in form and "readonly" in form and ">hi</textarea>" in form
    bad = manager.post(
        f"/console/campaigns/{campaign_id}/edit",
        data={"segment": "tag:早餐 and", "text": "hi", "csrf": manager.csrf},
    )
    assert bad.status_code == 400
    manager.post(
        f"/console/campaigns/{campaign_id}/edit",
        data={
            "segment": "tag:周末出游",
            "template": "weekend_trip",
            "holdout": "10%",
            "at": "09:30",
            "csrf": manager.csrf,
        },
    )
    with db.sessions() as s:
        campaign = s.get(Campaign, campaign_id)
        assert campaign.segment == "tag:周末出游" and campaign.holdout_share == 0.1
        assert campaign.variants["items"][0]["template"] == "weekend_trip"
        assert campaign.buttons["local_time"] == "09:30:00"
    manager.post(f"/console/campaigns/{campaign_id}/launch", data={"csrf": manager.csrf})
    refused = manager.post(
        f"/console/campaigns/{campaign_id}/edit",
        data={"segment": "tag:早餐", "text": "x", "csrf": manager.csrf},
    )
    assert refused.status_code == 400 and "only a draft can be edited" in refused.text
    with db.sessions() as s:
        assert s.get(Campaign, campaign_id).segment == "tag:周末出游"
