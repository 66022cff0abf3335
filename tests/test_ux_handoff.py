"""What customers and staff meet around a handoff, through the sandbox and the inbox:
staff coupons reach the customer at once, waiting customers are acknowledged (not
marketed to), resolve asks first and ends with a rating, small talk is not a
misunderstanding, out-of-range answers are re-asked with the valid range."""

from __future__ import annotations

import re
from datetime import timedelta

from sqlalchemy import select

from bot.app.services import Services
from bot.conversations.followups import escalate_sla
from bot.marketing.coupons import sync_definitions
from storage import repos
from storage.campaigns import CampaignTarget
from storage.handoff import HandoffTicket
from storage.measures import SurveyResponse
from storage.models import Conversation, OutboxMessage
from tests.support import SandboxHarness, run_jobs
from tests.test_inbox_web import add_staff, flagged, login


def harness(config, db, clock) -> SandboxHarness:
    h = SandboxHarness(config, db, clock)
    for name, role in (("alice", "staff"), ("bob", "staff"), ("mia", "manager")):
        add_staff(db, clock, name, role)
    with db.transaction() as s:
        sync_definitions(s, config.coupons, clock.now())
    return h


def flash(client, page: str) -> str:
    found = re.search(r'id="flash">([^<]*)<', client.get(page).text)
    return found.group(1) if found else ""


async def test_staff_coupon_reaches_the_customer_at_once_and_keeps_the_flows_offer(
    config, sqlite_db, clock
):
    h = harness(config, sqlite_db, clock)
    await h.say("u1", "周末去哪玩")
    await h.sandbox.receive(
        {"user_id": "u1", "button_data": "flow:weekend_trip_inquiry:destination:qiandao"}
    )
    await h.say("u1", "本周六")
    await h.say("u1", "2")  # the flow's own offer (¥50 trip coupon) is issued
    await h.deliver()
    with h.db.sessions() as s:
        offer_code = s.scalars(select(Conversation)).one().state["flow"]["offer"]["code"]
    ticket_id = await flagged(h, text="我要投诉")
    alice, token = login(h, "alice")
    page = f"/inbox/c/{ticket_id}"
    alice.post(f"{page}/claim", data={"csrf": token})
    alice.post(f"{page}/coupon", data={"csrf": token, "nonce": "n1", "coupon": "staff_comp20"})
    assert "客户已收到通知" in flash(alice, page)
    await h.deliver()  # while staff still own the conversation
    told = (await h.bot_messages("u1"))[-1]
    assert re.fullmatch(
        r"客服为您发放了一张「补偿券20元」：(DEMO-)?STAFF(-[0-9A-Z]{4}){3}，有效期至 \d{4}-\d{2}-\d{2} \d{2}:\d{2}。",
        told,
    ), told
    with h.db.sessions() as s:
        state = s.scalars(select(Conversation)).one().state["flow"]
    assert state["offer"]["code"] == offer_code  # kept
    assert "STAFF-" in state["staff_coupons"][0]["code"]  # DEMO-STAFF-… for sandbox personas
    html = alice.get(page).text
    assert offer_code in html  # the breakpoint shows the pending offer
    # replacing it is explicit
    alice.post(
        f"{page}/coupon",
        data={"csrf": token, "nonce": "n2", "coupon": "birthday20", "replace_offer": "yes"},
    )
    with h.db.sessions() as s:
        offer = s.scalars(select(Conversation)).one().state["flow"]["offer"]
    assert offer["coupon"] == "birthday20" and "STAFF-" in offer["code"]


async def test_a_waiting_customer_is_acknowledged_once_per_window_and_told_on_sla_breach(
    config, sqlite_db, clock
):
    h = harness(config, sqlite_db, clock)
    await flagged(h, text="我要投诉")
    clock.advance(timedelta(minutes=1))
    await h.say("u1", "有人吗？")  # just told when to expect an answer: no repeat yet
    clock.advance(timedelta(minutes=10))
    await h.say("u1", "还要等多久")
    await h.say("u1", "在不在")  # the same window: no second acknowledgement
    await h.deliver()
    said = await h.bot_messages("u1")
    assert said[0].startswith("已为您转接人工客服")
    assert said[1:] == ["收到～您已在人工客服队列中，预计 10 分钟内回复。"]
    clock.advance(timedelta(minutes=4))  # 15 minutes: the SLA
    assert escalate_sla(h.db, h.runtime.config, clock)
    await h.deliver()
    assert (await h.bot_messages("u1"))[-1].startswith("抱歉让您久等了！")
    alert = (await h.bot_messages("manager"))[-1]
    assert "原因：投诉" in alert or "原因：关键词" in alert  # a reason in words, not a code


async def test_marketing_is_held_during_handoff_and_sent_after(config, sqlite_db, clock):
    h = harness(config, sqlite_db, clock)
    await h.say("u1", "我想吃早餐")  # tagged 早餐
    ticket_id = await flagged(h, text="我要投诉")
    await h.say(
        "manager",
        '/campaign new am segment="tag:早餐" template=morning_offer pilot=0 holdout=0',
    )
    await h.say("manager", "/campaign launch am")
    services = Services(h.db, h.runtime.config, h.runtime.renderer, clock)
    run_jobs(services)
    await h.deliver()
    assert not any("早上好" in m for m in await h.bot_messages("u1"))
    with h.db.sessions() as s:
        row = s.scalars(select(OutboxMessage).where(OutboxMessage.purpose == "campaign")).one()
        assert (row.status, row.last_error) == ("pending", "in_handoff")
    alice, token = login(h, "alice")
    page = f"/inbox/c/{ticket_id}"
    alice.post(f"{page}/claim", data={"csrf": token})
    assert "营销活动 · 暂缓（人工接待中）" in alice.get(page).text  # staff see it waiting
    alice.post(f"{page}/resolve", data={"csrf": token, "confirm": "yes"})
    clock.advance(timedelta(minutes=11))
    await h.deliver()
    assert any("早上好" in m for m in (await h.bot_messages("u1"))[-2:])  # sent after


async def test_the_same_content_from_two_campaigns_is_sent_once(config, sqlite_db, clock):
    h = harness(config, sqlite_db, clock)
    await h.say("u1", "周末去哪玩")  # tagged 周末出游
    services = Services(h.db, h.runtime.config, h.runtime.renderer, clock)
    for name in ("wk1", "wk2"):
        await h.say(
            "manager",
            f'/campaign new {name} segment="tag:周末出游" template=weekend_trip pilot=0 holdout=0',
        )
        await h.say("manager", f"/campaign launch {name}")
        run_jobs(services)
    await h.deliver()
    with h.db.sessions() as s:
        rows = s.execute(select(CampaignTarget.campaign_id, CampaignTarget.reason)).all()
        pushes = s.scalars(select(OutboxMessage).where(OutboxMessage.purpose == "campaign")).all()
    assert sorted(rows) == [(1, None), (2, "duplicate_content")]
    assert len(pushes) == 1


async def test_resolve_asks_for_confirmation_then_closes_with_a_rating(config, sqlite_db, clock):
    h = harness(config, sqlite_db, clock)
    ticket_id = await flagged(h, text="我要投诉")
    alice, token = login(h, "alice")
    page = f"/inbox/c/{ticket_id}"
    alice.post(f"{page}/claim", data={"csrf": token})
    assert 'id="resolve-confirm"' in alice.get(page).text
    alice.post(f"{page}/resolve", data={"csrf": token})  # no confirmation: refused
    assert flash(alice, page) == "请确认后再标记为已解决"
    with h.db.sessions() as s:
        assert s.get(HandoffTicket, ticket_id).status == "claimed"
    alice.post(f"{page}/resolve", data={"csrf": token, "confirm": "yes"})
    await h.deliver()
    transcript = await h.sandbox.transcript("u1")
    closing = [m for m in transcript if m["direction"] == "out"][-1]
    assert closing["text"].startswith("您的问题已处理完毕")
    assert [b["data"] for b in closing["buttons"]] == [f"rate:{ticket_id}:{n}" for n in range(1, 6)]
    await h.sandbox.receive({"user_id": "u1", "button_data": f"rate:{ticket_id}:4"})
    await h.sandbox.receive({"user_id": "u1", "button_data": f"rate:{ticket_id}:1"})  # once
    await h.sandbox.receive({"user_id": "intruder", "button_data": f"rate:{ticket_id}:1"})
    await h.deliver()
    said = await h.bot_messages("u1")
    assert said[-2:] == ["感谢您的评分（4 星）！我们会继续努力。", "您已经评过分了（4 星），感谢！"]
    with h.db.sessions() as s:
        assert s.get(HandoffTicket, ticket_id).rating == 4
        # the rating is the csat survey's answer: per staff member in siyu report survey csat
        (answer,) = s.scalars(select(SurveyResponse)).all()
        assert (answer.survey, answer.score, answer.source, answer.staff) == (
            "csat",
            4,
            f"handoff:{ticket_id}",
            "alice",
        )
    manager, _ = login(h, "mia")
    html = manager.get("/inbox/manager").text
    alice_row = re.search(r'<li data-staff="alice">(.*?)</li>', html, re.S).group(1)
    assert "4.0 分（1 次评分）" in alice_row and "已解决 1" in alice_row
    assert "客户评分" in html  # the audit log in words


async def test_small_talk_is_no_misunderstanding_and_a_vips_thanks_opens_no_ticket(
    config, sqlite_db, clock
):
    h = harness(config, sqlite_db, clock)
    await h.say("v1", "你好", name="小李")
    with h.db.transaction() as s:
        conv = s.scalars(select(Conversation)).one()
        repos.add_tag(s, conv.customer_id, "VIP", source="test", now=clock.now())
    for text in ("谢谢", "好的", "👍", "谢谢！"):
        await h.say("v1", text)
    await h.deliver()
    said = await h.bot_messages("v1")
    assert said[0].startswith("小李，您好！我是小助手") and "我的券" in said[0]
    assert said[1:] == ["不客气 😊 还有什么需要随时告诉我。"] * 4
    with h.db.sessions() as s:
        assert s.scalars(select(HandoffTicket)).all() == []
    await h.say("v1", "帮我看看上次的订单")  # a real request from a VIP still goes to staff
    with h.db.sessions() as s:
        assert s.scalars(select(HandoffTicket.reason)).all() == ["vip"]


async def test_an_out_of_range_answer_is_reasked_with_the_range_and_never_hands_over(
    config, sqlite_db, clock
):
    h = harness(config, sqlite_db, clock)
    await h.say("u1", "周末去哪玩")
    await h.sandbox.receive(
        {"user_id": "u1", "button_data": "flow:weekend_trip_inquiry:destination:qiandao"}
    )
    await h.say("u1", "本周六")
    for _ in range(3):
        await h.say("u1", "0")
    await h.deliver()
    said = await h.bot_messages("u1")
    assert said[-3:] == ["“0”不在范围内：人数请填 1–30，比如 2。"] * 3
    with h.db.sessions() as s:
        assert s.scalars(select(HandoffTicket)).all() == []
    await h.say("u1", "随便吧")  # two real misunderstandings do hand over
    await h.say("u1", "不知道")
    with h.db.sessions() as s:
        assert s.scalars(select(HandoffTicket.reason)).all() == ["misunderstood"]
