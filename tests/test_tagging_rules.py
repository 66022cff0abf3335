"""Keyword, event and activity rules tag the right customers, with sources and expiry."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest
from sqlalchemy import select

from bot.app.config import ActivityRule, EventRule, KeywordRule
from bot.customers.segments import count_segment
from bot.customers.tagging import KeywordMatcher, TaggingRules, apply_event_rules
from scheduler.customer_jobs import purge_expired_tags
from storage.models import CustomerTag
from storage.repos import find_identity, tags_of
from tests.support import SandboxHarness


@pytest.fixture
def tagging_config(config):
    tagging = replace(
        config.tagging,
        keywords=[
            KeywordRule(tag="母婴", keywords=["宝宝", "Baby"], exclude=["宝宝巴士"], ttl_days=30),
            KeywordRule(tag="早餐", keywords=["早餐"]),
        ],
        events=[
            EventRule(tag="社群成员", trigger="join", value="group-1"),
            EventRule(tag="辅食兴趣", trigger="button", value="fushi*", ttl_days=14),
            EventRule(tag="海报A", trigger="scene", value="poster-a"),
            EventRule(tag="券达人", trigger="coupon", value="*"),
        ],
        activity=[ActivityRule(tag="活跃", min_messages=3, days=7, group="*", silent_days=30)],
    )
    return config.replace(tagging=tagging)


@pytest.fixture
def harness(tagging_config, sqlite_db, clock):
    return SandboxHarness(tagging_config, sqlite_db, clock)


def tags(h: SandboxHarness, user: str) -> dict[str, tuple[str, object]]:
    with h.db.sessions() as s:
        identity = find_identity(s, "sandbox", user)
        if identity is None:
            return {}
        return {
            t.tag.name: (t.source, t.expires_at)
            for t in tags_of(s, identity.customer_id, h.runtime.clock.now())
        }


async def test_keyword_rules_tag_with_source_and_expiry_and_respect_exclusions(harness, clock):
    await harness.say("u1", "我家宝宝要吃辅食")
    await harness.say("u2", "宝宝巴士的动画片")
    await harness.say("u3", "any BABY clothes? 还有早餐")
    now = clock.now()
    assert tags(harness, "u1") == {"母婴": ("rule:keyword:0", now + timedelta(days=30))}
    assert tags(harness, "u2") == {}
    assert tags(harness, "u3") == {
        "母婴": ("rule:keyword:0", now + timedelta(days=30)),
        "早餐": ("rule:keyword:1", None),
    }


async def test_manager_adds_and_deletes_a_keyword_rule_by_command(harness):
    await harness.say("manager", '/rule add keyword 露营 帐篷,"camping gear" exclude=二手 ttl=7')
    await harness.say("c1", "想买个帐篷")
    await harness.say("c2", "二手帐篷有吗")
    await harness.say("c3", "Camping Gear on sale?")
    assert tags(harness, "c1")["露营"][0] == "rule:db:1"
    assert "露营" not in tags(harness, "c2")
    assert "露营" in tags(harness, "c3")
    await harness.say("manager", "/rule list")
    await harness.say("manager", "/rule del 1")
    await harness.say("c4", "想买个帐篷")
    assert "露营" not in tags(harness, "c4")
    await harness.deliver()
    replies = await harness.bot_messages("manager")
    assert replies[0].startswith(
        "已添加打标签规则 #1 keyword 露营: 帐篷,camping gear exclude=二手 ttl=7"
    )
    assert "#1 keyword 露营" in replies[1]
    assert replies[2].startswith("已停用打标签规则 #1")


async def test_a_bad_rule_command_gets_a_precise_reply(harness):
    await harness.say("manager", "/rule add event 兴趣 press=x")
    await harness.say("manager", "/rule add activity 活跃 five/7d")
    await harness.say("manager", "/rule del 99")
    await harness.deliver()
    assert await harness.bot_messages("manager") == [
        "操作未完成：write the event as <trigger>=<value> with trigger one of "
        "join, button, scene, coupon, link (value * = any), got 'press=x'",
        "操作未完成：write activity as <messages>/<days>d, e.g. 5/7d, got 'five/7d'",
        "操作未完成：no active rule #99 (see /rule list)",
    ]


async def test_event_rules_tag_joins_buttons_and_scenes(harness, clock):
    sandbox = harness.sandbox
    await sandbox.receive({"user_id": "j1", "chat_id": "group-1", "join": True})
    await sandbox.receive({"user_id": "b1", "chat_id": "b1", "button_data": "fushi:week1"})
    await sandbox.receive({"user_id": "b2", "chat_id": "b2", "button_data": "other"})
    await harness.say("s1", "/start poster-a")
    now = clock.now()
    assert tags(harness, "j1") == {"社群成员": ("rule:event:0", None)}
    assert tags(harness, "b1") == {"辅食兴趣": ("rule:event:1", now + timedelta(days=14))}
    assert tags(harness, "b2") == {}
    assert tags(harness, "s1") == {"海报A": ("rule:event:2", None)}
    with harness.db.transaction() as s:  # a coupon redemption, reported by that feature
        customer_id = find_identity(s, "sandbox", "b2").customer_id
        given = apply_event_rules(
            s, TaggingRules(harness.runtime.config), customer_id, "coupon", "Z1", now
        )
    assert given == ["券达人"]
    assert tags(harness, "b2") == {"券达人": ("rule:event:3", None)}


async def test_activity_rule_tags_active_members_and_drops_them_after_silence(harness, clock):
    for i in range(2):
        await harness.say("a1", f"hello {i}", chat="group-1")
        clock.advance(timedelta(days=2))
    await harness.say("a1", "private chat does not count")
    assert "活跃" not in tags(harness, "a1")
    await harness.say("a1", "third group message", chat="group-1")
    tagged_at = clock.now()
    assert tags(harness, "a1")["活跃"] == ("rule:activity:0", tagged_at + timedelta(days=30))
    config = harness.runtime.config
    with harness.db.sessions() as s:
        assert count_segment(s, "tag:活跃", config=config, now=clock.now()) == 1
    clock.advance(timedelta(days=31))
    assert "活跃" not in tags(harness, "a1")
    with harness.db.sessions() as s:
        assert count_segment(s, "tag:活跃", config=config, now=clock.now()) == 0
    with harness.db.transaction() as s:
        assert purge_expired_tags(s, clock.now()) == 1
        assert s.scalars(select(CustomerTag)).all() == []


async def test_segment_command_counts_and_explains_errors(harness):
    await harness.say("p1", "宝宝", name="小美")
    await harness.say("p2", "早餐", name="Bob")
    await harness.say("manager", "/segment tag:母婴 or tag:早餐")
    await harness.say("manager", "/segment tag:母婴 and")
    await harness.say("manager", "/segment save mom tag:母婴")
    await harness.say("manager", "/segment segment:mom")
    await harness.say("p1", "/segment tag:母婴")  # not a manager: not run
    await harness.deliver()
    replies = await harness.bot_messages("manager")
    assert replies[0] == "分群「tag:母婴 or tag:早餐」共 2 位客户。\n示例：小美、Bob"
    assert replies[1].startswith("操作未完成：expected a condition such as tag:母婴")
    assert replies[1].endswith("tag:母婴 and\n            ^")
    assert replies[2].startswith("已保存分群 mom（tag:母婴），当前 1 位客户")
    assert replies[3].startswith("分群「segment:mom」共 1 位客户。")
    assert not any("分群" in m for m in await harness.bot_messages("p1"))


def test_keyword_matcher_matches_overlapping_keywords_in_one_pass():
    rules = [KeywordRule(tag=f"t{i}", keywords=[f"词{i}", "共享"]) for i in range(50)]
    matcher = KeywordMatcher(rules)
    hits = matcher.match("这里有词7和词49，还有共享")
    assert [h.tag for h in hits] == [f"t{i}" for i in range(50)]
    assert [h.tag for h in matcher.match("词7词4")] == ["t4", "t7"]


async def test_segment_command_in_a_group_shows_no_names(harness):
    await harness.say("p1", "宝宝", name="小美")
    await harness.say("manager", "/segment tag:母婴", chat="group-1")
    await harness.deliver()
    assert await harness.bot_messages("group-1") == [
        "🔒 /segment 的结果含个人或经营数据，已私信发给您。没收到？请先私聊我发送 /start。"
    ]
    (private,) = await harness.bot_messages("manager")
    assert private.startswith("分群「tag:母婴」共 1 位客户。") and "小美" not in private
