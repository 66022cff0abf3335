"""``/metrics`` after a small run over real HTTP: the series carry the right values, and
the endpoint refuses callers without the API key; ``[metrics] port`` serves it on loopback;
``/livez`` and ``/readyz``; JSON logs carry event and outbox ids."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import replace
from datetime import timedelta

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select

from bot.app.assembly import build
from bot.app.logs import JsonFormatter, configure_logging
from bot.core.clock import SystemClock
from bot.core.events import ConversationRef
from bot.outbox import queue as outbox
from storage.campaigns import Campaign
from storage.db import Database
from storage.models import OutboxMessage
from tests.fakes.telegram import TOKEN, FakeBotAPI, message, private_chat, user
from tests.support import LiveServer, free_port

API_KEY = "metrics-key-0123456789abcdef"


def _samples(body: str) -> dict[tuple[str, tuple], float]:
    out = {}
    for family in text_string_to_metric_families(body):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _value(samples, name: str, **labels) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def _run_config(config, db_url: str, api: FakeBotAPI):
    return config.replace(
        database=replace(config.database, url=db_url),
        api=replace(config.api, key=API_KEY),
        sandbox=replace(config.sandbox, enabled=True),
        telegram=replace(config.telegram, token=TOKEN, base_url=api.base_url, poll_timeout=1),
        scenarios=replace(config.scenarios, scheduler=True, tick_seconds=1.0),
        process=replace(config.process, standby_seconds=0.2),
    )


async def _until(predicate, timeout=20.0, what=""):
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


def _seed_waiting_rows(db: Database) -> None:
    """Three marketing rows for a channel nobody serves (they wait) and a live campaign."""
    now = SystemClock().now()
    with db.transaction() as session:
        campaign = Campaign(name="spring", status="running")
        session.add(campaign)
        session.flush()
        for i in range(3):
            outbox.enqueue(
                session,
                to=ConversationRef("wechat", f"o{i}", f"o{i}"),
                text="春季新品",
                key=f"metrics-test:{i}",
                purpose="marketing",
                now=now - timedelta(seconds=120 + i),
            )
        session.flush()
        session.execute(
            OutboxMessage.__table__.update()
            .where(OutboxMessage.idempotency_key.like("metrics-test:%"))
            .values(source_kind="campaign", source_id=campaign.id)
        )


async def test_metrics_show_the_series_of_a_small_run(config, sqlite_url):
    db = Database(sqlite_url)
    _seed_waiting_rows(db)
    async with FakeBotAPI() as api:
        api.fail_next("sendMessage", 429, "Too Many Requests: retry after 1", retry_after=1)
        app = build(_run_config(config, sqlite_url, api), db=db)
        with LiveServer(app) as server:
            async with httpx.AsyncClient(base_url=server.url) as http:
                assert (await http.get("/livez")).json() == {"status": "ok", "role": "all"}
                await _until(
                    lambda: _ready(http), what="readiness (telegram connected, runtime started)"
                )
                for i in range(3):
                    r = await http.post(
                        "/sandbox/api/messages",
                        json={"user_id": f"u{i}", "text": "/start"},
                        headers={"Origin": server.url},
                    )
                    assert r.status_code == 202, r.text
                api.push(message(private_chat(42), user(42), "/start"))

                def delivered() -> tuple[int, int]:
                    with db.sessions() as s:
                        rows = s.execute(
                            select(OutboxMessage.channel, func.count())
                            .where(OutboxMessage.status == "sent")
                            .group_by(OutboxMessage.channel)
                        ).all()
                    return dict(rows).get("sandbox", 0), dict(rows).get("telegram", 0)

                async def all_sent() -> bool:
                    sandbox_sent, telegram_sent = await asyncio.to_thread(delivered)
                    return sandbox_sent >= 3 and telegram_sent >= 1

                await _until(all_sent, what="the replies delivered (one Telegram 429 first)")

                async def scheduled() -> bool:
                    body = (await _scrape(http)).text
                    return "siyu_scheduler_lateness_seconds_count" in body

                await _until(scheduled, what="a scheduler run")
                assert (await http.get("/metrics")).status_code == 401
                wrong = {"Authorization": "Bearer nope"}
                assert (await http.get("/metrics", headers=wrong)).status_code == 401
                r = await _scrape(http)
        sandbox_sent, telegram_sent = delivered()
    db.close()

    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    m = _samples(r.text)
    assert _value(m, "siyu_events_in_total", channel="sandbox") == 3
    assert _value(m, "siyu_events_in_total", channel="telegram") == 1
    assert _value(m, "siyu_handler_errors_total", channel="sandbox") == 0
    assert (
        _value(m, "siyu_sends_total", channel="sandbox", purpose="reply", result="sent")
        == sandbox_sent
    )
    assert (
        _value(m, "siyu_sends_total", channel="telegram", purpose="reply", result="sent")
        == telegram_sent
    )
    assert (
        _value(m, "siyu_sends_total", channel="telegram", purpose="reply", result="rate_limited")
        == 1
    )
    assert _value(m, "siyu_rate_limited_total", channel="telegram") == 1
    assert _value(m, "siyu_delivery_retries_total", channel="telegram") == 1
    assert (
        _value(m, "siyu_delivery_latency_seconds_count", channel="sandbox", purpose="reply")
        == sandbox_sent
    )
    # the Telegram reply waited out its retry_after: latency of a second or more
    assert (
        _value(
            m, "siyu_delivery_latency_seconds_bucket", channel="telegram", purpose="reply", le="0.5"
        )
        == 0
    )
    assert _value(m, "siyu_outbox_depth", channel="wechat", purpose="marketing") == 3
    assert _value(m, "siyu_outbox_oldest_age_seconds", channel="wechat", purpose="marketing") >= 122
    assert _value(m, "siyu_outbox_depth", channel="sandbox", purpose="reply") is None  # all sent
    assert _value(m, "siyu_campaign_messages", campaign="spring", status="pending") == 3
    assert _value(m, "siyu_scheduler_lateness_seconds_count", job="campaigns:due") >= 1


async def _ready(http: httpx.AsyncClient) -> bool:
    return (await http.get("/readyz")).status_code == 200


async def _scrape(http: httpx.AsyncClient) -> httpx.Response:
    return await http.get("/metrics", headers={"Authorization": f"Bearer {API_KEY}"})


async def test_readyz_is_503_until_migrated_and_started(config, empty_sqlite_url, tmp_path):
    db = Database(empty_sqlite_url)
    app = build(config.replace(database=replace(config.database, url=empty_sqlite_url)), db=db)
    from bot.web.ops import readiness

    reasons = await db.run(readiness, app.runtime)
    assert reasons == ["not started", "database not migrated"]
    db.migrate()
    await app.runtime.start()
    try:
        assert await db.run(readiness, app.runtime) == []
    finally:
        await app.runtime.stop()
    db.close()


def _on_metrics_port(config, sqlite_url):
    """An app whose ``/metrics`` is on a port of its own: (port, config, database, app)."""
    port = free_port()
    cfg = config.replace(
        database=replace(config.database, url=sqlite_url),
        metrics=replace(config.metrics, port=port),
    )
    db = Database(sqlite_url)
    return port, cfg, db, build(cfg, db=db)


async def test_metrics_port_serves_on_loopback_without_a_key(config, sqlite_url):
    port, _, db, app = _on_metrics_port(config, sqlite_url)
    with LiveServer(app) as server:
        async with httpx.AsyncClient() as http:
            assert (await http.get(f"{server.url}/metrics")).status_code == 404  # not here
            r = await http.get(f"http://127.0.0.1:{port}/metrics")
            assert r.status_code == 200 and "siyu_outbox_depth" in r.text
            with pytest.raises(httpx.ConnectError):  # loopback only
                await http.get(f"http://{_outside_address()}:{port}/metrics", timeout=1)
    db.close()


def test_metrics_count_batch_jobs_by_kind_and_status_and_the_runs_of_this_process(
    config, sqlite_url
):
    from bot.jobs import queue
    from bot.jobs.worker import JobRefused, JobWorker
    from storage.jobs import BatchJob

    port, cfg, db, app = _on_metrics_port(config, sqlite_url)

    def refuse(services, job):
        raise JobRefused("the file has no header")

    worker = JobWorker(app.runtime, {"demo": lambda s, j: {"ok": 1}, "bad": refuse}, cfg.jobs)
    with LiveServer(app):
        now = app.runtime.clock.now()
        with db.transaction() as s:
            for kind, key in (("demo", "d1"), ("bad", "b1"), ("idle", "i1"), ("idle", "i2")):
                queue.enqueue(s, kind=kind, key=key, payload={}, now=now)
        ran = []
        while (job := worker.run_one()) is not None:
            ran.append(job.kind)
        assert sorted(ran) == ["bad", "demo"]
        with db.transaction() as s:  # one idle job is being run elsewhere
            s.execute(
                BatchJob.__table__.update()
                .where(BatchJob.idempotency_key == "i2")
                .values(status="running", claimed_by="elsewhere")
            )
        r = httpx.get(f"http://127.0.0.1:{port}/metrics")
    db.close()
    m = _samples(r.text)
    assert _value(m, "siyu_jobs", kind="idle", status="queued") == 1
    assert _value(m, "siyu_jobs", kind="idle", status="running") == 1
    assert _value(m, "siyu_jobs", kind="bad", status="failed") == 1
    assert _value(m, "siyu_jobs", kind="demo", status="queued") is None  # done: not counted
    assert _value(m, "siyu_job_runs_total", kind="demo", outcome="done") == 1
    assert _value(m, "siyu_job_runs_total", kind="bad", outcome="refused") == 1
    assert _value(m, "siyu_job_run_duration_seconds_count", kind="demo") == 1


def _outside_address() -> str:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("10.255.255.255", 1))
        address = s.getsockname()[0]
    if address.startswith("127."):
        pytest.skip("no non-loopback address on this machine")
    return address


def test_json_logs_carry_event_and_outbox_ids(config, capsys):
    configure_logging(config.replace(logging=replace(config.logging, format="json")))
    try:
        from bot.core.logcontext import EVENT_ID

        token = EVENT_ID.set("ev123")
        logging.getLogger("siyu.test").warning("routing %s", "x", extra={"outbox_id": 7})
        EVENT_ID.reset(token)
        line = capsys.readouterr().err.strip().splitlines()[-1]
        entry = json.loads(line)
        assert entry["event_id"] == "ev123" and entry["outbox_id"] == 7
        assert entry["message"] == "routing x" and entry["level"] == "WARNING"
        assert isinstance(logging.getLogger().handlers[0].formatter, JsonFormatter)
    finally:
        configure_logging(config)
