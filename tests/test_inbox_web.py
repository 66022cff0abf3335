"""The staff inbox over HTTP: auth, roles, CSRF, claim races, takeover and release."""

from __future__ import annotations

import re
import threading
from datetime import timedelta

import pytest
from sqlalchemy import select
from starlette.testclient import TestClient

from bot.conversations import handoff
from bot.conversations.followups import escalate_sla
from bot.conversations.staff import StaffError, create_staff
from storage.handoff import AuditEntry, HandoffTicket, StaffUser
from storage.models import Conversation, OutboxMessage
from tests.support import SandboxHarness

PASSWORD = "correct horse 42"


def add_staff(db, clock, name: str, role: str = "staff") -> None:
    with db.transaction() as s:
        create_staff(s, name, PASSWORD, role=role, now=clock.now())


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)


def login(h: SandboxHarness, name: str) -> tuple[TestClient, str]:
    client = TestClient(h.app.asgi, follow_redirects=False)
    token = csrf_of(client.get("/inbox/login").text)
    r = client.post("/inbox/login", data={"username": name, "password": PASSWORD, "csrf": token})
    assert r.status_code == 303, r.text
    return client, csrf_of(client.get("/inbox").text)


async def flagged(h: SandboxHarness, user: str = "u1", text: str = "我要投诉，房间太脏了") -> int:
    await h.say(user, text, name="小王")
    await h.deliver()
    with h.db.sessions() as s:
        return s.scalars(select(HandoffTicket.id).order_by(HandoffTicket.id.desc())).first()


def audit_actions(db) -> list[tuple[str, str]]:
    with db.sessions() as s:
        return [(a.actor, a.action) for a in s.scalars(select(AuditEntry).order_by(AuditEntry.id))]


@pytest.fixture
def h(config, sqlite_db, clock) -> SandboxHarness:
    harness = SandboxHarness(config, sqlite_db, clock)
    add_staff(sqlite_db, clock, "alice")
    add_staff(sqlite_db, clock, "bob")
    add_staff(sqlite_db, clock, "mia", "manager")
    return harness


def test_unauthenticated_requests_are_refused(h):
    client = TestClient(h.app.asgi, follow_redirects=False)
    for path in ("/inbox", "/inbox/c/1", "/inbox/manager", "/inbox/partials/queue"):
        r = client.get(path)
        assert (r.status_code, r.headers["location"]) == (303, "/inbox/login"), path
    assert client.get("/inbox/api/queue").status_code == 401
    assert client.get("/inbox/stream").status_code == 401
    assert client.post("/inbox/api/tickets/1/claim").status_code == 401
    assert client.post("/inbox/c/1/claim", data={"csrf": "x"}).status_code == 303


def test_wrong_password_is_refused_and_passwords_are_argon2_hashes(h):
    client = TestClient(h.app.asgi, follow_redirects=False)
    token = csrf_of(client.get("/inbox/login").text)
    r = client.post("/inbox/login", data={"username": "alice", "password": "nope", "csrf": token})
    assert r.status_code == 401
    r = client.post("/inbox/login", data={"username": "nobody", "password": "x", "csrf": token})
    assert r.status_code == 401
    with h.db.sessions() as s:
        stored = s.scalars(select(StaffUser.password_hash)).all()
    assert all(p.startswith("$argon2id$") and PASSWORD not in p for p in stored)


def test_staff_accounts_are_validated(h, clock):
    with h.db.transaction() as s, pytest.raises(StaffError, match="already exists"):
        create_staff(s, "alice", PASSWORD, role="staff", now=clock.now())
    with h.db.transaction() as s, pytest.raises(StaffError, match="at least 8"):
        create_staff(s, "carol", "short", role="staff", now=clock.now())
    with h.db.transaction() as s, pytest.raises(StaffError, match="role"):
        create_staff(s, "carol", PASSWORD, role="boss", now=clock.now())


def test_forms_need_the_csrf_token(h):
    client = TestClient(h.app.asgi, follow_redirects=False)
    r = client.post("/inbox/login", data={"username": "alice", "password": PASSWORD})
    assert r.status_code == 403
    client, token = login(h, "alice")
    assert client.post("/inbox/c/1/claim", data={}).status_code == 403
    assert client.post("/inbox/c/1/claim", data={"csrf": "forged"}).status_code == 403
    assert client.post("/inbox/api/tickets/1/claim").status_code == 403
    assert client.post("/inbox/logout", data={}).status_code == 403
    assert client.post("/inbox/c/1/claim", data={"csrf": token}).status_code == 303
    assert client.post("/inbox/logout", data={"csrf": token}).status_code == 303
    assert client.get("/inbox").status_code == 303  # logged out


def test_staff_cannot_see_manager_pages(h):
    staff, token = login(h, "alice")
    assert staff.get("/inbox/manager").status_code == 403
    r = staff.post("/inbox/manager/flag", data={"csrf": token, "conversation_id": "1"})
    assert r.status_code == 403
    manager, _ = login(h, "mia")
    assert manager.get("/inbox/manager").status_code == 200


async def test_keyword_flags_and_the_customer_is_told(h):
    ticket_id = await flagged(h)
    said = await h.bot_messages("u1")
    assert said == ["已为您转接人工客服，预计 10 分钟内回复您。"]
    client, _ = login(h, "alice")
    queue = client.get("/inbox/api/queue").json()["tickets"]
    assert [(t["id"], t["reason"], t["status"]) for t in queue] == [
        (ticket_id, "keyword", "waiting")
    ]
    assert "房间太脏了" in client.get("/inbox").text
    # While waiting the bot is silent; a second keyword opens no second ticket.
    await h.say("u1", "周末去哪玩")
    await h.say("u1", "/human")
    await h.deliver()
    assert len(await h.bot_messages("u1")) == 1
    assert len(client.get("/inbox/api/queue").json()["tickets"]) == 1


async def test_outside_business_hours_the_customer_hears_when_staff_are_back(h, clock):
    clock.advance(timedelta(hours=14))  # 23:00 in Shanghai
    await h.say("u1", "/human")
    await h.deliver()
    assert "非工作时间" in (await h.bot_messages("u1"))[-1]
    assert "09:00" in (await h.bot_messages("u1"))[-1]


async def test_two_staff_claim_at_once_one_wins_the_other_is_told(h):
    ticket_id = await flagged(h)
    alice, a_token = login(h, "alice")
    bob, b_token = login(h, "bob")
    first = alice.post(f"/inbox/api/tickets/{ticket_id}/claim", headers={"X-CSRF-Token": a_token})
    second = bob.post(f"/inbox/api/tickets/{ticket_id}/claim", headers={"X-CSRF-Token": b_token})
    assert (first.status_code, first.json()["claimed"]) == (200, True)
    assert second.status_code == 409
    assert second.json()["error"] == "已被 alice 接待"
    r = bob.post(f"/inbox/c/{ticket_id}/claim", data={"csrf": b_token})
    assert "已被 alice 接待" in bob.get(r.headers["location"]).text
    assert ("bob", "claim_refused") in audit_actions(h.db)


async def test_concurrent_claims_in_threads_have_exactly_one_winner(config, db, clock):
    h = SandboxHarness(config, db, clock)
    for name in ("s1", "s2", "s3", "s4"):
        add_staff(db, clock, name)
    ticket_id = await flagged(h)
    barrier = threading.Barrier(4)
    results: dict[str, bool] = {}

    def claim(name: str) -> None:
        with db.sessions() as s:
            user = s.scalars(select(StaffUser).where(StaffUser.username == name)).one()
        barrier.wait()
        with db.transaction() as s:
            results[name] = handoff.claim(s, ticket_id, user, clock.now())

    threads = [threading.Thread(target=claim, args=(n,)) for n in ("s1", "s2", "s3", "s4")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [n for n, won in results.items() if won]
    assert len(results) == 4 and len(winners) == 1
    with db.sessions() as s:
        ticket = s.get(HandoffTicket, ticket_id)
        conv = s.get(Conversation, ticket.conversation_id)
        assert (ticket.owner, conv.handoff_owner, conv.handoff_status) == (
            winners[0],
            winners[0],
            "staff",
        )


async def test_takeover_reply_note_coupon_transfer_and_release_resume_the_flow(h):
    await h.say("u1", "周末去哪玩")
    await h.sandbox.receive(
        {"user_id": "u1", "button_data": "flow:weekend_trip_inquiry:destination:qiandao"}
    )
    ticket_id = await flagged(h, text="可以退款吗")
    alice, token = login(h, "alice")
    page = f"/inbox/c/{ticket_id}"
    alice.post(f"{page}/claim", data={"csrf": token})
    html = alice.get(page).text
    assert "weekend_trip_inquiry" in html and "dates" in html
    nonce = re.search(r'name="nonce" value="([^"]+)"', html).group(1)
    for _ in range(2):  # a double submit sends once
        alice.post(f"{page}/reply", data={"csrf": token, "nonce": nonce, "text": "您好，我来处理"})
    alice.post(f"{page}/reply", data={"csrf": token, "nonce": "n2", "canned": "greeting"})
    alice.post(f"{page}/note", data={"csrf": token, "text": "老客户，态度好"})
    alice.post(
        f"{page}/coupon",
        data={"csrf": token, "nonce": nonce, "coupon": "staff_comp20", "replace_offer": "yes"},
    )
    await h.say("u1", "好的谢谢")  # the bot stays silent while staff own it
    await h.deliver()
    said = await h.bot_messages("u1")
    assert said[-3:-1] == ["您好，我来处理", "您好，小王！我是客服alice，很高兴为您服务。"]
    # a sandbox persona's code is a visibly demo one (DEMO-STAFF-…)
    assert said[-1].startswith(
        (
            "客服为您发放了一张「补偿券20元」：STAFF-",
            "客服为您发放了一张「补偿券20元」：DEMO-STAFF-",
        )
    )
    html = alice.get(page).text
    assert "老客户，态度好" in html and "补偿券20元" in html and "好的谢谢" in html

    r = alice.post(f"{page}/transfer", data={"csrf": token, "to": "bob"})
    assert r.status_code == 303
    assert alice.post(f"{page}/release", data={"csrf": token}).status_code == 303
    assert (
        "只有接待人（或经理）可以关闭该会话" in alice.get("/inbox").text
    )  # alice no longer owns it
    bob, b_token = login(h, "bob")
    bob.post(f"{page}/release", data={"csrf": b_token})
    await h.deliver()
    resumed = (await h.bot_messages("u1"))[-1]
    assert "感谢耐心等待！上次您选了千岛湖，还差出行日期～" in resumed
    assert "补偿券20元" in resumed  # the bot knows what staff did
    await h.say("u1", "本周六")
    await h.say("u1", "2")
    await h.deliver()
    offer = (await h.bot_messages("u1"))[-1]
    assert "客服已为您发放「补偿券20元」" in offer and "STAFF-" in offer
    assert [a for _, a in audit_actions(h.db) if a not in ("login",)] == [
        "flag", "claim", "reply", "reply", "note", "coupon", "transfer", "release",
    ]  # fmt: skip


async def test_misunderstanding_twice_in_a_row_hands_over(h):
    await h.say("u1", "周末去哪玩")
    await h.sandbox.receive(
        {"user_id": "u1", "button_data": "flow:weekend_trip_inquiry:destination:qiandao"}
    )
    await h.say("u1", "嗯嗯")
    await h.say("u1", "啊？")
    await h.deliver()
    said = await h.bot_messages("u1")
    assert "没看懂日期" in said[-2]
    assert said[-1].startswith("抱歉，我没太明白您的意思。已为您转接人工客服")
    with h.db.sessions() as s:
        assert s.scalars(select(HandoffTicket.reason)).all() == ["misunderstood"]


async def test_vip_free_text_goes_to_staff_with_higher_priority(h, clock):
    await h.say("u1", "你好")
    with h.db.transaction() as s:
        conv = s.scalars(select(Conversation)).one()
        from storage import repos

        repos.add_tag(s, conv.customer_id, "VIP", source="test", now=clock.now())
    await h.say("u1", "帮我看看上次的订单")
    with h.db.sessions() as s:
        ticket = s.scalars(select(HandoffTicket)).one()
    assert (ticket.reason, ticket.priority) == ("vip", 70)


async def test_manager_flags_a_conversation(h):
    await h.say("u1", "你好")
    manager, token = login(h, "mia")
    with h.db.sessions() as s:
        conv_id = s.scalars(select(Conversation.id)).one()
    r = manager.post(
        "/inbox/manager/flag", data={"csrf": token, "conversation_id": str(conv_id), "note": "跟进"}
    )
    assert r.status_code == 303 and r.headers["location"].startswith("/inbox/c/")
    with h.db.sessions() as s:
        assert s.scalars(select(HandoffTicket.reason)).all() == ["manager"]
    assert ("mia", "flag") in audit_actions(h.db)
    assert "flag" in manager.get("/inbox/manager").text


async def test_unclaimed_conversation_is_escalated_past_the_sla(h, clock):
    ticket_id = await flagged(h)
    clock.advance(timedelta(minutes=14))
    assert escalate_sla(h.db, h.runtime.config, clock) == []
    clock.advance(timedelta(minutes=2))
    assert escalate_sla(h.db, h.runtime.config, clock) == [ticket_id]
    assert escalate_sla(h.db, h.runtime.config, clock) == []  # once
    await h.deliver()
    alert = (await h.bot_messages("manager"))[-1]
    assert f"#{ticket_id}" in alert and "16 分钟" in alert
    with h.db.sessions() as s:
        assert s.get(HandoffTicket, ticket_id).priority == 130
        assert s.scalars(
            select(OutboxMessage.purpose).where(OutboxMessage.chat_id == "manager")
        ).all() == ["staff_alert"]
    assert ("system", "sla_escalated") in audit_actions(h.db)
