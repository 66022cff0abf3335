"""Satisfaction surveys end to end in the sandbox: an NPS survey sent by a scenario, answered
with a button and by typing, a detractor flagged to staff, results and their report."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select

from bot.app.config import ScenarioDef
from bot.core.clock import FakeClock
from bot.marketing.scenarios import sync_scenarios, tick
from bot.measures import surveys
from bot.measures.periods import parse_period
from storage.campaigns import Scenario
from storage.handoff import HandoffTicket
from storage.measures import SurveyResponse
from tests.campaign_support import services
from tests.support import SandboxHarness

ROOT = Path(__file__).resolve().parent.parent
# 2026-03-02 04:00 UTC = 12:00 in Shanghai, a Monday: inside a 10:00-20:00 window.
START = datetime(2026, 3, 2, 4, 0, tzinfo=UTC)


def survey_config(config):
    scenario = ScenarioDef(
        "nps_check", "unused", "daily", "10:00-20:00", "opt_out:no", survey="nps"
    )
    return config.replace(scenarios=replace(config.scenarios, definitions=[scenario]))


async def scenario_round(h: SandboxHarness, config, clock) -> list[dict]:
    svc = services(h.db, config, clock)
    with h.db.transaction() as session:
        sync_scenarios(session, config.scenarios.definitions, clock.now())
        sid = session.scalars(select(Scenario.id).where(Scenario.name == "nps_check")).one()
    tick(svc, sid)
    await h.deliver()


async def last_message(h: SandboxHarness, chat: str) -> dict:
    return [m for m in await h.sandbox.transcript(chat) if m["direction"] == "out"][-1]


async def test_nps_by_scenario_answered_by_button_and_text_detractor_flagged(config, sqlite_db):
    config = survey_config(config)
    clock = FakeClock(START)
    h = SandboxHarness(config, sqlite_db, clock)
    await h.say("alice", "你好", name="Alice")
    await h.say("bob", "hi", name="Bob", locale="en")
    await h.deliver()
    await scenario_round(h, config, clock)

    question = await last_message(h, "alice")
    assert "推荐" in question["text"]
    labels = [b["label"] for b in question["buttons"]]
    assert labels == [str(n) for n in range(11)]
    nine = question["buttons"][9]["data"]
    assert surveys.parse_button(nine) == ("nps", "scenario:nps_check:main", 9)
    assert "recommend" in (await last_message(h, "bob"))["text"]

    # Alice presses 9, then says why.
    await h.sandbox.receive({"user_id": "alice", "chat_id": "alice", "button_data": nine})
    await h.deliver()
    assert "9" in (await last_message(h, "alice"))["text"]  # "why?"
    await h.say("alice", "发货很快，客服耐心")
    await h.deliver()
    assert "谢谢您的反馈" in (await last_message(h, "alice"))["text"]

    # Bob types his score instead of pressing: a detractor, flagged to staff.
    await h.say("bob", "3")
    await h.deliver()
    await h.say("bob", "Delivery took two weeks")
    await h.deliver()
    assert "sorry" in (await last_message(h, "bob"))["text"]

    with sqlite_db.sessions() as s:
        rows = {r.customer_id: r for r in s.scalars(select(SurveyResponse))}
        tickets = list(s.scalars(select(HandoffTicket)))
    answers = sorted((r.score, r.comment, r.flagged, r.source) for r in rows.values())
    assert answers == [
        (3, "Delivery took two weeks", True, "scenario:nps_check:main"),
        (9, "发货很快，客服耐心", False, "scenario:nps_check:main"),
    ]
    assert [t.reason for t in tickets] == ["survey"]

    # A second press by Alice corrects her score; it is still one answer.
    await h.sandbox.receive(
        {"user_id": "alice", "chat_id": "alice", "button_data": nine[:-1] + "10"}
    )
    with sqlite_db.sessions() as s:
        assert sorted(r.score for r in s.scalars(select(SurveyResponse))) == [3, 10]
        period = parse_period("2026-03-01", "2026-04-01", zone="Asia/Shanghai", now=clock.now(),
                              default_days=30)  # fmt: skip
        report = surveys.results(s, "nps", period, config=config, now=clock.now())
    assert report.overall["responses"] == 2
    assert report.overall["nps"] == 0.0  # one promoter (10), one detractor (3)
    assert report.by_channel["sandbox"]["responses"] == 2
    assert report.by_month == {"2026-03": report.overall}
    assert report.flagged == 1


async def test_a_number_without_a_pending_survey_is_not_an_answer(config, sqlite_db):
    h = SandboxHarness(survey_config(config), sqlite_db, FakeClock(START))
    await h.say("carol", "8")
    with sqlite_db.sessions() as s:
        assert s.scalars(select(SurveyResponse)).all() == []


async def test_out_of_scale_or_forged_buttons_record_nothing(config, sqlite_db):
    h = SandboxHarness(survey_config(config), sqlite_db, FakeClock(START))
    await h.say("dave", "hi")
    for data in ("sv:nps:x:11", "sv:nosuch:x:5", "sv:nps:7", "sv:nps:x:-1"):
        await h.sandbox.receive({"user_id": "dave", "chat_id": "dave", "button_data": data})
    with sqlite_db.sessions() as s:
        assert s.scalars(select(SurveyResponse)).all() == []


async def test_opted_out_customers_are_not_surveyed(config, sqlite_db):
    config = survey_config(config)
    clock = FakeClock(START)
    h = SandboxHarness(config, sqlite_db, clock)
    await h.say("erin", "hi")
    await h.say("erin", "退订")
    await h.deliver()
    before = len(await h.bot_messages("erin"))
    await scenario_round(h, config, clock)
    assert len(await h.bot_messages("erin")) == before


async def test_siyu_survey_send_and_report(tmp_path, config, sqlite_db):
    clock = FakeClock(datetime.now(UTC))  # the CLI runs on the wall clock
    h = SandboxHarness(config, sqlite_db, clock)
    await h.say("frank", "hi")
    await h.deliver()
    cfg = tmp_path / "siyu.toml"
    cfg.write_text(
        f'[database]\nurl = "{sqlite_db.url}"\n[scenarios]\nscheduler = false\n'
        '[marketing]\nquiet_hours = "00:00-00:00"\n'
    )

    def siyu(*args):
        return subprocess.run(
            [sys.executable, "-m", "bot.app.cli", *args, "--config", str(cfg)],
            cwd=ROOT, capture_output=True, text=True, timeout=60,
            env={"PATH": "/usr/bin:/bin", "LANG": "en_US.UTF-8"},
        )  # fmt: skip

    sent = siyu(
        "survey", "send", "csat", "--segment", "channel:sandbox", "--source", "q1", "--json"
    )
    assert sent.returncode == 0, sent.stderr
    assert json.loads(sent.stdout)["outcomes"] == {"queued": 1}
    again = siyu("survey", "send", "csat", "--segment", "channel:sandbox", "--source", "q1")
    assert "already sent 1" in again.stdout
    clock.set(datetime.now(UTC))
    await h.deliver()
    question = await last_message(h, "frank")
    five = question["buttons"][-1]["data"]
    await h.sandbox.receive({"user_id": "frank", "chat_id": "frank", "button_data": five})
    report = siyu("report", "survey", "csat", "--from", "2026-01-01", "--to", "2030-01-01")
    assert report.returncode == 0, report.stderr
    assert "1 answers, CSAT 100.0%" in report.stdout
    unknown = siyu("survey", "send", "nosuch", "--segment", "channel:sandbox")
    assert unknown.returncode == 2 and "no survey named 'nosuch'" in unknown.stderr


async def test_survey_after_an_order_is_sent_once_after_the_delay(config, sqlite_db):
    from zoneinfo import ZoneInfo

    from bot.app.config import SurveyDef, SurveysConfig
    from bot.core.templating import Renderer
    from bot.customers.orders import store_orders, validate_order
    from bot.measures.due import run_due

    config = config.replace(
        surveys=SurveysConfig(definitions=[SurveyDef("csat", "csat", after_order_days=3)]),
        marketing=replace(config.marketing, quiet_hours="00:00-00:00"),
    )
    clock = FakeClock(START)
    h = SandboxHarness(config, sqlite_db, clock)
    await h.say("gina", "hi")
    await h.deliver()
    order = validate_order(
        {"order_id": "A-1", "customer": "sandbox:gina", "amount": "30", "time": START.isoformat()},
        tz=ZoneInfo("Asia/Shanghai"), now=START, default_currency="CNY",
    )  # fmt: skip
    with sqlite_db.transaction() as s:
        store_orders(s, [(1, order)], source="test", now=START)

    def due():
        with sqlite_db.transaction() as s:
            return run_due(s, config=config, renderer=Renderer(), now=clock.now()).surveys

    clock.advance(2 * 24 * 3600)
    assert due() == {}  # two days: not yet
    clock.advance(24 * 3600 + 60)
    assert due() == {"queued": 1}
    assert due() == {"duplicate": 1}  # the next run queues nothing twice
    await h.deliver()
    question = await last_message(h, "gina")
    assert "满意" in question["text"] and len(question["buttons"]) == 5
    assert surveys.parse_button(question["buttons"][0]["data"]) == ("csat", "order:A-1", 1)
    clock.advance(3 * 24 * 3600)
    assert due() == {}  # past the catch-up window the order is not surveyed again
