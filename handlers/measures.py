"""Surveys, invites and referral attribution: the customer-facing side of the measures.

- ``survey_answer``: a press of a survey button (``sv:<survey>:<source>:<score>``), or a
  typed score right after a survey question, records the score; the "why?" follow-up takes
  the next message as the comment (``survey_comment``).
- ``my_invites``: "我的邀请" / "my invites" / ``/invite`` answer with the customer's code,
  link and counts.
- ``referral_attribution``: an arrival by invite (``/start ref_<code>``, QR scene or WeCom
  state ``ref_<code>``) is attributed to the referrer; it never answers.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from bot.core.context import Context
from bot.core.events import EventKind
from bot.core.filters import Filter, command, is_private
from bot.measures import referrals, surveys

__all__ = [
    "asks_invites",
    "comment_pending",
    "is_arrival",
    "is_survey_answer",
    "my_invites",
    "referral_attribution",
    "survey_answer",
    "survey_comment",
]

log = logging.getLogger(__name__)

INVITE_WORDS = ("我的邀请", "邀请好友", "my invites", "my invite", "invite friends")
COMMENT_KEY = "survey_comment"


def _button_answer(ctx: Context) -> tuple[str, int, str] | None:
    if ctx.event.kind is not EventKind.BUTTON:
        return None
    parsed = surveys.parse_button(ctx.event.button_data or "")
    if parsed is None:
        return None
    name, source, score = parsed
    return name, score, source


def _typed_answer(ctx: Context) -> tuple[str, int, str] | None:
    if (
        ctx.event.kind is not EventKind.MESSAGE
        or not ctx.event.is_private
        or ctx.customer is None
        or len(ctx.event.text) > 20
        # only text that reads as a score on some survey's scale is looked up
        or all(
            surveys.parse_score(ctx.event.text, s) is None for s in ctx.config.surveys.definitions
        )
    ):
        return None
    pending = surveys.pending_question(ctx.session, ctx.config, ctx.customer.id, ctx.now)
    if pending is None:
        return None
    try:
        survey = surveys.survey_def(ctx.config, pending.survey)
    except surveys.SurveyError:
        return None
    score = surveys.parse_score(ctx.event.text, survey)
    return None if score is None else (pending.survey, score, pending.source)


def _answer(ctx: Context) -> tuple[str, int, str] | None:
    return _button_answer(ctx) or _typed_answer(ctx)


is_survey_answer = Filter(lambda c: _answer(c) is not None, "survey_answer")


def survey_answer(ctx: Context) -> None:
    """Record the score; ask "why?" or thank the customer."""
    found = _answer(ctx)
    assert found is not None and ctx.customer is not None
    name, score, source = found
    try:
        survey = surveys.survey_def(ctx.config, name)
        row, flagged = surveys.record_score(
            ctx.session,
            config=ctx.config,
            survey=survey,
            customer=ctx.customer,
            conversation=ctx.conversation,
            channel=ctx.event.channel,
            score=score,
            source=source,
            now=ctx.now,
        )
    except surveys.SurveyError as exc:
        log.info("survey answer refused for event %s: %s", ctx.event.id, exc)
        return
    if survey.ask_comment and ctx.conversation is not None:
        until = ctx.now + timedelta(hours=ctx.config.surveys.comment_hours)
        ctx.state[COMMENT_KEY] = {"id": row.id, "until": until.isoformat(), "flagged": flagged}
        ctx.save_state()
        ctx.reply("survey_why", score=score)
    else:
        ctx.reply("survey_thanks", flagged=flagged)


def _comment_pending(ctx: Context) -> bool:
    if ctx.event.kind is not EventKind.MESSAGE or not ctx.event.is_private:
        return False
    if ctx.conversation is None or not (ctx.conversation.state or {}).get(COMMENT_KEY):
        return False
    pending = ctx.conversation.state[COMMENT_KEY]
    try:
        return datetime.fromisoformat(pending["until"]) > ctx.now
    except (KeyError, TypeError, ValueError):
        return False


comment_pending = Filter(_comment_pending, "survey_comment_pending")


def survey_comment(ctx: Context) -> None:
    """The customer's "why?": stored with their score, then thanks — also after a low score
    put the conversation in the staff queue (the thanks says a person will contact them)."""
    pending = ctx.state.pop(COMMENT_KEY)
    ctx.save_state()
    surveys.record_comment(ctx.session, int(pending["id"]), ctx.event.text)
    owned = ctx.conversation is not None and ctx.conversation.handoff_status == "staff"
    if not owned:  # staff who took the conversation over answer it themselves
        ctx.reply("survey_thanks", flagged=bool(pending.get("flagged")))


_invite_words = Filter(
    lambda c: (
        c.event.kind is EventKind.MESSAGE
        and c.event.text.strip().lower().rstrip("?？!！") in INVITE_WORDS
    ),
    "invite_words",
)
asks_invites = (command("invite") | _invite_words) & is_private


def my_invites(ctx: Context) -> None:
    """The customer's invite code, link and counts."""
    assert ctx.customer is not None
    summary = referrals.invite_summary(
        ctx.session, ctx.config, ctx.customer.id, ctx.event.channel, ctx.now
    )
    ctx.reply(
        "my_invites",
        code=summary.code,
        link=summary.link,
        invited=summary.invited,
        ordered=summary.ordered,
        rewards=summary.rewards,
    )


def _invite_code(ctx: Context) -> str | None:
    event = ctx.event
    if event.kind in (EventKind.SUBSCRIBE, EventKind.CONTACT_ADDED):
        value = event.button_data or ""  # the QR scene (OA) or the contact-way State (WeCom)
    elif event.kind is EventKind.COMMAND and event.command == "start" and event.args:
        value = event.args[0]
    else:
        return None
    return referrals.invite_from(value)


is_arrival = Filter(lambda c: c.config.referrals.enabled and _invite_code(c) is not None, "invite")


def referral_attribution(ctx: Context) -> None:
    """Attribute the arriving customer to the invite's owner (first touch wins)."""
    code = _invite_code(ctx)
    if code is None or ctx.customer is None:
        return
    result = referrals.attribute(
        ctx.session,
        config=ctx.config,
        renderer=ctx.renderer,
        newcomer=ctx.customer,
        channel=ctx.event.channel,
        code=code,
        now=ctx.now,
    )
    log.info("invite %s for customer %s: %s", code, ctx.customer.id, result.outcome)
