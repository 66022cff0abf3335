"""The console's Measures and Groups pages over real HTTP against a served Siyu: the
figures are those of bot/measures (as ``siyu measures`` prints them), the cohort heatmap,
the AARRR funnel with its biggest loss, survey results by channel, staff and month, a
segment filter and its refusals; SOP plans paused, resumed and deleted, FAQ entries
deleted and the moderation log, with the same functions as the chat commands; and the
nightly job filling the dashboard's rollup."""

from __future__ import annotations

import json
import re
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import func, select

from bot.app.services import Services
from bot.core.clock import SystemClock
from bot.core.templating import Renderer
from bot.groups import faq, sop
from bot.measures import loyalty, surveys
from bot.measures.periods import parse_period
from bot.web.console.queries import roll_up
from storage import repos
from storage.console import DailyCount
from storage.groups import FaqEntry, GroupPost, SopPlan
from storage.handoff import AuditEntry
from storage.models import Customer, Interaction
from tests.console_measures_support import seed_groups, seed_measures
from tests.console_support import MANAGER, STAFF, build_console, login
from tests.support import LiveServer

ZONE = "Asia/Shanghai"


def chart_option(html: str, chart_id: str) -> dict:
    found = re.search(rf'<script type="application/json" id="{chart_id}">(.*?)</script>', html)
    assert found, chart_id
    return json.loads(found.group(1))


@pytest.fixture
def served(config, sqlite_db):
    app = build_console(config, sqlite_db)
    with LiveServer(app) as server:
        yield server, sqlite_db, app


def speak(client: httpx.Client, locale: str) -> httpx.Client:
    """The manager's console language, chosen as on the page."""
    client.post("/console/locale", data={"locale": locale, "next": "/console", "csrf": client.csrf})
    return client


def _pct(value) -> str:
    return "—" if value is None else f"{value * 100:.1f}%"


def test_only_managers_see_the_two_pages_and_their_actions(served):
    server, db, _ = served
    anonymous = httpx.Client(base_url=server.url, follow_redirects=False)
    staff = login(server.url, STAFF)
    for path in ("/console/measures", "/console/groups"):
        answer = anonymous.get(path)
        assert answer.status_code == 303 and answer.headers["location"] == "/inbox/login"
        refused = staff.get(path)
        assert refused.status_code == 403 and 'id="forbidden"' in refused.text
    with db.transaction() as s:
        repos.ensure_group(s, "telegram", "-100", "会员群")
        sop.create_plan(s, sop.parse_plan("m daily 09:30 to=all | 早", Renderer()),
                        config=served[2].runtime.config, now=SystemClock().now(),
                        created_by="t")  # fmt: skip
    # A staff member cannot pause a plan even with a valid form token.
    answer = staff.post("/console/groups/sop/m/pause", data={"csrf": staff.csrf})
    assert answer.status_code == 403
    answer = staff.post("/console/groups/sop/m/delete", data={"csrf": staff.csrf})
    assert answer.status_code == 403
    with db.sessions() as s:
        assert sop.find_plan(s, "m").status == "active"


def test_measures_page_shows_the_figures_of_bot_measures(served):
    server, db, app = served
    config = app.runtime.config
    now = SystemClock().now()
    ids = seed_measures(db, now)
    manager = speak(login(server.url, MANAGER), "en")
    answer = manager.get("/console/measures?days=30")
    assert answer.status_code == 200
    html = answer.text
    period = parse_period(None, None, zone=config.general.timezone, now=now, default_days=30)
    with db.sessions() as s:
        figures = loyalty.loyalty(s, period, config=config, now=now)
        chain = loyalty.aarrr(s, period, config=config, now=now)
        nps = surveys.results(s, "nps", period, config=config, now=now)
    # In the last 30 days: buyers A (twice) and C → repeat rate 1/2.
    assert (figures.buyers, figures.repeat_buyers) == (2, 1)
    assert 'id="counted-at"' in html  # the whole community's figures say when they were counted
    assert re.search(r'id="m-repeat">50\.0%<', html)
    assert f'id="m-retention">{_pct(figures.retention_rate)}<' in html
    # New in 30 days: C, D, E; D came through A's invite → 1/3.
    assert f'id="m-referral">{_pct(figures.referral_rate)}<' in html
    assert figures.referral_rate == 0.3333 and 'id="m-referral">33.3%<' in html
    # The AARRR funnel carries the chain's counts in order, and the biggest loss is named.
    funnel = chart_option(html, "chart-aarrr")["series"][0]
    assert funnel["type"] == "funnel"
    assert [d["value"] for d in funnel["data"]] == [s["customers"] for s in chain.steps]
    assert funnel["data"][0] == {"name": "Acquired", "value": 3}
    assert chain.biggest_loss is not None
    loss = re.search(r'id="biggest-loss">(.*?)</p>', html).group(1)
    assert "losing the most" in loss
    assert f'data-step="{chain.biggest_loss}" class="worst"' in html
    # NPS overall: promoters A, B (10, 9), detractor C (3), passive D (8) → (2-1)/4 = +25.
    assert nps.overall["nps"] == 25.0
    section = html[html.index('id="survey-nps"') :]
    section = section[: section.index("</section>")]
    assert 'data-figure="score">+25.0<' in section
    assert 'data-figure="responses">4<' in section and 'data-figure="flagged">1<' in section
    by_channel = section[section.index('data-group="by_channel"') :]
    assert re.search(r'data-key="telegram">.*?>\+100\.0<', by_channel)
    assert re.search(r'data-key="wechat_oa">.*?>-50\.0<', by_channel)
    by_staff = section[section.index('data-group="by_staff"') :]
    assert 'data-key="lin"' in by_staff and 'data-key="wu"' in by_staff
    assert 'data-key="-"' not in by_staff
    # The CSAT survey is shown as a share of satisfied answers.
    csat = html[html.index('id="survey-csat"') :]
    assert 'data-figure="score">100.0%<' in csat[: csat.index("</section>")]
    # Chinese for a Chinese reader.
    zh = speak(manager, "zh-CN").get("/console/measures?days=30").text
    assert "重复购买率" in zh and "流失最多的一步" in zh
    assert ids


def test_cohort_heatmap_and_the_longer_period(served):
    server, db, app = served
    config = app.runtime.config
    now = SystemClock().now()
    seed_measures(db, now)
    manager = speak(login(server.url, MANAGER), "en")
    html = manager.get("/console/measures?days=365").text
    assert 'value="365" checked' in html
    period = parse_period(None, None, zone=config.general.timezone, now=now, default_days=365)
    with db.sessions() as s:
        report = loyalty.cohorts(s, period, config=config, now=now, months=12)
    heat = chart_option(html, "chart-cohorts")
    assert heat["series"][0]["type"] == "heatmap"
    assert heat["yAxis"]["data"] == [f"{r['cohort']} ({r['size']})" for r in report.cohorts]
    assert len(heat["xAxis"]["data"]) == 13 and heat["xAxis"]["data"][0] == "Month 0"
    # Each cohort's first month is 100%; no cell lies in a month still to come.
    firsts = {y: v for x, y, v in heat["series"][0]["data"] if x == 0}
    assert firsts and set(firsts.values()) == {100.0}
    local = now.astimezone(ZoneInfoShanghai())
    current = local.year * 12 + local.month - 1
    for x, y, _ in heat["series"][0]["data"]:
        year, month = report.cohorts[y]["cohort"].split("-")
        assert int(year) * 12 + int(month) - 1 + x <= current
    # An unknown period falls back to 30 days.
    assert 'value="30" checked' in manager.get("/console/measures?days=12").text


def ZoneInfoShanghai():
    from zoneinfo import ZoneInfo

    return ZoneInfo(ZONE)


def test_a_segment_narrows_every_figure_and_bad_ones_are_refused(served):
    server, db, app = served
    config = app.runtime.config
    now = SystemClock().now()
    seed_measures(db, now)
    manager = speak(login(server.url, MANAGER), "en")
    html = manager.get(
        "/console/measures", params={"days": "30", "segment": "city:杭州"},
    ).text  # fmt: skip
    period = parse_period(None, None, zone=config.general.timezone, now=now, default_days=30)
    with db.sessions() as s:
        figures = loyalty.loyalty(s, period, config=config, now=now, segment="city:杭州")
        nps = surveys.results(s, "nps", period, config=config, now=now, segment="city:杭州")
    assert (figures.buyers, figures.new_customers) == (2, 1)
    assert f'id="m-referral">{_pct(figures.referral_rate)}<' in html
    assert 'value="city:杭州"' in html and 'id="counted-at"' not in html  # counted live
    # Only A (10) and C (3) answered in 杭州: (1 - 1) / 2 = 0.
    assert nps.overall["responses"] == 2
    section = html[html.index('id="survey-nps"') :]
    assert 'data-figure="responses">2<' in section
    # A malformed segment: a clear message, a 400, no figures and nothing lost.
    bad = manager.get("/console/measures", params={"segment": "city:"})  # fmt: skip
    assert bad.status_code == 400
    assert 'id="measures-error"' in bad.text and 'id="m-repeat"' not in bad.text
    assert 'value="city:"' in bad.text
    # A segment over the bound is refused before any query.
    long = manager.get("/console/measures", params={"segment": "tag:x or " * 300})
    assert long.status_code == 400 and "2000" in long.text


def test_dashboard_tile_shows_repeat_rate_and_nps(served):
    server, db, _ = served
    now = SystemClock().now()
    seed_measures(db, now)
    manager = speak(login(server.url, MANAGER), "en")
    html = manager.get("/console").text
    tile = re.search(r'id="tile-repeat"><div class="num">(.*?)</div>', html).group(1)
    assert tile == "50.0%"
    assert re.search(r'id="tile-nps"><div class="num">\+25\.0</div>', html)
    assert 'href="/console/measures" id="tile-repeat"' in html
    assert 'data-nav="measures"' in html and 'data-nav="groups"' in html


def test_groups_page_lists_plans_faq_and_the_log(served):
    server, db, app = served
    config = app.runtime.config
    seed_groups(db, config, SystemClock().now())
    manager = speak(login(server.url, MANAGER), "en")
    html = manager.get("/console/groups").text
    row = re.search(r'<tr data-plan="morning" data-status="active">(.*?)</tr>', html, re.S).group(1)
    assert "daily 09:30" in row and ">active<" in row
    assert 'data-figure="posts">2<' in row and 'data-figure="clicks">8<' in row
    sub = html[html.index('data-plan-groups="morning"') :]
    assert 'data-group="telegram:-100"' in sub and "会员群" in sub
    assert 'data-action="pause"' in row
    faq_row = next(
        r for r in re.findall(r'<tr data-entry="\d+">(.*?)</tr>', html, re.S) if "几点发货" in r
    )
    assert 'data-figure="hits">7<' in faq_row
    log = html[html.index('id="mod-log"') :]
    assert 'data-action="warn"' in log and "Q (7)" in log and "maria" in log
    zh = speak(manager, "zh-CN").get("/console/groups").text
    assert "定时群发" in zh and "常见问题自动回复" in zh and "暂停" in zh


def test_pause_resume_delete_a_plan_and_delete_an_faq_entry(served):
    server, db, app = served
    config = app.runtime.config
    seed_groups(db, config, SystemClock().now())
    manager = speak(login(server.url, MANAGER), "en")
    answer = manager.post("/console/groups/sop/morning/pause", data={"csrf": manager.csrf})
    assert answer.status_code == 303 and answer.headers["location"] == "/console/groups"
    with db.sessions() as s:
        assert sop.find_plan(s, "morning").status == "paused"
    page = manager.get("/console/groups").text
    assert 'data-plan="morning" data-status="paused"' in page and 'id="flash"' in page
    manager.post("/console/groups/sop/morning/resume", data={"csrf": manager.csrf})
    with db.sessions() as s:
        assert sop.find_plan(s, "morning").status == "active"
    # Without the form token nothing changes.
    refused = manager.post("/console/groups/sop/morning/delete", data={})
    assert refused.status_code == 403
    with db.sessions() as s:
        assert sop.find_plan(s, "morning") is not None
    manager.post("/console/groups/sop/morning/delete", data={"csrf": manager.csrf})
    with db.sessions() as s:
        assert sop.find_plan(s, "morning") is None
        assert s.scalar(select(func.count()).select_from(GroupPost)) == 0
        assert s.scalar(select(func.count()).select_from(SopPlan)) == 1
        assert s.scalar(select(AuditEntry.action).where(AuditEntry.action == "sop_delete"))
    # An unknown plan or action: a clear refusal, nothing lost.
    manager.post("/console/groups/sop/nosuch/pause", data={"csrf": manager.csrf})
    page = manager.get("/console/groups").text
    assert 'class="flash error"' in page and "nosuch" in page
    assert manager.post("/console/groups/sop/weekly/explode",
                        data={"csrf": manager.csrf}).status_code == 404  # fmt: skip
    with db.sessions() as s:
        entry_id = s.scalars(select(FaqEntry.id).where(FaqEntry.question == "怎么退货")).one()
    manager.post(f"/console/groups/faq/{entry_id}/delete", data={"csrf": manager.csrf})
    with db.sessions() as s:
        assert [e.question for e in faq.list_entries(s)] == ["几点发货"]
    manager.post(f"/console/groups/faq/{entry_id}/delete", data={"csrf": manager.csrf})
    assert 'class="flash error"' in manager.get("/console/groups").text
    assert manager.post("/console/groups/faq/x1/delete",
                        data={"csrf": manager.csrf}).status_code == 400  # fmt: skip


def test_nightly_job_fills_yesterdays_rollup(served):
    _, db, app = served
    from scheduler import jobs

    now = SystemClock().now()
    runtime = app.runtime
    jobs.bind(Services(db, runtime.config, runtime.renderer, runtime.clock))
    with db.transaction() as s:  # two messages yesterday (noon in Shanghai), one today
        c = Customer(display_name="Z", created_at=now - timedelta(days=3))
        s.add(c)
        s.flush()
        local = now.astimezone(ZoneInfoShanghai())
        noon = (local - timedelta(days=1)).replace(hour=12, minute=0)
        for i, when in enumerate([noon, noon + timedelta(minutes=5), now]):
            s.add(Interaction(customer_id=c.id, event_id=f"n{i}", channel="sandbox",
                              chat_id="z", kind="message", text="", payload={},
                              occurred_at=when))  # fmt: skip
    with db.sessions() as s:
        assert s.scalar(select(func.count()).select_from(DailyCount)) == 0
    try:
        jobs.nightly_customers()
    finally:
        jobs.bind(None)
    yesterday = (now.astimezone(ZoneInfoShanghai()) - timedelta(days=1)).date().isoformat()
    with db.sessions() as s:
        done = s.scalars(select(DailyCount.day).where(DailyCount.metric == "_done")).all()
    assert yesterday in done and len(done) == 90
    today = now.astimezone(ZoneInfoShanghai()).date().isoformat()
    assert today not in done
    with db.sessions() as s:
        inbound = dict(
            s.execute(
                select(DailyCount.day, DailyCount.value).where(DailyCount.metric == "inbound")
            ).all()
        )
    assert inbound == {yesterday: 2}
    # The dashboard then reads the rollup: a second run has nothing left to count.
    with db.transaction() as s:
        assert roll_up(s, ZoneInfoShanghai(), now) == 0
