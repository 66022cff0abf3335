"""Group commit at intake: WeChat callbacks arriving together are recorded in shared
transactions before they are answered, each still checked and stored on its own."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import httpx
from sqlalchemy import func, select

from storage.models import Interaction
from storage.wechat_inbound import InboundCallback
from tests.support import free_port
from tests.test_wechat_refusals import APP_ID, interactions, plain_config, text_message
from tests.wechat_fakes import CallbackSigner, RunningSiyu, random_aes_key

__all__ = ["plain_config"]  # the fixture, used by name


async def test_a_burst_is_recorded_together_and_a_replay_inside_it_is_refused_alone(
    plain_config, sqlite_db, clock
):
    signer = CallbackSigner(
        "callback-token", random_aes_key(), APP_ID, now=lambda: clock.now().timestamp()
    )
    originals = [
        signer.oa_callback(text_message(clock, f"原文{i}", i), aes=False) for i in range(10)
    ]
    replays = [
        (query, signer.oa_callback(text_message(clock, f"冒充{i}", 100 + i), aes=False)[1])
        for i, (query, _) in enumerate(originals)
    ]
    # What is checked is how the burst is stored, not WeChat's reply budget: a loaded
    # machine (parallel tests) may take longer than 3 s to store 180 callbacks.
    plain_config = plain_config.replace(
        wechat=replace(plain_config.wechat, reply_budget_seconds=30.0)
    )
    burst = [
        signer.oa_callback(
            text_message(clock, f"消息{i}", 1000 + i, sender=f"oSENDER{i % 40:021d}"), aes=False
        )
        for i in range(150)
    ]
    async with RunningSiyu(plain_config, sqlite_db, clock, free_port()) as siyu:
        url = f"{siyu.base}/wechat/callback"
        async with httpx.AsyncClient(timeout=30) as client:
            for query, body in originals:
                assert (await client.post(f"{url}?{query}", content=body)).text == "success"
            # the burst, WeChat's retries of some of it, and replays, all at once
            sent = burst + burst[:20] + replays
            answers = await asyncio.gather(
                *(client.post(f"{url}?{query}", content=body) for query, body in sent)
            )
        intake = siyu.adapter("wechat").journal._intake
    assert [a.text for a in answers[:170]] == ["success"] * 170
    assert all(a.status_code == 403 and "replay" in a.text for a in answers[170:])
    assert intake.largest_batch > 1, "callbacks arriving together share a transaction"
    with sqlite_db.sessions() as s:
        assert s.scalar(select(func.count()).select_from(InboundCallback)) == 160
        per_text = dict(
            s.execute(select(Interaction.text, func.count()).group_by(Interaction.text)).all()
        )
    assert per_text == {f"原文{i}": 1 for i in range(10)} | {f"消息{i}": 1 for i in range(150)}
    assert interactions(sqlite_db, "冒充0") == 0
