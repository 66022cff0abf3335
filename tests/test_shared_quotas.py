"""API quotas shared by processes through Redis: two real worker processes sending WeCom
messages through the fake WeCom API stay within one quota together; replies keep their
reserve when marketing fills a window; without Redis each process counts alone."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from bot.adapters.quotas import QuotaWindow, SharedQuota
from storage.bulk import insert_outbox_rows
from storage.db import Database
from storage.models import OutboxMessage
from tests.fakes.wechat import random_aes_key
from tests.processes import SiyuProcess, stop_all


def _queue(url: str, n: int) -> None:
    now = datetime.now(UTC)
    rows = [
        (
            f"quota:{i}",
            "wecom",
            f"app:user{i}",
            f"user{i}",
            None,
            "reply",
            0,
            '{"text": "您好"}',
            now,
            now,
        )
        for i in range(n)
    ]
    db = Database(url)
    with db.transaction() as session:
        insert_outbox_rows(session, rows)
    db.close()


def _settled(url: str) -> dict[str, int] | None:
    """The outbox's rows by status once no row is being sent or due within two seconds
    (what is left waits for the next quota window); None while deliveries go on."""
    db = Database(url)
    try:
        with db.sessions() as s:
            busy = s.scalar(
                select(func.count())
                .select_from(OutboxMessage)
                .where(
                    (OutboxMessage.status == "sending")
                    | (
                        (OutboxMessage.status == "pending")
                        & (
                            OutboxMessage.next_attempt_at
                            <= datetime.now(UTC) + timedelta(seconds=2)
                        )
                    )
                )
            )
            if busy:
                return None
            return dict(
                s.execute(
                    select(OutboxMessage.status, func.count()).group_by(OutboxMessage.status)
                ).all()
            )
    finally:
        db.close()


@pytest.mark.slow
def test_two_worker_processes_share_the_wecom_quota(pg_url, redis_url, fake_api, tmp_path):
    env = {
        "SIYU_DATABASE_URL": pg_url,
        "SIYU_WECOM_CORP_ID": "ww-test",
        "SIYU_WECOM_SECRET": "wecom-secret-0123",
        "SIYU_WECOM_AGENT_ID": "1000002",
        "SIYU_WECOM_TOKEN": "wecom-token",
        "SIYU_WECOM_ENCODING_AES_KEY": random_aes_key(),
        "SIYU_WECOM_API_BASE_URL": fake_api.base_url,
        "SIYU_LIMITS_REDIS_URL": redis_url,
        "SIYU_LIMITS_WECOM_PER_MINUTE": "5",
        "SIYU_LIMITS_WECOM_PER_HOUR": "5",
        # two rows a claim: both processes hold rows at once, so each would send up to
        # its own five if the quota were counted per process
        "SIYU_DELIVERY_BATCH_SIZE": "2",
        "SIYU_DELIVERY_POLL_INTERVAL_SECONDS": "0.2",
    }
    workers = [SiyuProcess("worker", env, tmp_path, f"worker-{i}") for i in range(2)]
    try:
        for w in workers:
            w.wait_ready()
        _queue(pg_url, 12)  # both are woken by the new rows at once
        deadline = time.monotonic() + 60
        while (states := _settled(pg_url)) is None:
            assert time.monotonic() < deadline, "deliveries never settled"
            time.sleep(0.1)
        sends = fake_api.calls_to("message/send")
        assert len(sends) == 5, [c.body for c in sends]
        assert states == {"sent": 5, "pending": 7}  # the rest wait for the next window
    finally:
        stop_all(workers)


async def test_replies_keep_their_reserve_when_marketing_fills_the_window(redis_url):
    name = f"test-{uuid.uuid4().hex[:8]}"
    now = [1_000_000.0]
    window = QuotaWindow("minute", 10, 60.0)
    quota = SharedQuota(name, [window], redis_url=redis_url, reply_reserve=0.2, now=lambda: now[0])
    other = SharedQuota(name, [window], redis_url=redis_url, reply_reserve=0.2, now=lambda: now[0])
    try:
        marketing = [await q.take("campaign") for q in (quota, other) for _ in range(5)]
        assert marketing.count(0.0) == 8  # 80% of the window for marketing, across both
        assert await quota.take("campaign") == pytest.approx(20.0)  # until the window ends
        assert await quota.take("reply") == 0.0 and await other.take("reply") == 0.0
        assert await other.take("reply") > 0  # the window is full now
        now[0] += 20.0  # the next window
        assert await quota.take("campaign") == 0.0
    finally:
        await quota.aclose()
        await other.aclose()


async def test_without_redis_each_process_counts_alone(caplog):
    window = QuotaWindow("minute", 2, 60.0)
    first, second = SharedQuota("solo", [window]), SharedQuota("solo", [window])
    assert "counted per process" in caplog.text
    assert [await first.take() for _ in range(3)][:2] == [0.0, 0.0]
    assert await second.take() == 0.0  # its own count: the processes add up


async def test_an_unreachable_redis_falls_back_to_counting_in_the_process(caplog):
    quota = SharedQuota("down", [QuotaWindow("minute", 1, 60.0)], redis_url="redis://127.0.0.1:1/0")
    try:
        assert await quota.take() == 0.0
        assert await quota.take() > 0
        assert "Redis unavailable" in caplog.text
    finally:
        await quota.aclose()


def test_windows_of_a_beijing_day():
    day = QuotaWindow("day", 1, 86400.0, 8 * 3600.0)
    midnight_beijing = datetime(2026, 3, 6, 16, 0, tzinfo=UTC).timestamp()
    before, ends = day.bucket(midnight_beijing - 1)
    after, _ = day.bucket(midnight_beijing)
    assert after == before + 1 and ends == midnight_beijing
