"""A campaign preview's audience on both backends: the customers of the segment, those it
can reach now (not opted out, frequency cap not full — as the send policy decides for each
one), and samples only among those; the capped customers looked up once, also as one array
parameter when there are many."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest
from sqlalchemy import select

from bot.core.events import ConversationRef
from bot.core.templating import Renderer
from bot.marketing import policy
from bot.marketing.campaigns import manage
from bot.marketing.campaigns.spec import parse_spec
from bot.outbox import queue as outbox
from storage.console import CAPPED_PURPOSES
from storage.models import Customer, OutboxMessage
from tests.campaign_support import make_customer


def _sent(session, customer_id: int, key: str, at, *, purpose="campaign", status="sent") -> None:
    outbox.enqueue(session, key=key, to=ConversationRef("sandbox", f"c{customer_id}", f"c{customer_id}"),
                   text="hi", now=at, customer_id=customer_id, purpose=purpose)  # fmt: skip
    row = session.scalars(select(OutboxMessage).where(OutboxMessage.idempotency_key == key)).one()
    row.status = status


@pytest.mark.parametrize("in_list", [500, 0])
def test_the_preview_counts_whom_the_policy_would_let_through(
    db, config, clock, monkeypatch, in_list
):
    monkeypatch.setattr(manage, "_IN_LIST", in_list)  # 0: the capped ids as one array
    config = config.replace(marketing=replace(config.marketing, max_per_window=2, window_hours=24))
    now = clock.now()
    ids = [make_customer(db, f"p{i}", now, tags=("早餐",), opt_out=i % 7 == 0) for i in range(30)]
    other = make_customer(db, "nobody", now, tags=("读书",))
    with db.transaction() as s:
        for i, cid in enumerate(ids[:12]):
            if i % 3 == 0:  # two marketing messages in the window: capped
                _sent(s, cid, f"a{cid}", now - timedelta(hours=1))
                _sent(s, cid, f"b{cid}", now - timedelta(hours=5), purpose="survey")
            elif i % 3 == 1:  # one in the window, one before it: not capped
                _sent(s, cid, f"a{cid}", now - timedelta(hours=1))
                _sent(s, cid, f"b{cid}", now - timedelta(hours=30))
            else:  # two, but one failed and one a plain reply: not counted
                _sent(s, cid, f"a{cid}", now - timedelta(hours=1), status="failed")
                _sent(s, cid, f"b{cid}", now - timedelta(hours=2), purpose="reply")
        for k in range(3):  # someone outside the segment is capped too
            _sent(s, other, f"o{k}", now - timedelta(hours=k + 1))
        spec = parse_spec('p segment="tag:早餐" text="早上好"', config)
        campaign = manage.create_campaign(s, spec, config=config, renderer=Renderer(), now=now)
    with db.transaction() as s:
        customers = s.scalars(select(Customer).where(Customer.id.in_(ids))).all()
        allowed = sorted(
            c.id for c in customers if policy.check(s, c, now, config.marketing).reason != "opt_out"
            and policy.check(s, c, now, config.marketing).reason != "frequency_cap"
        )  # fmt: skip
        result = manage.preview(s, campaign, config=config, renderer=Renderer(), now=now)
    capped = {ids[i] for i in range(0, 12, 3)}
    opted_out = {ids[i] for i in range(0, 30, 7)}
    assert allowed == sorted(set(ids) - capped - opted_out)  # the hand count, by the policy
    assert (result.audience, result.reachable) == (30, len(allowed))
    shown = [name for name, _, _ in result.samples]
    assert shown == [f"p{i}" for i in range(30) if ids[i] in allowed][: manage.PREVIEW_SAMPLES]


def test_the_capped_purposes_index_matches_the_policy():
    assert CAPPED_PURPOSES == policy.MARKETING_PURPOSES
