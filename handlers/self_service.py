"""What a customer can do on their own: be greeted, see their coupons, say thanks, rate.

- ``greeting``: "你好", "hi", "hello" … (the whole message) get a greeting that says what
  the bot can do, instead of "I did not understand";
- ``my_coupons``: ``/coupons``, "我的券", "my coupons" list the customer's valid, unused
  coupons with their expiry in the customer's own time;
- ``pleasantry``: "谢谢", "好的", "👍" … get a short friendly answer; they are not a
  misunderstanding, and a VIP's thanks opens no staff ticket;
- ``rating``: the 1–5 buttons under the closing message after staff resolved a matter.
"""

from __future__ import annotations

import re

from bot.conversations.handoff import RATING_PREFIX, record_rating
from bot.core import filters as f
from bot.core.context import Context
from bot.core.events import EventKind
from bot.marketing.coupons import format_code, valid_codes
from bot.marketing.policy import customer_zone
from bot.measures import surveys

__all__ = [
    "greeting",
    "is_greeting",
    "is_my_coupons",
    "is_pleasantry",
    "is_rating",
    "my_coupons",
    "pleasantry",
    "rating",
]

_PUNCT = re.compile(r"[\s!！。.,，~～?？、]+")
GREETINGS = frozenset(
    {"你好", "您好", "hi", "hello", "hey", "嗨", "哈喽", "在吗", "在不在", "早上好", "晚上好",
     "下午好", "good morning", "good evening"}
)  # fmt: skip
PLEASANTRIES = frozenset(
    {"谢谢", "谢谢你", "谢谢您", "多谢", "感谢", "好的", "好滴", "ok", "okay",
     "收到", "知道了", "明白", "明白了", "thanks", "thankyou", "thx", "👍", "🙏", "👌", "😊",
     "好的谢谢", "好的，谢谢", "谢啦", "辛苦了"}
)  # fmt: skip
MY_COUPONS = frozenset({"我的券", "我的优惠券", "优惠券", "mycoupons", "coupons", "我的卡券"})


def _norm(text: str | None) -> str:
    return _PUNCT.sub("", (text or "").strip().lower())[:40]


is_greeting = (
    f.is_private & f.text & f.Filter(lambda c: _norm(c.event.text) in GREETINGS, "greeting")
)
is_pleasantry = (
    f.is_private
    & f.text
    & f.Filter(lambda c: _norm(c.event.text) in {_norm(p) for p in PLEASANTRIES}, "pleasantry")
)
is_my_coupons = f.is_private & (
    f.command("coupons")
    | (f.text & f.Filter(lambda c: _norm(c.event.text) in MY_COUPONS, "my_coupons"))
)
is_rating = f.kind(EventKind.BUTTON) & f.Filter(
    lambda c: (c.event.button_data or "").startswith(RATING_PREFIX), "rating"
)


def greeting(ctx: Context) -> None:
    """Greet the customer by name and say what the bot can do."""
    ctx.reply("greeting", name=ctx.customer.display_name if ctx.customer else "")


def pleasantry(ctx: Context) -> None:
    """A short, friendly answer to thanks and okays."""
    ctx.reply("pleasantry")


def my_coupons(ctx: Context) -> None:
    """The customer's valid, unused coupons with expiry (their own time), newest first."""
    assert ctx.customer is not None
    zone = customer_zone(ctx.customer)
    rows = valid_codes(ctx.session, ctx.customer.id, ctx.now)
    coupons = [
        {
            "code": format_code(code.code),
            "title": coupon.title,
            "expires": code.expires_at.astimezone(zone).strftime("%Y-%m-%d %H:%M"),
            "min_spend": coupon.min_spend_cents / 100 if coupon.min_spend_cents else None,
        }
        for code, coupon in rows
    ]
    ctx.reply("my_coupons", coupons=coupons)


def rating(ctx: Context) -> None:
    """Store the customer's 1–5 rating of a resolved conversation (once) and thank them.

    The rating is also the ``csat`` survey's answer for that conversation (source
    ``handoff:<ticket>``, the staff member who had it), so ``siyu report survey csat``
    shows satisfaction per staff member and a low score goes back to staff."""
    assert ctx.customer is not None
    data = ctx.event.button_data or ""
    outcome, score = record_rating(ctx.session, ctx.customer.id, data, ctx.now)
    if outcome == "rated" and score is not None:
        ticket_id = data.removeprefix(RATING_PREFIX).partition(":")[0]
        try:
            survey = surveys.survey_def(ctx.config, "csat")
        except surveys.SurveyError:
            survey = None  # no csat survey configured: the rating stays on the ticket
        if survey is not None and survey.kind == "csat":
            surveys.record_score(
                ctx.session,
                config=ctx.config,
                survey=survey,
                customer=ctx.customer,
                conversation=ctx.conversation,
                channel=ctx.event.channel,
                score=score,
                source=f"handoff:{ticket_id}",
                now=ctx.now,
            )
    ctx.reply("handoff_rated", outcome=outcome, score=score)
