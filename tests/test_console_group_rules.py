"""A group's moderation rules in the console over real HTTP: listed per group, edited in a
form with the same checks as ``/mod`` (a refused field comes back at its place, in zh-CN
and en, with what was typed and nothing stored); managers only, with the form token; and a
rule saved in the console changes what moderation does to a group message in the sandbox."""

from __future__ import annotations

import re

from sqlalchemy import select

from bot.groups import moderation
from storage import repos
from storage.groups import GroupModeration, ModerationAction
from storage.handoff import AuditEntry
from storage.models import Group
from tests.console_support import MANAGER, STAFF, build_console, login
from tests.support import LiveServer, SandboxHarness
from tests.test_console_group_forms import error_at
from tests.test_console_measures import served as served_console
from tests.test_console_measures import speak

#: a served console with maria (manager) and sam (staff)
served = served_console

RULES = {"links_days": "3", "flood_count": "5", "flood_seconds": "10",
         "flood_mute_minutes": "30", "captcha_minutes": "0", "banned_words": "代购\n刷单, Spam",
         "warn_limit": "2", "warn_mute_minutes": "120"}  # fmt: skip


def _group(db, channel: str = "telegram", external_id: str = "-100", title: str = "会员群") -> int:
    with db.transaction() as s:
        return repos.ensure_group(s, channel, external_id, title).id


def _rules(db, group_id: int) -> dict | None:
    with db.sessions() as s:
        row = s.get(GroupModeration, group_id)
        return dict(row.settings) if row is not None else None


def test_a_groups_rules_are_listed_edited_and_stored_as_mod_stores_them(served):
    server, db, _ = served
    group_id = _group(db)
    manager = speak(login(server.url, MANAGER), "en")
    listed = manager.get("/console/groups").text
    row = re.search(rf'<tr data-group-id="{group_id}">(.*?)</tr>', listed, re.S).group(1)
    assert "会员群" in row and "telegram:-100" in row and 'data-rule="links"' in row
    assert re.search(r'data-rule="flood"><span class="muted">off', row)
    form = manager.get(f"/console/groups?mod={group_id}").text
    assert f'action="/console/groups/{group_id}/moderation"' in form
    assert 'name="warn_limit" id="mod-warn_limit" value="3"' in form  # the defaults shown
    answer = manager.post(f"/console/groups/{group_id}/moderation",
                          data={**RULES, "csrf": manager.csrf})  # fmt: skip
    assert answer.status_code == 303 and answer.headers["location"] == "/console/groups"
    assert _rules(db, group_id) == {
        "links_days": 3, "flood_count": 5, "flood_seconds": 10, "flood_mute_minutes": 30,
        "captcha_minutes": 0, "banned_words": ["代购", "刷单", "spam"], "warn_limit": 2,
        "warn_mute_minutes": 120,
    }  # fmt: skip
    with db.sessions() as s:
        settings = moderation.settings_of(s, group_id)  # what the rules on messages read
        assert settings.banned_words == ("代购", "刷单", "spam") and settings.links_days == 3
        audit = s.scalars(select(AuditEntry).where(AuditEntry.action == "mod_settings")).one()
        assert audit.actor == MANAGER[0] and audit.detail["group"] == "telegram:-100"
        stored = s.get(GroupModeration, group_id)
        assert stored.updated_by == f"console:{MANAGER[0]}"
    page = manager.get("/console/groups").text
    assert "Saved the moderation rules of “会员群”" in page
    row = re.search(rf'<tr data-group-id="{group_id}">(.*?)</tr>', page, re.S).group(1)
    assert "5 in 10 s → muted 30 min" in row and "代购、刷单、spam" in row
    assert "deleted within 3 days of joining" in row
    # the form shows what is stored; "off" turns a rule off as /mod does
    form = manager.get(f"/console/groups?mod={group_id}").text
    assert "代购\n刷单\nspam</textarea>" in form
    off = {
        **RULES,
        "links_days": "off",
        "flood_count": "0",
        "banned_words": "",
        "csrf": manager.csrf,
    }
    assert manager.post(f"/console/groups/{group_id}/moderation", data=off).status_code == 303
    stored = _rules(db, group_id)
    assert (stored["links_days"], stored["flood_count"], stored["banned_words"]) == (0, 0, [])


def test_each_bad_field_is_refused_at_its_place_and_nothing_is_stored(served):
    server, db, _ = served
    group_id = _group(db)
    manager = speak(login(server.url, MANAGER), "en")
    url = f"/console/groups/{group_id}/moderation"
    bad_values = {
        "links_days": ("400", "days must be a whole number from 1 to 365, or 0 (off)."),
        "flood_count": ("1", "messages must be a whole number from 2 to 100, or 0 (off)."),
        "flood_seconds": ("0", "seconds must be a whole number from 1 to 3600."),
        "flood_mute_minutes": ("soon", "minutes must be a whole number from 1 to 527040."),
        "captcha_minutes": ("1441", "minutes must be a whole number from 1 to 1440, or 0 (off)."),
        "warn_limit": ("11", "warnings must be a whole number from 1 to 10."),
        "warn_mute_minutes": ("", "minutes must be a whole number from 1 to 527040."),
        "banned_words": ("x" * 51, "A banned word has at most 50 characters."),
    }
    for field, (value, text) in bad_values.items():
        answer = manager.post(url, data={**RULES, field: value, "csrf": manager.csrf})
        assert answer.status_code == 400, field
        assert error_at(answer.text, field) == text
        assert 'id="mod-error"' in answer.text
        # the form stays open with what was typed
        typed = f">{value}</textarea>" if field == "banned_words" else f'value="{value}"'
        assert f'name="{field}" id="mod-{field}"' in answer.text and typed in answer.text
    many = "\n".join(f"w{i}" for i in range(201))
    answer = manager.post(url, data={**RULES, "banned_words": many, "csrf": manager.csrf})
    assert error_at(answer.text, "banned_words") == "At most 200 banned words."
    zh = speak(manager, "zh-CN").post(
        url, data={**RULES, "flood_seconds": "x", "csrf": manager.csrf}
    )
    assert zh.status_code == 400
    assert error_at(zh.text, "flood_seconds") == "秒数 需是 1 到 3600 之间的整数。"
    assert _rules(db, group_id) is None
    # an unknown group: a refusal, nothing stored anywhere
    missing = manager.post(
        "/console/groups/999999/moderation", data={**RULES, "csrf": manager.csrf}
    )
    assert missing.status_code == 303
    assert "没有编号为 #999999 的群" in manager.get("/console/groups").text
    with db.sessions() as s:
        assert s.scalar(select(GroupModeration.group_id)) is None


def test_only_managers_with_the_form_token_may_change_rules(served):
    server, db, _ = served
    group_id = _group(db)
    url = f"/console/groups/{group_id}/moderation"
    staff = login(server.url, STAFF)
    refused = staff.post(url, data={**RULES, "csrf": staff.csrf})
    assert refused.status_code == 403 and 'id="forbidden"' in refused.text
    assert staff.get(f"/console/groups?mod={group_id}").status_code == 403
    manager = login(server.url, MANAGER)
    assert manager.post(url, data=RULES).status_code == 403  # no form token
    assert manager.post(url, data={**RULES, "csrf": "forged"}).status_code == 403
    assert _rules(db, group_id) is None


def test_the_group_list_is_searchable_and_bounded(served):
    server, db, _ = served
    for i in range(3):
        _group(db, "sandbox", f"g{i}", f"读书会{i}")
    _group(db, "telegram", "-100", "会员群")
    manager = speak(login(server.url, MANAGER), "en")
    page = manager.get("/console/groups", params={"q": "读书"}).text
    assert page.count("<tr data-group-id=") == 3 and "会员群" not in page
    assert (
        manager.get("/console/groups", params={"q": "-100"}).text.count("<tr data-group-id=") == 1
    )
    assert (
        manager.get("/console/groups", params={"q": "100%_"}).text.count("<tr data-group-id=") == 0
    )
    assert 'id="no-groups"' in manager.get("/console/groups", params={"q": "x" * 5000}).text


async def test_a_rule_saved_in_the_console_changes_what_moderation_does(config, sqlite_db, clock):
    h = SandboxHarness(config, sqlite_db, clock)
    app = build_console(config, sqlite_db)
    # Before: a message with the word passes.
    await h.say("zoe", "要代购吗", chat="group-1", name="Zoe")
    with sqlite_db.sessions() as s:
        group = s.scalars(select(Group).where(Group.external_id == "group-1")).one()
        assert s.scalar(select(ModerationAction.id)) is None
    with LiveServer(app) as server:
        manager = login(server.url, MANAGER)
        answer = manager.post(f"/console/groups/{group.id}/moderation",
                              data={**RULES, "banned_words": "代购", "csrf": manager.csrf})  # fmt: skip
        assert answer.status_code == 303
    # After: the same message is reported for deletion and its sender warned (sandbox: the
    # bot cannot delete, so the managers are told).
    await h.say("zoe", "要代购吗", chat="group-1", name="Zoe")
    await h.deliver()
    with sqlite_db.sessions() as s:
        done = [(a.action, a.reason, a.user_id) for a in s.scalars(select(ModerationAction))]
    assert done == [("report", "banned_word", "zoe"), ("warn", "banned_word", "zoe")]
    report = (await h.bot_messages("manager"))[0]
    assert "Zoe（zoe）" in report and "代购" in report
