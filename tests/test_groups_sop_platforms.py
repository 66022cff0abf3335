"""SOP posts across processes (two Siyu processes on one PostgreSQL post a slot once) and
to WeCom customer groups (a group mass-send task that waits for the owner's confirmation)."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select

from bot.core.templating import Renderer
from bot.groups import sop
from storage import repos
from storage.db import Database
from storage.groups import GroupPost, SopRun
from storage.models import OutboxMessage
from tests import test_wecom_callbacks as wecom
from tests.support import free_port
from tests.wechat_fakes import RunningSiyu, wait_until

ROOT = Path(__file__).resolve().parent.parent
CORP, post = wecom.CORP, wecom.post
# the WeCom fixtures (config, callback signer; the fake API server is tests/conftest.py's)
wc_config, signer = wecom.wc_config, wecom.signer


@pytest.mark.slow
def test_two_processes_post_a_slot_once(pg_url, config):
    db = Database(pg_url)
    db.migrate()
    now = datetime.now(UTC)
    zone = ZoneInfo(config.general.timezone)
    slot = (now - timedelta(minutes=1)).astimezone(zone).replace(second=0, microsecond=0)
    with db.transaction() as s:
        for chat in ("-100501", "-100502"):
            repos.ensure_group(s, "telegram", chat, f"群{chat}")
        spec = sop.parse_plan(f"soon daily {slot:%H:%M} to=all | 开抢啦", Renderer())
        plan = sop.create_plan(s, spec, config=config, now=now, created_by="test")
        plan.checked_until = slot.astimezone(UTC) - timedelta(minutes=2)  # due, not late
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    wait = 8.0  # ticks every 0.3 s: three or more between the two even on a busy machine
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.groups_proc", pg_url, str(wait)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    try:
        for p, (_, err) in zip(procs, outputs, strict=True):
            assert p.returncode == 0, err
        executed = [int(out.strip().splitlines()[-1].split("=")[1]) for out, _ in outputs]
        assert sum(executed) >= 3
        with db.sessions() as s:
            runs = s.scalars(select(SopRun)).all()
            keys = s.scalars(
                select(OutboxMessage.idempotency_key).where(OutboxMessage.purpose == "group_post")
            ).all()
        assert [r.status for r in runs] == ["posted"]
        assert len(keys) == 2 and len(set(keys)) == 2
    finally:
        db.close()


async def test_a_wecom_group_post_waits_for_the_owners_confirmation(
    wc_config,
    signer,
    clock,
    sqlite_db,
    fake_api,
):
    joined = {
        "ToUserName": CORP,
        "FromUserName": "sys",
        "CreateTime": int(clock.now().timestamp()),
        "MsgType": "event",
        "Event": "change_external_chat",
        "ChatId": "wrGROUP9",
        "ChangeType": "update",
        "UpdateDetail": "add_member",
        "JoinScene": 1,
        "MemChangeCnt": 1,
        "MemChangeList": ["wmSOMEONE"],
    }
    mass = "externalcontact/add_msg_template"
    async with RunningSiyu(wc_config, sqlite_db, clock, free_port()) as siyu:
        assert (await post(siyu, signer, joined)).status_code == 200
        services = sop_services(siyu)
        with sqlite_db.transaction() as s:
            spec = sop.parse_plan(
                "weekend fri 09:30 to=wecom:wrGROUP9 | 周末出游团报名中", Renderer()
            )
            sop.create_plan(s, spec, config=siyu.runtime.config, now=clock.now(), created_by="t")
        clock.advance(timedelta(minutes=31))  # Friday 09:31 in Shanghai
        assert sop.run_due(services) == {"weekend": 1}
        siyu.runtime.worker.wake()
        await wait_until(lambda: len(fake_api.calls_to(mass)) == 1)
        (call,) = fake_api.calls_to(mass)
        assert call.body["chat_type"] == "group"
        assert call.body["chat_id_list"] == ["wrGROUP9"]
        assert call.body["sender"] == "staff-owner"
        assert call.body["text"]["content"] == "周末出游团报名中"
        await wait_until(lambda: report(sqlite_db)["status"] == {"awaiting_confirm": 1})

        fake_api.mass_status[next(iter(fake_api.mass_tasks))] = 1  # the owner confirmed
        await siyu.adapter("wecom").poll_mass_tasks()
    assert report(sqlite_db)["status"] == {"sent": 1}
    with sqlite_db.sessions() as s:
        assert s.scalar(select(func.count()).select_from(GroupPost)) == 1


def sop_services(siyu):
    from bot.app.services import Services

    rt = siyu.runtime
    return Services(rt.db, rt.config, rt.renderer, rt.clock)


def report(db) -> dict:
    with db.sessions() as s:
        (entry,) = sop.plan_report(s, sop.find_plan(s, "weekend"))
        return entry
