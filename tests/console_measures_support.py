"""Data for the console's Measures and Groups pages: customers with orders, messages, an
invite and survey answers over the last months; SOP plans that posted, FAQ entries and a
moderation action — each made through the project's own functions where one exists."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select

from bot.app.config import load_config
from bot.app.services import Services
from bot.core.clock import FakeClock
from bot.core.templating import Renderer
from bot.customers.rfm import recompute_scores
from bot.groups import faq, moderation, sop
from storage import repos
from storage.groups import FaqEntry, GroupPost
from storage.measures import Referral, SurveyResponse
from storage.models import Customer, Interaction
from storage.orders import Order


def seed_measures(db, now: datetime) -> dict[str, int]:
    """Five customers over the last months, with orders, messages, an invite and answers.

    A: joined 200 days ago, orders 190 and 20 and 10 days ago (a repeat buyer now).
    B: joined 40 days ago, ordered 35 days ago (previous period only).
    C: joined 20 days ago, sent messages 19 and 5 days ago, ordered 4 days ago.
    D: joined 15 days ago through A's invite, sent a message, never ordered.
    E: joined 3 days ago, only joined.
    """
    ago = lambda days: now - timedelta(days=days)  # noqa: E731
    joined = {"A": 200, "B": 40, "C": 20, "D": 15, "E": 3}
    ids: dict[str, int] = {}
    with db.transaction() as s:
        for name, days in joined.items():
            c = Customer(display_name=name, created_at=ago(days))
            c.city = "杭州" if name in ("A", "C") else "上海"
            s.add(c)
            s.flush()
            ids[name] = c.id
        for i, (name, days) in enumerate([("A", 190), ("A", 20), ("A", 10), ("B", 35), ("C", 4)]):
            s.add(Order(order_id=f"o{i}", customer_id=ids[name], amount_cents=9900,
                        ordered_at=ago(days)))  # fmt: skip
        for i, (name, days) in enumerate([("C", 19), ("C", 5), ("D", 14)]):
            s.add(Interaction(customer_id=ids[name], event_id=f"e{i}", channel="sandbox",
                              chat_id=name, kind="message", text="", payload={},
                              occurred_at=ago(days)))  # fmt: skip
        s.add(Referral(referrer_id=ids["A"], referred_id=ids["D"], code="abcdefgh",
                       channel="telegram", via="deep_link", created_at=ago(15)))  # fmt: skip
        answers = [
            ("A", "telegram", "lin", 10, 6),
            ("B", "telegram", "lin", 9, 5),
            ("C", "wechat_oa", "wu", 3, 2),
            ("D", "wechat_oa", None, 8, 1),
        ]
        for name, channel, staff, score, days in answers:
            s.add(SurveyResponse(survey="nps", kind="nps", customer_id=ids[name],
                                 channel=channel, source="command", staff=staff, score=score,
                                 answered_at=ago(days), flagged=score < 7))  # fmt: skip
        s.add(SurveyResponse(survey="csat", kind="csat", customer_id=ids["C"], channel="wechat_oa",
                             source="command", score=5, answered_at=ago(2), flagged=False))  # fmt: skip
    with db.transaction() as s:  # the scores keep each customer's first order (the cohorts)
        recompute_scores(s, load_config(None, environ={}), now)
    return ids


def seed_groups(db, config, now: datetime) -> None:
    renderer = Renderer()
    # 09:00 in Shanghai yesterday; the 09:30 slot falls due half an hour later.
    clock = FakeClock((now - timedelta(days=1)).replace(hour=1, minute=0, second=0, microsecond=0))
    with db.transaction() as s:
        group = repos.ensure_group(s, "telegram", "-100", "会员群")
        repos.ensure_group(s, "telegram", "-200", "福利群")
        spec = sop.parse_plan("morning daily 09:30 to=all | 早上好", renderer)
        sop.create_plan(s, spec, config=config, now=clock.now(), created_by="t")
        spec = sop.parse_plan("weekly mon 20:00 to=all | 周报", renderer)
        sop.create_plan(s, spec, config=config, now=clock.now(), created_by="t")
        spec = faq.parse_faq("几点发货 keywords=发货 groups=always | 16:00 前", renderer, config)
        faq.add_entry(s, spec, config=config, now=now, created_by="t")
        spec = faq.parse_faq("怎么退货 keywords=退货 | 七天内", renderer, config)
        faq.add_entry(s, spec, config=config, now=now, created_by="t")
        moderation.warn(s, group=group, now=now, config=config, renderer=renderer,
                        user_id="7", user_name="Q", reason="manual", actor="maria")  # fmt: skip
    clock.advance(timedelta(minutes=31))
    assert sop.run_due(Services(db, config, renderer, clock)).get("morning") == 2
    with db.transaction() as s:
        for post in s.scalars(select(GroupPost)):
            post.button_clicks, post.link_clicks = 3, 1
        entry = s.scalars(select(FaqEntry).where(FaqEntry.question == "几点发货")).one()
        entry.hits = 7
