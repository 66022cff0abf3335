"""The Groups page's forms over real HTTP: SOP plans and FAQ entries created and edited
with the same checks and functions as ``/sop add`` and ``/faq add``; a refused form comes
back with what was typed and the error at its field (in zh-CN and en); managers only,
with the form token."""

from __future__ import annotations

import re
from datetime import date

from sqlalchemy import select

from bot.core.clock import SystemClock
from bot.groups import faq, sop
from storage import repos
from storage.groups import FaqEntry, SopPlan
from storage.handoff import AuditEntry
from tests.console_measures_support import seed_groups
from tests.console_support import MANAGER, STAFF, login
from tests.test_console_measures import served as served_console
from tests.test_console_measures import speak

#: a served console with maria (manager) and sam (staff), as the Measures page's tests
served = served_console

PLAN = {"name": "evening", "when": "weekdays 20:00", "to": "title:会员*", "channel": "telegram",
        "text": "{{ group }} 晚上好", "template": "", "coupon": "", "button": "", "link": "",
        "from": "2026-01-01", "until": ""}  # fmt: skip
ENTRY = {"question": "怎么开发票", "keywords": "发票,开票", "answer_zh": "在订单页申请",
         "answer_en": "Ask on the order page", "template": "", "where": "groups",
         "groups": "always", "cooldown": "120"}  # fmt: skip


def error_at(html: str, field: str) -> str:
    found = re.search(rf'<div class="live error" data-error-for="{field}">(.*?)</div>', html, re.S)
    assert found, f"no error at {field}"
    return found.group(1)


def test_create_a_plan_and_see_it_listed(served):
    server, db, _ = served
    with db.transaction() as s:
        repos.ensure_group(s, "telegram", "-100", "会员群")
    manager = speak(login(server.url, MANAGER), "en")
    answer = manager.post("/console/groups/sop", data={**PLAN, "csrf": manager.csrf})
    assert answer.status_code == 303 and answer.headers["location"] == "/console/groups"
    with db.sessions() as s:
        plan = sop.find_plan(s, "evening")
        assert plan is not None and plan.status == "active"
        assert (plan.schedule, list(plan.targets), plan.channel) == (
            "weekdays 20:00",
            ["title:会员*"],
            "telegram",
        )
        assert plan.text == "{{ group }} 晚上好" and plan.starts_on == date(2026, 1, 1)
        assert plan.created_by == MANAGER[0]
        assert s.scalar(select(AuditEntry.action).where(AuditEntry.action == "sop_add"))
    page = manager.get("/console/groups").text
    assert 'data-plan="evening" data-status="active"' in page
    assert "Post plan &#39;evening&#39; created" in page and "1 group(s) match" in page


def test_a_bad_schedule_is_shown_at_its_field_and_nothing_is_stored(served):
    server, db, _ = served
    manager = speak(login(server.url, MANAGER), "en")
    bad = {**PLAN, "when": "someday 25:00", "csrf": manager.csrf}
    answer = manager.post("/console/groups/sop", data=bad)
    assert answer.status_code == 400
    assert error_at(answer.text, "when")  # the schedule parser's own words, at "when"
    assert 'id="plan-error"' in answer.text and 'value="someday 25:00"' in answer.text
    assert 'value="title:会员*"' in answer.text  # what was typed is kept
    with db.sessions() as s:
        assert sop.find_plan(s, "evening") is None
    zh = speak(manager, "zh-CN").post(
        "/console/groups/sop", data={**PLAN, "when": "daily", "csrf": manager.csrf}
    )
    assert zh.status_code == 400 and re.search(r"[\u4e00-\u9fff]", error_at(zh.text, "when"))
    # each part's error at its own field
    for field, value in (("to", "nowhere"), ("name", "has space"), ("link", "ftp://x"),
                         ("until", "2025-01-01"), ("coupon", "nosuch")):  # fmt: skip
        answer = manager.post("/console/groups/sop", data={**PLAN, field: value,
                                                           "csrf": manager.csrf})  # fmt: skip
        assert answer.status_code == 400, field
        error_at(answer.text, field)
    # both text and a template: the content error at the text
    both = {**PLAN, "template": "morning_offer", "csrf": manager.csrf}
    error_at(manager.post("/console/groups/sop", data=both).text, "text")


def test_edit_a_plan_in_place(served):
    server, db, app = served
    seed_groups(db, app.runtime.config, SystemClock().now())
    manager = speak(login(server.url, MANAGER), "en")
    form = manager.get("/console/groups?plan=morning").text
    assert "Edit plan &#39;morning&#39;" in form
    assert 'name="editing" value="morning"' in form and 'value="daily 09:30"' in form
    with db.sessions() as s:
        plan_id = sop.find_plan(s, "morning").id
    changed = {**PLAN, "name": "morning", "when": "daily 08:00", "to": "all", "channel": "",
               "text": "早安", "from": "", "editing": "morning", "csrf": manager.csrf}  # fmt: skip
    assert manager.post("/console/groups/sop", data=changed).status_code == 303
    with db.sessions() as s:
        plan = sop.find_plan(s, "morning")
        assert plan.id == plan_id and plan.schedule == "daily 08:00" and plan.text == "早安"
        assert s.scalar(select(AuditEntry.action).where(AuditEntry.action == "sop_edit"))
    # renaming onto another plan's name is refused at the name
    clash = {**changed, "name": "weekly"}
    answer = manager.post("/console/groups/sop", data=clash)
    assert answer.status_code == 400 and "weekly" in error_at(answer.text, "name")
    # a plan deleted meanwhile: a clear refusal, nothing created
    gone = {**changed, "editing": "nosuch", "name": "nosuch"}
    answer = manager.post("/console/groups/sop", data=gone)
    assert answer.status_code == 400 and "nosuch" in answer.text
    with db.sessions() as s:
        assert sorted(p.name for p in s.scalars(select(SopPlan))) == ["morning", "weekly"]


def test_add_and_edit_an_faq_entry(served):
    server, db, _ = served
    manager = speak(login(server.url, MANAGER), "en")
    assert (
        manager.post("/console/groups/faq", data={**ENTRY, "csrf": manager.csrf}).status_code == 303
    )
    with db.sessions() as s:
        entry = s.scalars(select(FaqEntry).where(FaqEntry.question == "怎么开发票")).one()
        assert list(entry.keywords) == ["发票", "开票"] and entry.scope == "groups"
        assert (entry.group_mode, entry.cooldown_seconds) == ("always", 120)
        assert (entry.answer_zh, entry.answer_en) == ("在订单页申请", "Ask on the order page")
        entry.hits = 4
        s.commit()
        entry_id = entry.id
    page = manager.get("/console/groups").text
    assert f'<tr data-entry="{entry_id}">' in page
    form = manager.get(f"/console/groups?faq={entry_id}").text
    assert f'name="editing" value="{entry_id}"' in form and "在订单页申请" in form
    edited = {**ENTRY, "answer_zh": "订单页 → 发票", "editing": str(entry_id), "csrf": manager.csrf}
    assert manager.post("/console/groups/faq", data=edited).status_code == 303
    with db.sessions() as s:
        entry = s.get(FaqEntry, entry_id)
        assert entry.answer_zh == "订单页 → 发票" and entry.hits == 4  # edited in place
        assert len(faq.list_entries(s)) == 1
    # refusals at their fields; nothing changes
    for field, value in (("cooldown", "-5"), ("groups", "sometimes"), ("where", "nowhere"),
                         ("question", "")):  # fmt: skip
        answer = manager.post("/console/groups/faq", data={**edited, field: value})
        assert answer.status_code == 400, field
        error_at(answer.text, field)
    no_answer = {**edited, "answer_zh": "", "answer_en": ""}
    error_at(manager.post("/console/groups/faq", data=no_answer).text, "answer_zh")
    with db.sessions() as s:
        assert s.get(FaqEntry, entry_id).cooldown_seconds == 120


def test_only_managers_with_the_form_token_may_save(served):
    server, db, _ = served
    staff = login(server.url, STAFF)
    assert staff.post("/console/groups/sop", data={**PLAN, "csrf": staff.csrf}).status_code == 403
    assert staff.post("/console/groups/faq", data={**ENTRY, "csrf": staff.csrf}).status_code == 403
    manager = login(server.url, MANAGER)
    assert manager.post("/console/groups/sop", data=PLAN).status_code == 403
    assert manager.post("/console/groups/faq", data=ENTRY).status_code == 403
    with db.sessions() as s:
        assert s.scalar(select(SopPlan.id)) is None and s.scalar(select(FaqEntry.id)) is None
