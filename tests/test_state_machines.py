"""Persisted states move only as their transition tables allow; outbox rows know their source."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy import select

from bot.conversations.handoff_states import (
    IllegalHandoffTransition,
    handoff_transition,
    ticket_transition,
)
from bot.core.states import IllegalTransition
from bot.marketing.campaigns import manage
from bot.marketing.campaigns.spec import parse_spec
from bot.marketing.campaigns.status import CampaignError, IllegalCampaignTransition
from bot.marketing.campaigns.status import transition as campaign_transition
from bot.outbox.states import IllegalOutboxTransition
from bot.outbox.states import transition as outbox_transition
from storage.campaigns import Campaign
from storage.db import alembic_config, normalize_url
from storage.models import OutboxMessage
from tests.campaign_support import make_customer, services


@pytest.mark.parametrize(
    ("old", "new"),
    [("sent", "sending"), ("failed", "pending"), ("cancelled", "pending"), ("paused", "sent")],
)
def test_outbox_refuses_moves_outside_its_table(old, new):
    with pytest.raises(IllegalOutboxTransition) as caught:
        outbox_transition(old, new)
    assert caught.value.old == old and caught.value.new == new
    assert outbox_transition("pending", "sending") == "sending"
    assert outbox_transition("sending", "awaiting_confirm") == "awaiting_confirm"


def test_outbox_refuses_an_unknown_status():
    with pytest.raises(IllegalOutboxTransition):
        outbox_transition("pending", "lost")


@pytest.mark.parametrize(
    ("old", "new"), [("running", "pilot_pending"), ("draft", "running"), ("draft", "paused")]
)
def test_campaign_refuses_moves_outside_its_table(old, new):
    with pytest.raises(IllegalCampaignTransition) as caught:
        campaign_transition(old, new, name="spring")
    assert isinstance(caught.value, CampaignError)  # chat and CLI report it like any refusal
    assert "spring" in str(caught.value)
    assert campaign_transition("paused", "launch_pending") == "launch_pending"


def test_a_refused_campaign_move_is_told_in_the_readers_language():
    with pytest.raises(IllegalCampaignTransition) as caught:
        campaign_transition("draft", "paused", name="春季")
    zh, en = caught.value.text("zh-CN"), caught.value.text("en")
    assert "春季" in zh and "草稿" in zh and "已暂停" in zh and "试点排队中" in zh
    assert "draft" in en and "paused" in en and "pilot queued" in en
    assert "paused" not in zh and "draft" not in zh


@pytest.mark.parametrize(("old", "new"), [("bot", "staff"), ("staff", "waiting")])
def test_handoff_refuses_moves_outside_its_table(old, new):
    with pytest.raises(IllegalHandoffTransition):
        handoff_transition(old, new)
    assert handoff_transition("waiting", "staff") == "staff"


@pytest.mark.parametrize(("old", "new"), [("resolved", "claimed"), ("released", "waiting")])
def test_ticket_refuses_moves_outside_its_table(old, new):
    with pytest.raises(IllegalHandoffTransition) as caught:
        ticket_transition(old, new)
    assert isinstance(caught.value, IllegalTransition)
    assert ticket_transition("waiting", "resolved") == "resolved"


def _campaign(db, config, clock) -> tuple[object, int]:
    for i in range(3):
        make_customer(db, f"m{i}", clock.now(), tags=("早餐",))
    svc = services(db, config, clock)
    with db.transaction() as session:
        spec = parse_spec("spring segment=tag:早餐 pilot=0 holdout=0 text=早安", config)
        cid = manage.create_campaign(
            session, spec, config=config, renderer=svc.renderer, now=clock.now()
        ).id
    return svc, cid


def test_a_draft_cannot_be_paused_and_a_running_campaign_holds_its_own_rows(
    sqlite_db, config, clock
):
    svc, cid = _campaign(sqlite_db, config, clock)
    with pytest.raises(IllegalCampaignTransition):
        manage.pause(svc, cid)
    with sqlite_db.transaction() as session:
        # a reply to the same customer is not the campaign's and is never held
        session.add(
            OutboxMessage(
                idempotency_key="reply:x", channel="sandbox", chat_id="m0", user_id="m0",
                payload={"text": "hi"},
            )
        )  # fmt: skip
    assert manage.launch(svc, cid).queued == 3
    with sqlite_db.sessions() as session:
        rows = session.execute(
            select(OutboxMessage.purpose, OutboxMessage.source_kind, OutboxMessage.source_id).where(
                OutboxMessage.idempotency_key.like("campaign:%")
            )
        ).all()
    assert rows == [("campaign", "campaign", cid)] * 3
    assert manage.pause(svc, cid) == 3
    with sqlite_db.sessions() as session:
        statuses = dict(
            session.execute(select(OutboxMessage.idempotency_key, OutboxMessage.status)).all()
        )
        assert session.get(Campaign, cid).status == "paused"
    assert statuses.pop("reply:x") == "pending"
    assert set(statuses.values()) == {"paused"}
    assert manage.launch(svc, cid).new_rows == 0  # launched again: the held rows go back
    with sqlite_db.sessions() as session:
        assert set(session.scalars(select(OutboxMessage.status)).all()) == {"pending"}


def test_migration_fills_the_source_of_existing_rows(empty_db_url):
    db_url = empty_db_url
    engine = sa.create_engine(normalize_url(db_url))
    command.upgrade(alembic_config(db_url, engine), "0700")
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO campaigns (id, name, segment, variants, buttons, priority,"
                " pilot_share, holdout_share, pilot_hours, status, verdict, created_by,"
                " created_at) VALUES (12, 'spring', 'tag:x', '{}', '{}', 10, 0, 0, 24,"
                " 'running', '{}', '', '2026-01-01')"
            )
        )
        conn.execute(
            sa.text(
                "INSERT INTO scenarios (id, name, enabled, definition, updated_at)"
                " VALUES (7, 'morning', true, '{}', '2026-01-01')"
            )
        )
        for key, purpose in [
            ("campaign:12:5:main", "campaign"),
            ("campaign:1:5:main", "campaign"),  # no such campaign: left alone
            ("scenario:morning:2026-01-02:5", "campaign"),
            ("scenario:morningx:2026-01-02:5", "campaign"),  # not "morning"
            ("reply:abc:h:0", "reply"),
        ]:
            conn.execute(
                sa.text(
                    "INSERT INTO outbox (idempotency_key, channel, chat_id, user_id, purpose,"
                    " priority, payload, status, attempts, next_attempt_at, created_at)"
                    " VALUES (:k, 'sandbox', 'c', 'c', :p, 0, '{}', 'pending', 0,"
                    " '2026-01-01', '2026-01-01')"
                ),
                {"k": key, "p": purpose},
            )
    command.upgrade(alembic_config(db_url, engine), "0740")
    with engine.connect() as conn:
        rows = dict(
            (key, (purpose, kind, sid))
            for key, purpose, kind, sid in conn.execute(
                sa.text("SELECT idempotency_key, purpose, source_kind, source_id FROM outbox")
            )
        )
    engine.dispose()
    assert rows == {
        "campaign:12:5:main": ("campaign", "campaign", 12),
        "campaign:1:5:main": ("campaign", None, None),
        "scenario:morning:2026-01-02:5": ("scenario", "scenario", 7),
        "scenario:morningx:2026-01-02:5": ("scenario", None, None),  # a scenario row still
        "reply:abc:h:0": ("reply", None, None),
    }


def test_the_outbox_refuses_a_purpose_it_does_not_know(sqlite_db, clock):
    from bot.core.events import ConversationRef
    from bot.outbox import queue

    to = ConversationRef("sandbox", "c1", "c1")
    with sqlite_db.transaction() as session, pytest.raises(ValueError, match="purpose"):
        queue.enqueue(session, key="k1", to=to, text="hi", purpose="campaing", now=clock.now())
    with sqlite_db.transaction() as session:
        assert queue.enqueue(
            session, key="k2", to=to, text="hi", purpose="scenario", now=clock.now()
        )
