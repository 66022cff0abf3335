"""A scenario's funnel: targeted → queued (dropped by reason) → sent → delivered → clicked
→ redeemed, per local date, from chat (/scenario stats) and the CLI (siyu report scenario)."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from bot.app.cli import main
from bot.core.clock import FakeClock
from bot.core.events import ConversationRef
from bot.marketing.coupons import format_code, sync_definitions
from bot.marketing.scenarios import sync_scenarios, tick
from bot.outbox.queue import enqueue
from storage.campaigns import Scenario
from storage.coupons import CouponCode
from tests.campaign_support import make_customer, services
from tests.support import SandboxHarness

DAY = "2026-03-07"


def _config(config):
    """morning_offer with a coupon and a tracked button."""
    defs = [
        replace(d, coupon="breakfast5", buttons=["领券=claim"]) if d.name == "morning_offer" else d
        for d in config.scenarios.definitions
    ]
    return config.replace(scenarios=replace(config.scenarios, definitions=defs))


def _report(db, tmp_path, capsys, *extra: str) -> tuple[int, str, str]:
    path = tmp_path / "siyu.toml"
    path.write_text(f'[database]\nurl = "{db.url}"\n')
    capsys.readouterr()
    code = main(["report", "scenario", *extra, "--config", str(path)])
    out, err = capsys.readouterr()
    return code, out, err


def _day(db, tmp_path, capsys) -> dict:
    code, out, _ = _report(db, tmp_path, capsys, "morning_offer", "--json")
    assert code == 0
    data = json.loads(out)
    assert data["scenario"] == "morning_offer"
    rows = {r["variant"]: r for r in data["funnel"]}
    assert rows["*"]["targeted"] == rows[DAY]["targeted"]  # one day so far
    return rows[DAY]


def _steps(row: dict) -> list[int]:
    return [row[k] for k in ("targeted", "queued", "sent", "delivered", "clicked", "redeemed")]


async def test_morning_offer_funnel_from_run_to_redemption(db, config, tmp_path, capsys):
    config = _config(config)
    clock = FakeClock(datetime(2026, 3, 6, 22, 0, tzinfo=UTC))  # 06:00 Shanghai, the 7th
    h = SandboxHarness(config, db, clock)
    make_customer(db, "ok1", clock.now(), tags=("早餐",))
    make_customer(db, "ok2", clock.now(), tags=("早餐",))
    make_customer(db, "out", clock.now(), tags=("早餐",), opt_out=True)
    capped = make_customer(db, "capped", clock.now(), tags=("早餐",))
    with db.transaction() as session:
        sync_definitions(session, config.coupons, clock.now())
        for i in range(config.marketing.max_per_window):  # the cap is already used up
            enqueue(
                session,
                key=f"test-promo:{i}",
                to=ConversationRef("sandbox", "capped", "capped"),
                text=f"promo {i}",
                now=clock.now(),
                customer_id=capped,
                purpose="campaign",
                priority=50,
            )
        sync_scenarios(session, config.scenarios.definitions, clock.now())
        sid = session.scalars(select(Scenario.id).where(Scenario.name == "morning_offer")).one()
    assert _report(db, tmp_path, capsys, "no_such")[0] == 1  # unknown scenario: clear error

    clock.set(datetime(2026, 3, 6, 23, 0, tzinfo=UTC))  # 07:00 Shanghai
    svc = services(db, config, clock)
    assert tick(svc, sid) == {"Asia/Shanghai": "sent"}
    row = _day(db, tmp_path, capsys)
    assert _steps(row) == [4, 2, 0, 0, 0, 0]
    assert row["dropped"] == 2
    assert row["dropped_by"] == {"opt_out": 1, "frequency_cap": 1}

    await h.deliver()
    assert "早上好" in (await h.bot_messages("ok1"))[-1]
    assert _steps(_day(db, tmp_path, capsys)) == [4, 2, 2, 2, 0, 0]

    await h.sandbox.receive(
        {"user_id": "ok1", "chat_id": "ok1", "button_data": "s:morning_offer:main:claim"}
    )
    await h.sandbox.receive(  # pressed twice: one click
        {"user_id": "ok1", "chat_id": "ok1", "button_data": "s:morning_offer:main:claim"}
    )
    assert _steps(_day(db, tmp_path, capsys)) == [4, 2, 2, 2, 1, 0]

    with db.sessions() as session:
        code = session.scalars(
            select(CouponCode.code).where(CouponCode.issue_key.like("scenario:morning_offer:%"))
        ).first()
    await h.say("manager", f"/redeem {format_code(code)} 30")
    assert _steps(_day(db, tmp_path, capsys)) == [4, 2, 2, 2, 1, 1]

    # The next morning nobody ran it inside the window: the day shows the missed zone.
    clock.set(datetime(2026, 3, 8, 3, 0, tzinfo=UTC))  # 11:00 Shanghai on the 8th
    assert tick(svc, sid) == {"Asia/Shanghai": "missed"}
    await h.say("manager", "/scenario stats morning_offer")
    await h.say("ok2", "/scenario stats morning_offer")  # not a manager: refused
    await h.deliver()
    table = (await h.bot_messages("manager"))[-1]
    lines = table.splitlines()
    assert lines[0].startswith("scenario morning_offer")
    assert [int(x) for x in lines[2].split()[1:]] == [4, 2, 2, 2, 2, 1, 1]
    assert f"{DAY}: frequency_cap=1, opt_out=1" in table
    assert "2026-03-08: missed window: Asia/Shanghai" in table
    assert "morning_offer" not in (await h.bot_messages("ok2"))[-1]

    code, out, _ = _report(db, tmp_path, capsys, "morning_offer")
    assert code == 0 and f"{DAY}: frequency_cap=1, opt_out=1" in out
    clock.advance(timedelta(minutes=1))
    assert tick(svc, sid) == {}
