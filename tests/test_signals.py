"""In-process signals: a tracked-link click is published; its followers cannot undo it."""

from __future__ import annotations

import contextlib

from sqlalchemy import select
from starlette.testclient import TestClient

from bot.core.signals import Bus, LinkClicked
from bot.marketing.campaigns.funnel import funnel
from bot.marketing.campaigns.manage import launch
from storage import repos
from storage.campaigns import Campaign
from storage.links import TrackedLink
from tests.test_tracked_links import TOKEN, _setup, _texts


def test_a_failing_follower_leaves_the_click_and_the_other_followers_alone(
    sqlite_db, config, clock
):
    app, services, ids, campaign_id = _setup(sqlite_db, config, clock)
    seen: list[LinkClicked] = []

    def broken(session, event: LinkClicked) -> None:
        session.add(TrackedLink(token="x" * 22, outbox_key="nope", seq=99, url="u"))
        raise RuntimeError("a follower bug")

    app.runtime.bus.subscribe(LinkClicked, broken)
    app.runtime.bus.subscribe(LinkClicked, lambda session, event: seen.append(event))
    launch(services, campaign_id)
    token = TOKEN.findall(_texts(sqlite_db)[ids[0]])[0]
    r = TestClient(app.asgi).get(f"/r/{token}", follow_redirects=False)
    assert r.status_code == 302
    assert [(e.customer_id, e.campaign_id, e.seq) for e in seen] == [(ids[0], campaign_id, 0)]
    with sqlite_db.sessions() as session:
        assert session.scalar(select(TrackedLink.clicks).where(TrackedLink.token == token)) == 1
        assert session.scalar(select(TrackedLink).where(TrackedLink.seq == 99)) is None
        total = funnel(session, session.get(Campaign, campaign_id))[-1]
        assert total.clicked == 1  # the campaign follower ran before the broken one
        tags = [t.tag.name for t in repos.tags_of(session, ids[0], clock.now())]
        assert "逛商城" in tags  # so did tagging


def test_unsubscribe_stops_the_follower():
    bus, seen = Bus(), []
    stop = bus.subscribe(LinkClicked, lambda session, event: seen.append(event))

    class Savepoints:  # a session's begin_nested, for a bus used without a database
        def begin_nested(self):
            return contextlib.nullcontext()

    event = LinkClicked(1, "https://x", None, 0, None)  # type: ignore[arg-type]
    bus.publish(Savepoints(), event)  # type: ignore[arg-type]
    stop()
    bus.publish(Savepoints(), event)  # type: ignore[arg-type]
    assert seen == [event]
