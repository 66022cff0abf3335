"""Crash safety of the batched inbound pipeline in a real ``siyu run`` process.

100 concurrent senders post a burst of 600 events (four per user) to the sandbox API,
so batches are in flight and requests wait for theirs at every moment; the process is
killed with SIGKILL after a quarter of them are acknowledged. A platform retries what was
not acknowledged: after a restart every unacknowledged event is sent again (and some
acknowledged ones too, as a platform whose acknowledgement was lost would). Every event must then be processed exactly
once and its reply queued exactly once, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
from collections.abc import Callable

import httpx
import pytest
from sqlalchemy import func, select

from storage.db import Database
from storage.models import Interaction, OutboxMessage, ProcessedInbound, SandboxMessage
from tests.support import free_port
from tests.test_crash_recovery import start

pytestmark = pytest.mark.slow

N = 600
SENDERS = 100
USERS = 150


async def send_all(
    url: str,
    events: list[int],
    acknowledged: set[int],
    *,
    kill_after: int | None = None,
    kill: Callable[[], None] | None = None,
) -> list[str]:
    """Post the events from SENDERS concurrent senders; record which were acknowledged.
    With ``kill_after``, ``kill`` is called once that many are acknowledged. Returns the
    answers that were not acknowledgements."""
    pending = list(reversed(events))
    refusals: list[str] = []

    async def sender(client: httpx.AsyncClient) -> None:
        nonlocal kill
        while pending:
            i = pending.pop()
            body = {"user_id": f"u{i % USERS}", "text": "/start", "message_id": f"m{i}"}
            try:
                r = await client.post(f"{url}/sandbox/api/messages", json=body)
            except httpx.HTTPError:
                continue  # not acknowledged: the platform will retry it
            if r.status_code == 202:
                acknowledged.add(i)
            else:
                refusals.append(f"{r.status_code} {r.text[:200]}")
            if kill is not None and kill_after is not None and len(acknowledged) >= kill_after:
                kill, do_kill = None, kill
                do_kill()

    limits = httpx.Limits(max_connections=SENDERS)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        await asyncio.gather(*(sender(client) for _ in range(SENDERS)))
    return refusals


async def test_sigkill_during_a_burst_then_retries_process_every_event_once(tmp_path, db_url):
    port = free_port()
    cfg = tmp_path / "siyu.toml"
    cfg.write_text(
        f'[database]\nurl = "{db_url}"\n[web]\nport = {port}\n'
        '[sandbox]\nenabled = true\n[logging]\nlevel = "WARNING"\n',
        encoding="utf-8",
    )
    url = f"http://127.0.0.1:{port}"
    acknowledged: set[int] = set()

    first = start(cfg, port, tmp_path)
    # SIGKILL mid-burst: batches in flight, requests waiting for their batch.
    await send_all(
        url,
        list(range(N)),
        acknowledged,
        kill_after=N // 4,
        kill=lambda: first.send_signal(signal.SIGKILL),
    )
    first.wait(timeout=30)
    assert N // 4 <= len(acknowledged) < N, "the kill came too late to test anything"

    db = Database(db_url)
    try:
        with db.sessions() as s:
            stored = s.scalar(select(func.count()).select_from(ProcessedInbound))
        assert stored >= len(acknowledged)  # everything acknowledged was recorded

        second = start(cfg, port, tmp_path)
        try:
            unacknowledged = [i for i in range(N) if i not in acknowledged]
            resent = unacknowledged + sorted(acknowledged)[: N // 6]  # lost acknowledgements
            refusals = await send_all(url, resent, acknowledged)
            assert refusals == []
            for _ in range(3):  # what timed out is retried, as the platforms do
                if len(acknowledged) < N:
                    await send_all(
                        url, [i for i in range(N) if i not in acknowledged], acknowledged
                    )
            assert len(acknowledged) == N
            with db.sessions() as s:
                assert s.scalar(select(func.count()).select_from(ProcessedInbound)) == N
                assert s.scalar(select(func.count()).select_from(Interaction)) == N
                per_event = s.execute(
                    select(func.count(func.distinct(Interaction.event_id)))
                ).scalar_one()
                assert per_event == N
                replies = s.scalar(select(func.count()).select_from(OutboxMessage))
                assert replies == N  # one welcome per event, none twice
            deadline = asyncio.get_running_loop().time() + 300
            while asyncio.get_running_loop().time() < deadline:
                with db.sessions() as s:
                    sent = s.scalar(
                        select(func.count())
                        .select_from(OutboxMessage)
                        .where(OutboxMessage.status == "sent")
                    )
                if sent == N:
                    break
                await asyncio.sleep(0.1)
            with db.sessions() as s:
                per_key = s.execute(
                    select(SandboxMessage.outbox_key, func.count())
                    .where(SandboxMessage.direction == "out")
                    .group_by(SandboxMessage.outbox_key)
                ).all()
            assert len(per_key) == N and all(n == 1 for _, n in per_key)
        finally:
            second.send_signal(signal.SIGTERM)
            try:
                second.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                second.kill()
    finally:
        db.close()
