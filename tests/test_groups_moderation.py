"""Moderation against the Telegram fake over HTTP (real deleteMessage, restrictChatMember,
banChatMember, unbanChatMember calls) and in the sandbox (reports to managers): each
action in the audit log."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from bot.app.services import Services
from bot.groups.moderation import expire_newcomers
from storage.groups import ModerationAction
from storage.handoff import AuditEntry
from storage.models import OutboxMessage
from tests.support import SandboxHarness
from tests.telegram_fake_api import (
    TelegramHarness,
    button_press,
    group_chat,
    member_change,
    message,
    user,
)

pytestmark = pytest.mark.filterwarnings("ignore::telegram.warnings.PTBDeprecationWarning")

GROUP = -1006666
ADMIN, CAROL, DAVE, EVE, FRANK = 9001, 9002, 9003, 9004, 9005


@pytest.fixture
async def tg(config, sqlite_db, clock):
    async with TelegramHarness(config, sqlite_db, clock) as harness:
        harness.api.admins[GROUP] = [ADMIN]
        yield harness


def said(uid: int, text: str, name: str = "", reply_to: dict | None = None) -> dict:
    return message(group_chat(GROUP), user(uid, name or f"U{uid}"), text, reply_to=reply_to)


async def admin(tg, text: str, reply_to: dict | None = None) -> None:
    await tg.push(said(ADMIN, text, "Boss", reply_to))


async def joins(tg, uid: int, name: str) -> None:
    await tg.push(member_change(group_chat(GROUP), user(uid, name), "left", "member"))


def actions(tg) -> list[tuple[str, str, str, str]]:
    with tg.db.sessions() as s:
        return [
            (a.action, a.user_id, a.reason, a.actor)
            for a in s.scalars(select(ModerationAction).order_by(ModerationAction.id))
        ]


def audited(tg) -> list[str]:
    with tg.db.sessions() as s:
        return [e.action for e in s.scalars(select(AuditEntry).order_by(AuditEntry.id))]


def ops_done(tg) -> dict[str, str]:
    with tg.db.sessions() as s:
        return {
            r.idempotency_key: r.status
            for r in s.scalars(select(OutboxMessage).where(OutboxMessage.purpose == "moderation"))
            if r.idempotency_key.startswith("mod:")
        }


async def test_a_link_from_a_newcomer_is_deleted_and_an_old_members_is_not(tg, clock):
    await admin(tg, "/mod links 3")
    await joins(tg, DAVE, "Dave")
    clock.advance(timedelta(days=4))
    await joins(tg, CAROL, "Carol")
    spam = said(CAROL, "加我领福利 https://spam.example/x", "Carol")
    await tg.push(spam)
    await tg.push(said(DAVE, "官网在 www.shop.example.com 可以看", "Dave"))
    await tg.push(said(FRANK, "我在群里很久了 https://frank.example", "Frank"))  # join never seen
    await admin(tg, "群公告见 https://brand.example/notice")  # admins are never checked
    await tg.deliver()

    (deleted,) = tg.api.called("deleteMessage")
    assert deleted.params == {
        "chat_id": GROUP,
        "message_id": spam["message"]["message_id"],
        "_ok": True,
    }
    assert actions(tg) == [("delete", str(CAROL), "newcomer_link", "system")]
    assert audited(tg) == ["group.delete"]
    assert set(ops_done(tg).values()) == {"sent"}


async def test_a_flood_is_muted_once(tg, clock):
    await admin(tg, "/mod flood 3 10 30")
    for n in range(4):
        await tg.push(said(DAVE, f"快来看 {n}", "Dave"))
    await tg.deliver()
    (mute,) = tg.api.called("restrictChatMember")
    assert mute.params["user_id"] == DAVE
    assert mute.params["permissions"]["can_send_messages"] is False
    with tg.db.sessions() as s:
        (row,) = s.scalars(select(ModerationAction)).all()
        assert mute.params["until_date"] == int(row.until.timestamp())
        assert row.until - row.created_at == timedelta(minutes=30)
    assert tg.api.texts(GROUP)[-1] == "🔇 Dave 已被禁言 30 分钟：刷屏"
    assert actions(tg) == [("mute", str(DAVE), "flood", "system")]
    assert audited(tg) == ["group.mute"]


async def test_a_newcomer_who_does_not_confirm_is_removed_and_one_who_does_may_speak(tg, clock):
    await admin(tg, "/mod captcha 5")
    await joins(tg, EVE, "Eve")
    await joins(tg, FRANK, "Frank")
    await tg.deliver()
    prompts = [c for c in tg.api.sent(GROUP) if c.params.get("reply_markup")]
    assert len(prompts) == 2
    assert prompts[0].params["text"].startswith('欢迎 <a href="tg://user?id=9004">Eve</a>！')
    eve_button = prompts[0].params["reply_markup"]["inline_keyboard"][0][0]
    frank_button = prompts[1].params["reply_markup"]["inline_keyboard"][0][0]
    assert eve_button["text"] == "我不是机器人"

    # Frank presses Eve's button (nothing happens), then his own (he may speak)
    await tg.push(button_press(group_chat(GROUP), user(FRANK, "Frank"), eve_button["callback_data"]))  # fmt: skip
    await tg.push(button_press(group_chat(GROUP), user(FRANK, "Frank"), frank_button["callback_data"]))  # fmt: skip
    await tg.deliver()
    restricts = tg.api.called("restrictChatMember")
    assert [(c.params["user_id"], c.params["permissions"]["can_send_messages"]) for c in restricts] == [
        (EVE, False),
        (FRANK, False),
        (FRANK, True),
    ]  # fmt: skip

    clock.advance(timedelta(minutes=6))
    rt = tg.runtime
    assert expire_newcomers(Services(tg.db, rt.config, rt.renderer, rt.clock)) == 1
    await tg.deliver()
    assert [c.params["user_id"] for c in tg.api.called("banChatMember")] == [EVE]
    (unban,) = tg.api.called("unbanChatMember")
    assert unban.params["user_id"] == EVE and unban.params["only_if_banned"] is True
    assert tg.api.texts(GROUP)[-1] == "Eve 已被移出本群（可以重新加入）：新成员未在规定时间内确认"
    assert [a[:3] for a in actions(tg)] == [
        ("restrict", str(EVE), "newcomer_check"),
        ("restrict", str(FRANK), "newcomer_check"),
        ("unmute", str(FRANK), "newcomer_confirmed"),
        ("remove", str(EVE), "newcomer_timeout"),
    ]
    assert expire_newcomers(Services(tg.db, rt.config, rt.renderer, rt.clock)) == 0


async def test_three_warnings_mute(tg):
    carol = said(CAROL, "广告广告", "Carol")
    await tg.push(carol)
    for _ in range(3):
        await admin(tg, "/warn 发广告", reply_to=carol["message"])
    await tg.deliver()
    assert tg.api.texts(GROUP) == [
        "⚠️ Carol 收到警告（1/3）：管理员操作",
        "⚠️ Carol 收到警告（2/3）：管理员操作",
        "🔇 Carol 已被禁言 60 分钟：警告次数已满",
    ]
    (mute,) = tg.api.called("restrictChatMember")
    assert mute.params["user_id"] == CAROL
    actor = f"telegram:{ADMIN}"
    assert actions(tg) == [
        ("warn", str(CAROL), "manual", actor),
        ("warn", str(CAROL), "manual", actor),
        ("warn", str(CAROL), "manual", actor),
        ("mute", str(CAROL), "warn_limit", actor),
    ]
    assert audited(tg) == ["group.warn"] * 3 + ["group.mute"]


async def test_banned_words_are_deleted_with_a_warning(tg):
    await admin(tg, "/mod words add 代购 刷单")
    await tg.push(said(DAVE, "专业代购，私聊", "Dave"))
    await tg.deliver()
    assert len(tg.api.called("deleteMessage")) == 1
    assert tg.api.texts(GROUP)[-1] == "⚠️ Dave 收到警告（1/3）：违禁词"
    assert [a[0] for a in actions(tg)] == ["delete", "warn"]


async def test_ban_and_unban_by_an_admin_and_refused_for_anyone_else(tg):
    carol = said(CAROL, "你好", "Carol")
    await tg.push(carol)
    await tg.push(said(DAVE, "/ban", "Dave", reply_to=carol["message"]))
    await tg.push(said(DAVE, "/mute 10", "Dave", reply_to=carol["message"]))
    await tg.deliver()
    assert tg.api.texts(GROUP) == [
        "抱歉，/ban 仅限本群管理员和经理在群内使用。",
        "抱歉，/mute 仅限本群管理员和经理在群内使用。",
    ]
    assert tg.api.called("banChatMember") == [] and tg.api.called("restrictChatMember") == []
    assert actions(tg) == [] and audited(tg) == []

    await admin(tg, "/mute 0", reply_to=carol["message"])
    await admin(tg, "/ban", reply_to=carol["message"])
    await admin(tg, "/unban", reply_to=carol["message"])
    await tg.deliver()
    await admin(tg, "/mod log")
    await tg.deliver()
    assert tg.api.texts(GROUP)[2] == "分钟数 需是 1 到 527040 之间的整数。"
    assert [c.params["user_id"] for c in tg.api.called("banChatMember")] == [CAROL]
    assert [c.params["user_id"] for c in tg.api.called("unbanChatMember")] == [CAROL]
    log = tg.api.texts(GROUP)[-1]
    assert "Carol：解除封禁（管理员操作）— telegram:9001 [sent]" in log
    assert "Carol：封禁（管理员操作）— telegram:9001 [sent]" in log


async def test_in_the_sandbox_the_rules_report_to_managers(config, sqlite_db, clock):
    h = SandboxHarness(config, sqlite_db, clock)
    await h.say("manager", "/mod links 3", chat="group-1", name="店长")
    await h.sandbox.receive({"user_id": "zoe", "chat_id": "group-1", "join": True, "display_name": "Zoe"})  # fmt: skip
    await h.say("zoe", "加我 t.me/spam_group", chat="group-1", name="Zoe")
    await h.deliver()
    (report,) = await h.bot_messages("manager")
    assert report.startswith("【群管理提醒】Siyu 体验群（sandbox）\n成员：Zoe（zoe）")
    assert "规则：新成员发链接或邀请 → 建议删除消息" in report
    with sqlite_db.sessions() as s:
        (row,) = s.scalars(select(ModerationAction)).all()
        assert (row.action, row.reason, row.detail) == ("report", "newcomer_link", "delete: 加我 t.me/spam_group")  # fmt: skip


async def test_mod_settings_are_checked_and_shown(tg):
    await admin(tg, "/mod flood 1 10 30")
    await admin(tg, "/mod nonsense")
    await admin(tg, "/mod links 3")
    await tg.deliver()
    bad, usage, shown = tg.api.texts(GROUP)
    assert bad == "条数 需是 2 到 100 之间的整数，或 0（关闭）。"
    assert usage.startswith("用法：/mod（查看）")
    assert "新成员链接：入群 3 天内发的链接和邀请会被删除" in shown
    assert "刷屏：关" in shown
