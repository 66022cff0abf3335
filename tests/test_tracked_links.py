"""Tracked links: track(url) in a campaign → /r/<token> per message; a click counts in the
funnel, the interactions and the link tags, then redirects; unknown tokens get a 404."""

from __future__ import annotations

import re
from dataclasses import replace
from urllib.parse import unquote

import pytest
from sqlalchemy import select
from starlette.testclient import TestClient

from bot.app.assembly import build
from bot.app.config import EventRule, LinksConfig
from bot.app.services import Services
from bot.core.templating import Renderer, TemplateRenderError
from bot.marketing.campaigns.funnel import funnel
from bot.marketing.campaigns.manage import build_push, create_campaign, launch, preview
from bot.marketing.campaigns.spec import parse_spec
from storage import repos
from storage.campaigns import Campaign
from storage.links import TrackedLink
from storage.models import Interaction, OutboxMessage
from tests.campaign_support import make_customer

SHOP = "https://shop.example/x?a=1&b=早餐"
TEXT = (
    '早安 {{ customer.name }}，看看 {{ track("' + SHOP + '") }} '
    '或者 {{ track("' + SHOP + '") }}，新品 {{ track("https://shop.example/new") }}'
)
TOKEN = re.compile(r"https://siyu\.example\.com/r/([A-Za-z0-9_-]+)")


def _setup(db, config, clock, text=TEXT, n=3):
    config = config.replace(
        database=replace(config.database, url=db.url),
        links=LinksConfig(base_url="https://siyu.example.com"),
        tagging=replace(
            config.tagging,
            events=[EventRule(tag="逛商城", trigger="link", value="https://shop.example/*")],
        ),
    )
    app = build(config, db=db, clock=clock)
    ids = [make_customer(db, f"l{i}", clock.now(), tags=("早餐",)) for i in range(n)]
    services = Services(db, config, Renderer(), clock)
    with db.transaction() as session:
        spec = parse_spec(f"links segment=tag:早餐 pilot=0 holdout=0 text='{text}'", config)
        campaign_id = create_campaign(
            session, spec, config=config, renderer=services.renderer, now=clock.now()
        ).id
    return app, services, ids, campaign_id


def _texts(db) -> dict[int, str]:
    with db.sessions() as session:
        rows = session.execute(select(OutboxMessage.customer_id, OutboxMessage.payload)).all()
    return {cid: payload["text"] for cid, payload in rows}


def test_each_message_gets_its_own_unguessable_tokens_once(db, config, clock):
    _app, services, ids, campaign_id = _setup(db, config, clock)
    assert launch(services, campaign_id).queued == 3
    texts = _texts(db)
    seen = set()
    for cid in ids:
        tokens = TOKEN.findall(texts[cid])
        assert len(tokens) == 3 and tokens[0] == tokens[1] != tokens[2]  # same URL, same token
        assert all(len(t) == 22 for t in tokens)
        seen |= set(tokens)
    assert len(seen) == 6  # no two messages share a token
    with db.sessions() as session:
        links = session.scalars(select(TrackedLink).order_by(TrackedLink.id)).all()
        assert {(link.customer_id, link.seq, link.url) for link in links} == {
            (cid, seq, url)
            for cid in ids
            for seq, url in enumerate([SHOP, "https://shop.example/new"])
        }
        assert {link.token for link in links} == seen
    # a re-run renders again but queues nothing and stores no new tokens
    with db.transaction() as session:
        campaign = session.get(Campaign, campaign_id)
        push = build_push(campaign, session, services.config, services.renderer)
        assert push.chunk(session, ids, clock.now()).new_rows == 0
    assert _texts(db) == texts
    with db.sessions() as session:
        assert len(session.scalars(select(TrackedLink)).all()) == 6


def test_a_click_counts_in_the_funnel_tags_and_redirects(db, config, clock):
    app, services, ids, campaign_id = _setup(db, config, clock)
    launch(services, campaign_id)
    client = TestClient(app.asgi)
    first = TOKEN.findall(_texts(db)[ids[0]])
    for token in (first[0], first[0], first[2]):
        r = client.get(f"/r/{token}", follow_redirects=False)
        assert r.status_code == 302
    assert r.headers["location"] == "https://shop.example/new"
    location = client.get(f"/r/{first[0]}", follow_redirects=False).headers["location"]
    assert unquote(location) == SHOP and " " not in location  # a valid Location header
    with db.sessions() as session:
        campaign = session.get(Campaign, campaign_id)
        total = funnel(session, campaign)[-1]
        assert (total.targeted, total.queued, total.clicked) == (3, 3, 1)  # people, not clicks
        clicks = dict(session.execute(select(TrackedLink.seq, TrackedLink.clicks).where(
            TrackedLink.customer_id == ids[0])).all())  # fmt: skip
        assert clicks == {0: 3, 1: 1}
        interactions = session.scalars(
            select(Interaction).where(Interaction.kind == "link_click")
        ).all()
        assert len(interactions) == 4 and {i.customer_id for i in interactions} == {ids[0]}
        assert interactions[0].text == SHOP
        now = clock.now()
        assert "逛商城" in [t.tag.name for t in repos.tags_of(session, ids[0], now)]
        assert "逛商城" not in [t.tag.name for t in repos.tags_of(session, ids[1], now)]


def test_unknown_or_unbound_tokens_get_a_clear_404(db, config, clock):
    app, _services, ids, _campaign = _setup(db, config, clock, n=1)
    with db.transaction() as session:  # a token whose message was never queued
        session.add(
            TrackedLink(token="x" * 22, outbox_key="campaign:999:1:main", seq=0, url=SHOP,
                        customer_id=ids[0], variant="main", clicks=0, created_at=clock.now())
        )  # fmt: skip
    client = TestClient(app.asgi)
    for path in ("/r/" + "A" * 22, "/r/short", "/r/" + "x" * 22, "/r/" + "%3Cscript%3E" * 3):
        r = client.get(path, follow_redirects=False)
        assert r.status_code == 404 and "链接无效" in r.text and "Link not found" in r.text


def test_a_bad_link_fails_the_preview_not_the_send(db, config, clock):
    _app, services, _ids, campaign_id = _setup(
        db, config, clock, text='看看 {{ track("javascript:alert(1)") }}'
    )
    with db.sessions() as session, pytest.raises(TemplateRenderError, match="http"):
        campaign = session.get(Campaign, campaign_id)
        preview(session, campaign, config=services.config, renderer=services.renderer,
                now=clock.now())  # fmt: skip
    assert dict(launch(services, campaign_id).dropped) == {"render_error": 3}
