"""The groups' storage paths on SQLite and PostgreSQL: FAQ cool-downs and hits, warnings,
newcomer checks claimed once, SOP slots claimed once, the moderation log."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bot.app.config import load_config
from bot.app.services import Services
from bot.core.clock import FakeClock
from bot.core.templating import Renderer
from bot.groups import faq, moderation, sop
from storage import repos
from storage.groups import FaqEntry, GroupWarning, NewcomerCheck

NOW = datetime(2026, 3, 6, 1, 0, tzinfo=UTC)


def test_faq_hits_and_cool_down(db):
    config = load_config(None, environ={})
    with db.transaction() as s:
        spec = faq.parse_faq("几点发货 keywords=发货 groups=always cooldown=60 | 16:00 前", Renderer(), config)  # fmt: skip
        entry_id = faq.add_entry(s, spec, config=config, now=NOW, created_by="t").id
    asks = {"channel": "telegram", "chat_id": "-1", "in_group": True, "mentions_bot": False}
    for offset, cooling in ((0, False), (30, True), (61, False)):
        now = NOW + timedelta(seconds=offset)
        with db.transaction() as s:
            match = faq.find_match(s, text="今天发货吗", now=now, **asks)
            assert match is not None and match.cooling is cooling
            faq.record_answer(s, s.get(FaqEntry, entry_id), "telegram", "-1", now, answered=not cooling)  # fmt: skip
    with db.sessions() as s:
        assert s.get(FaqEntry, entry_id).hits == 3


def test_warnings_newcomer_checks_and_the_log(db):
    config = load_config(None, environ={})
    renderer, clock = Renderer(), FakeClock(NOW)
    with db.transaction() as s:
        group = repos.ensure_group(s, "telegram", "-100", "群")
        moderation.configure(s, group, ["captcha", "5"], "t", NOW)
        moderation.configure(s, group, ["warns", "2", "10"], "t", NOW)
        common = {"group": group, "now": NOW, "config": config, "renderer": renderer}
        assert moderation.warn(s, user_id="7", user_name="Q", reason="manual", actor="t", **common) == (1, False)  # fmt: skip
        assert moderation.warn(s, user_id="7", user_name="Q", reason="manual", actor="t", **common) == (2, True)  # fmt: skip
        assert s.get(GroupWarning, (group.id, "7")).count == 0
        assert moderation.newcomer_joined(s, user_id="8", user_name="N", **common) is not None
        group_id = group.id
    clock.advance(timedelta(minutes=6))
    services = Services(db, config, renderer, clock)
    assert moderation.expire_newcomers(services) == 1
    assert moderation.expire_newcomers(services) == 0
    with db.sessions() as s:
        assert s.get(NewcomerCheck, (group_id, "8")).status == "removed"
        log = moderation.recent_actions(s, group_id)
        assert [a.action for a, _, _ in log] == ["remove", "restrict", "mute", "warn", "warn"]


def test_a_sop_slot_is_claimed_once(db):
    config = load_config(None, environ={})
    renderer, clock = Renderer(), FakeClock(NOW)
    with db.transaction() as s:
        repos.ensure_group(s, "telegram", "-100", "会员群")
        sop.create_plan(s, sop.parse_plan("m daily 09:30 to=all | 早", renderer), config=config, now=NOW, created_by="t")  # fmt: skip
    clock.advance(timedelta(minutes=31))
    services = Services(db, config, renderer, clock)
    assert sop.run_due(services) == {"m": 1}
    with db.transaction() as s:  # another process that read the plan before the first wrote
        sop.find_plan(s, "m").checked_until = NOW
    assert sop.run_due(services) == {}
    with db.sessions() as s:
        (entry,) = sop.plan_report(s, sop.find_plan(s, "m"))
        assert entry["posts"] == 1 and entry["status"] == {"pending": 1}
