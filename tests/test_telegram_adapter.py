"""The Telegram channel end to end: the real adapter over real HTTP against a fake Bot API."""

from __future__ import annotations

import logging
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import select

from bot.adapters.base import Button
from bot.core.events import ConversationRef
from bot.outbox import queue as outbox
from storage.models import OutboxMessage
from tests.fakes.telegram import (
    BOT_ID,
    TelegramHarness,
    button_press,
    group_chat,
    member_change,
    message,
    private_chat,
    user,
)

pytestmark = pytest.mark.filterwarnings("ignore::telegram.warnings.PTBDeprecationWarning")

GROUP = -1001234
ADMIN = 7001
ALICE = 5001
BOB = 5002


@pytest.fixture
async def tg(config, sqlite_db, clock):
    async with TelegramHarness(config, sqlite_db, clock) as harness:
        harness.api.admins[GROUP] = [ADMIN]
        yield harness


def enqueue(h: TelegramHarness, key: str, chat_id: int, text: str, **kw) -> None:
    with h.db.transaction() as session:
        outbox.enqueue(
            session,
            key=key,
            to=ConversationRef("telegram", str(chat_id), str(abs(chat_id))),
            text=text,
            now=h.clock.now(),
            **kw,
        )


def row(h: TelegramHarness, key: str) -> OutboxMessage:
    with h.db.sessions() as session:
        return session.scalars(
            select(OutboxMessage).where(OutboxMessage.idempotency_key == key)
        ).one()


def alice_id(h: TelegramHarness) -> int:
    return h.profile(ALICE)["id"]


async def test_private_start_gets_the_welcome(tg):
    await tg.push(message(private_chat(ALICE), user(ALICE, "Alice"), "/start"))
    assert await tg.deliver() == 1
    (call,) = tg.api.sent(ALICE)
    assert "欢迎来到我们的社群" in call.params["text"]
    assert call.params["text"].startswith("Alice，")
    assert call.params["parse_mode"] == "HTML"


async def test_command_addressed_to_the_bot_by_name_is_a_command(tg):
    await tg.push(message(private_chat(ALICE), user(ALICE, lang="en"), "/start@siyu_test_bot"))
    await tg.deliver()
    assert "welcome to our community" in tg.api.texts(ALICE)[0]


async def test_group_keyword_message_tags_the_member(tg):
    await tg.push(message(group_chat(GROUP), user(BOB, "Bob"), "这周末去哪玩比较好？"))
    profile = tg.profile(BOB)
    assert [t["tag"] for t in profile["tags"]] == ["周末出游"]
    assert profile["interactions"][0]["chat_id"] == str(GROUP)


async def test_edited_message_is_logged_and_tagged(tg):
    await tg.push(
        {"edited_message": message(group_chat(GROUP), user(BOB), "早餐吃什么")["message"]}
    )
    profile = tg.profile(BOB)
    assert profile["interactions"][0]["kind"] == "edited"
    assert [t["tag"] for t in profile["tags"]] == ["早餐"]


async def test_join_gets_the_group_welcome_with_a_mention(tg):
    await tg.push(
        message(group_chat(GROUP), user(ADMIN, "Boss"), "/welcome 欢迎 {{ name }} 加入 <会员群>！")
    )
    await tg.deliver()
    assert "已设置入群欢迎语" in tg.api.texts(GROUP)[-1]
    await tg.push(member_change(group_chat(GROUP), user(ALICE, "Alice"), "left", "member"))
    await tg.deliver()
    assert tg.api.texts(GROUP)[-1] == (
        '欢迎 <a href="tg://user?id=5001">Alice</a> 加入 &lt;会员群&gt;！'
    )
    with tg.db.sessions() as session:
        from storage.models import Membership

        assert session.get(Membership, (1, alice_id(tg))).active
    await tg.push(member_change(group_chat(GROUP), user(ALICE, "Alice"), "member", "left"))
    with tg.db.sessions() as session:
        assert not session.get(Membership, (1, alice_id(tg))).active


async def test_non_admin_announce_is_refused_and_admin_announce_is_posted_and_pinned(tg):
    await tg.push(message(group_chat(GROUP), user(BOB, "Bob"), "/announce 全场五折"))
    await tg.deliver()
    assert tg.api.texts(GROUP) == ["抱歉，/announce 仅限本群管理员和经理在群内使用。"]

    await tg.push(message(group_chat(GROUP), user(ADMIN, "Boss"), "/announce pin 今晚 8 点\n直播"))
    await tg.deliver()
    assert tg.api.texts(GROUP)[-1] == "今晚 8 点\n直播"
    (pin,) = tg.api.called("pinChatMessage")
    assert pin.params["chat_id"] == GROUP
    assert len(tg.api.called("getChatAdministrators")) == 1  # cached


async def test_admin_cache_is_refreshed_when_admins_change(tg):
    await tg.push(message(group_chat(GROUP), user(BOB, "Bob"), "/stats"))
    tg.api.admins[GROUP].append(BOB)
    await tg.push(member_change(group_chat(GROUP), user(BOB, "Bob"), "member", "administrator"))
    await tg.push(message(group_chat(GROUP), user(BOB, "Bob"), "/stats"))
    await tg.deliver()
    texts = tg.api.texts(GROUP)
    assert texts[0].startswith("抱歉")
    assert "近 7 天数据" in texts[1]


async def test_button_press_is_routed_and_answered(tg):
    await tg.push(button_press(private_chat(ALICE), user(ALICE), "offer:breakfast"))
    (answer,) = tg.api.called("answerCallbackQuery")
    assert answer.params["callback_query_id"].startswith("cq")
    assert tg.profile(ALICE)["interactions"][0]["kind"] == "button"


async def test_retry_after_is_waited_out_and_the_message_is_sent_once(tg):
    enqueue(tg, "k429", ALICE, "限时优惠")
    tg.api.fail_next("sendMessage", 429, "Too Many Requests: retry after 3", retry_after=3)
    await tg.deliver()
    pending = row(tg, "k429")
    assert pending.status == "pending"
    assert pending.next_attempt_at == tg.clock.now() + timedelta(seconds=3)
    assert await tg.deliver() == 0  # not due yet
    tg.clock.advance(3)
    await tg.deliver()
    assert row(tg, "k429").status == "sent"
    assert tg.api.texts(ALICE) == ["限时优惠"]
    assert len(tg.api.called("sendMessage")) == 2


async def test_forbidden_marks_the_identity_unreachable_and_stops_sending(tg):
    await tg.push(message(private_chat(ALICE), user(ALICE, "Alice"), "/start"))
    tg.api.fail_next("sendMessage", 403, "Forbidden: bot was blocked by the user")
    await tg.deliver()
    identity = tg.profile(ALICE)["identities"][0]
    assert identity["unreachable"] is True
    assert "blocked" in identity["unreachable_reason"]
    assert tg.profile(ALICE)["outbox"][0]["status"] == "unreachable"

    enqueue(tg, "later", ALICE, "还在吗？")
    await tg.deliver()
    assert len(tg.api.called("sendMessage")) == 1  # no further attempt
    assert row(tg, "later").status == "unreachable"

    await tg.push(message(private_chat(ALICE), user(ALICE, "Alice"), "我回来了"))
    assert tg.profile(ALICE)["identities"][0]["unreachable"] is False


async def test_forbidden_in_a_group_does_not_mark_a_member(tg):
    enqueue(tg, "grp403", GROUP, "公告")
    tg.api.fail_next("sendMessage", 403, "Forbidden: bot was kicked from the supergroup chat")
    await tg.deliver()
    assert row(tg, "grp403").status == "failed"


async def test_long_text_is_split_and_html_escaped_with_keyboard_on_the_last_part(tg):
    text = ("<b>早餐</b> & 优惠 " * 40 + "\n") * 20  # ~14k characters
    long_data = "offer:" + "x" * 100
    buttons = (Button("领取", "claim:1"), Button("详情", long_data))
    enqueue(tg, "long", ALICE, text, buttons=buttons)
    await tg.deliver()
    parts = tg.api.sent(ALICE)
    assert len(parts) == 4
    assert all(
        len(p.params["text"].replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&"))
        <= 4096
        for p in parts
    )
    assert "<b>" not in parts[0].params["text"] and "&lt;b&gt;" in parts[0].params["text"]
    assert all("reply_markup" not in p.params for p in parts[:-1])
    keyboard = parts[-1].params["reply_markup"]["inline_keyboard"]
    datas = [row_[0]["callback_data"] for row_ in keyboard]
    assert datas[0] == "claim:1"
    assert len(datas[1].encode()) <= 64
    # pressing the shortened button gives the handlers the full data back
    await tg.push(button_press(private_chat(ALICE), user(ALICE), datas[1]))
    with tg.db.sessions() as session:
        from storage.models import Interaction

        payload = session.scalars(select(Interaction).where(Interaction.kind == "button")).one()
    assert payload.kind == "button"
    assert row(tg, "long").status == "sent"


async def test_malformed_and_unknown_updates_are_logged_and_skipped(tg, caplog):
    caplog.set_level(logging.INFO, logger="bot.adapters.telegram.adapter")
    tg.api.push({"message": {"text": "no chat, no sender"}})
    tg.api.push({"update_id": 4242, "message": {"message_id": 1, "text": "no chat"}})
    tg.api.push({"update_id": 4243, "some_future_update": {"x": 1}})
    await tg.push(message(private_chat(ALICE), user(ALICE, "Alice"), "/start"))
    assert await tg.deliver() == 1
    assert "malformed" in caplog.text
    assert tg.adapter._task is not None and not tg.adapter._task.done()


async def test_bot_added_and_removed_registers_and_deactivates_the_group(tg):
    adder = user(ADMIN, "Boss")
    change = member_change(group_chat(GROUP), adder, "left", "member", field="my_chat_member")
    change["my_chat_member"]["new_chat_member"]["user"] = user(BOT_ID, "Siyu")
    change["my_chat_member"]["old_chat_member"]["user"] = user(BOT_ID, "Siyu")
    await tg.push(change)
    from storage.models import Group

    with tg.db.sessions() as session:
        assert session.scalars(select(Group)).one().active
    gone = member_change(group_chat(GROUP), adder, "member", "kicked", field="my_chat_member")
    for side in ("old_chat_member", "new_chat_member"):
        gone["my_chat_member"][side]["user"] = user(BOT_ID, "Siyu")
    await tg.push(gone)
    with tg.db.sessions() as session:
        assert not session.scalars(select(Group)).one().active


async def test_retried_update_is_processed_once(tg):
    update = message(private_chat(ALICE), user(ALICE, "Alice"), "/start")
    update["update_id"] = 777
    await tg.adapter.process(dict(update))
    await tg.adapter.process(dict(update))
    assert await tg.deliver() == 1


@pytest.fixture
async def tg_webhook(config, sqlite_db, clock):
    async with TelegramHarness(config, sqlite_db, clock, mode="webhook") as harness:
        yield harness


async def test_webhook_checks_the_secret_token(tg_webhook):
    h = tg_webhook
    update = message(private_chat(ALICE), user(ALICE, "Alice"), "/start")
    update["update_id"] = 9
    transport = httpx.ASGITransport(app=h.app.asgi)
    async with httpx.AsyncClient(transport=transport, base_url="http://siyu") as client:
        wrong = await client.post(
            "/telegram/webhook", json=update, headers={"X-Telegram-Bot-Api-Secret-Token": "nope"}
        )
        missing = await client.post("/telegram/webhook", json=update)
        assert (wrong.status_code, missing.status_code) == (403, 403)
        assert await h.deliver() == 0
        headers = {"X-Telegram-Bot-Api-Secret-Token": "s3cret-token"}
        ok = await client.post("/telegram/webhook", json=update, headers=headers)
        assert ok.status_code == 200
        assert await h.deliver() == 1
        again = await client.post("/telegram/webhook", json=update, headers=headers)
        assert again.status_code == 200
        bad = await client.post("/telegram/webhook", json={"update_id": 10}, headers=headers)
        assert bad.status_code == 200
        junk = await client.post("/telegram/webhook", content=b"{nope", headers=headers)
        assert junk.status_code == 400
    assert await h.deliver() == 0
    assert len(h.api.texts(ALICE)) == 1
    assert not h.api.called("getUpdates")


async def test_a_retried_long_message_never_sends_an_earlier_part_again(tg):
    from bot.adapters.telegram.adapter import TelegramAdapter
    from bot.adapters.telegram.limits import TelegramRateLimiter

    text = "\n".join(f"第 {n} 段：" + "早餐优惠" * 900 for n in range(4))  # 4 parts
    enqueue(tg, "parts", ALICE, text)
    tg.api.fail_next("sendMessage", 429, "Too Many Requests: retry after 5", after=2, retry_after=5)
    await tg.deliver()
    first = tg.api.sent(ALICE)
    assert [p.params["text"][:5] for p in first] == ["第 0 段", "第 1 段"]
    pending = row(tg, "parts")
    assert pending.status == "pending"
    assert pending.payload["extra"]["sent_parts"] == ["100", "101"]
    # Another process (a fresh adapter: nothing in memory) takes the message over.
    fresh = TelegramAdapter(
        tg.adapter.config,
        tg.runtime,
        limiter=TelegramRateLimiter(now=tg.time.now, sleep=tg.time.sleep),
    )
    await fresh.bot.initialize()
    tg.runtime.adapters["telegram"] = fresh
    try:
        tg.clock.advance(5)
        await tg.deliver()
    finally:
        await fresh.bot.shutdown()
    parts = [p.params["text"][:5] for p in tg.api.sent(ALICE)]
    assert parts == ["第 0 段", "第 1 段", "第 2 段", "第 3 段"]
    done = row(tg, "parts")
    assert done.status == "sent"
    assert done.platform_message_id == "100,101,102,103"
