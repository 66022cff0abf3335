"""Satisfaction surveys in chat: NPS (0-10) or CSAT (1-5), then an optional "why?".

A survey question is one outbox message with the scale as buttons (data
``sv:<survey>:<source>:<score>``); it is sent to a segment (``siyu survey send``), by a
campaign or scenario that uses the survey's question, N days after each order
(``after_order_days``), or after a resolved handoff. Marketing sends obey the one policy
(opt-out, frequency cap, quiet hours). The customer answers by pressing a button or by
typing the number; a follow-up "why?" takes their next message as the comment. A score
below ``flag_below`` flags the conversation for staff. Results — count, average, NPS
(promoters 9-10 minus detractors 0-6) or CSAT (share of 4-5) — per period, segment,
channel, staff member and month: :func:`results`.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from bot.adapters.base import Button
from bot.app.config import Config, SurveyDef
from bot.core.events import ConversationRef
from bot.core.i18n import t
from bot.core.templating import Renderer
from bot.marketing import policy
from bot.measures.loyalty import in_members, segment_members
from bot.measures.periods import Period, month_index, month_label
from bot.outbox import queue as outbox
from storage.measures import SurveyResponse
from storage.models import Conversation, Customer, OutboxMessage

__all__ = [
    "BUTTON_PREFIX",
    "SurveyError",
    "SurveyResults",
    "format_results",
    "parse_button",
    "parse_score",
    "pending_question",
    "question",
    "question_template",
    "record_comment",
    "record_score",
    "results",
    "scale_buttons",
    "send",
    "survey_def",
]

BUTTON_PREFIX = "sv"
KEY_PREFIX = "survey"
SCALES = {"nps": (0, 10), "csat": (1, 5)}
_SCORE = re.compile(r"^\s*(\d{1,2})\s*(分|points?|/\s*10|/\s*5)?\s*[。.!！]?\s*$", re.I)


class SurveyError(ValueError):
    """A survey that does not exist or cannot be sent, and why."""


def survey_def(config: Config, name: str) -> SurveyDef:
    for item in config.surveys.definitions:
        if item.name == name:
            return item
    known = ", ".join(s.name for s in config.surveys.definitions) or "none"
    raise SurveyError(f"no survey named {name!r} (known: {known})")


def question(
    renderer: Renderer, survey: SurveyDef, customer: Customer, source: str
) -> tuple[str, list[Button]]:
    """The question's text in the customer's locale and its score buttons."""
    text = renderer.render(question_template(survey), customer.locale, customer=customer)
    prefix = f"{BUTTON_PREFIX}:{survey.name}:{source}"
    return text, [Button(label, f"{prefix}:{score}") for label, score in scale_buttons(survey)]


def question_template(survey: SurveyDef) -> str:
    """The message template that asks ``survey``'s question."""
    return f"survey_question_{survey.kind}"


def scale_buttons(survey: SurveyDef) -> list[tuple[str, str]]:
    """(label, score) for every point of the survey's scale."""
    low, high = SCALES[survey.kind]
    return [(str(n), str(n)) for n in range(low, high + 1)]


def parse_button(data: str) -> tuple[str, str, int] | None:
    """``sv:<survey>:<source…>:<score>`` → (survey, source, score); None if not one.

    The source may itself contain colons (a scenario push's buttons read
    ``sv:nps:scenario:<name>:<variant>:<score>``).
    """
    parts = (data or "").split(":")
    if len(parts) < 4 or parts[0] != BUTTON_PREFIX or not parts[-1].isdigit():
        return None
    return parts[1], ":".join(parts[2:-1]), int(parts[-1])


def send(
    session: Session,
    *,
    config: Config,
    renderer: Renderer,
    customer: Customer,
    to: ConversationRef,
    survey: SurveyDef,
    source: str,
    now: datetime,
    marketing: bool = True,
) -> str:
    """Queue the question once per (survey, source, customer): ``queued``, ``deferred``
    (quiet hours: it waits for their end), ``duplicate`` or the policy's reason
    (``opt_out``, ``frequency_cap``)."""
    not_before = None
    if marketing:
        decision = policy.check(
            session, customer, now, config.marketing, default_timezone=config.general.timezone
        )
        if not decision.allowed:
            if decision.reason != "quiet_hours":
                return decision.reason
            not_before = decision.retry_at
    text, buttons = question(renderer, survey, customer, source)
    queued = outbox.enqueue(
        session,
        key=f"{KEY_PREFIX}:{survey.name}:{source}:{customer.id}",
        to=to,
        text=text,
        buttons=buttons,
        customer_id=customer.id,
        purpose="survey" if marketing else "reply",
        not_before=not_before,
        now=now,
    )
    if not queued:
        return "duplicate"
    return "deferred" if not_before else "queued"


def parse_score(text: str, survey: SurveyDef) -> int | None:
    """A typed score on the survey's scale ("9", "9分", "4/5"), else None."""
    m = _SCORE.match(text or "")
    if not m:
        return None
    score = int(m.group(1))
    low, high = SCALES[survey.kind]
    return score if low <= score <= high else None


@dataclass(frozen=True)
class Pending:
    """The last survey question a customer was sent and has not answered."""

    survey: str
    source: str


def pending_question(
    session: Session, config: Config, customer_id: int, now: datetime
) -> Pending | None:
    """The survey question among the customer's last few messages (within
    ``answer_hours``) that has no answer yet: what a typed number answers."""
    since = now - timedelta(hours=config.surveys.answer_hours)
    payloads = session.scalars(
        select(OutboxMessage.payload)
        .where(
            OutboxMessage.customer_id == customer_id,
            OutboxMessage.created_at > since,
            OutboxMessage.status.in_(("sent", "pending", "sending")),
        )
        .order_by(OutboxMessage.id.desc())
        .limit(5)
    )
    for payload in payloads:
        buttons = (payload or {}).get("buttons") or []
        parsed = parse_button(buttons[0].get("data", "")) if buttons else None
        if parsed is None:
            continue
        name, source, _ = parsed
        answered = session.scalar(
            select(SurveyResponse.id).where(
                SurveyResponse.survey == name,
                SurveyResponse.customer_id == customer_id,
                SurveyResponse.source == source,
            )
        )
        return None if answered else Pending(name, source)
    return None


def record_score(
    session: Session,
    *,
    config: Config,
    survey: SurveyDef,
    customer: Customer,
    conversation: Conversation | None,
    channel: str,
    score: int,
    source: str,
    now: datetime,
    staff: str | None = None,
) -> tuple[SurveyResponse, bool]:
    """Store (or correct) the customer's score for this sending; (response, flagged now).

    A score below ``flag_below`` flags the conversation for staff once.
    """
    from bot.conversations import handoff

    low, high = SCALES[survey.kind]
    if not low <= score <= high:
        raise SurveyError(f"{survey.name} scores are {low}-{high}, got {score}")
    if staff is None and source.startswith("handoff:"):
        staff = _ticket_owner(session, source)
    row = session.scalars(
        select(SurveyResponse).where(
            SurveyResponse.survey == survey.name,
            SurveyResponse.customer_id == customer.id,
            SurveyResponse.source == source,
        )
    ).first()
    if row is None:
        row = SurveyResponse(
            survey=survey.name,
            kind=survey.kind,
            customer_id=customer.id,
            channel=channel,
            source=source,
            staff=staff,
            score=score,
            answered_at=now,
            flagged=False,
        )
        session.add(row)
    else:
        row.score, row.answered_at = score, now
    session.flush()
    flagged_now = False
    if survey.flag_below and score < survey.flag_below and not row.flagged and conversation:
        handoff.flag(
            session,
            conversation,
            reason="survey",
            now=now,
            detail=f"{survey.name} {score}/{high}",
        )
        row.flagged = flagged_now = True
    return row, flagged_now


def _ticket_owner(session: Session, source: str) -> str | None:
    from storage.handoff import HandoffTicket

    try:
        ticket = session.get(HandoffTicket, int(source.split(":", 1)[1]))
    except ValueError:
        return None
    return ticket.owner if ticket else None


def record_comment(session: Session, response_id: int, text: str) -> bool:
    """Attach the customer's "why?" answer (at most 2,000 characters)."""
    row = session.get(SurveyResponse, response_id)
    if row is None:
        return False
    row.comment = text.strip()[:2000]
    return True


@dataclass
class SurveyResults:
    """A survey's results for one period (and segment), overall and by group."""

    survey: str
    kind: str
    period: dict
    segment: str | None
    overall: dict
    by_channel: dict[str, dict] = field(default_factory=dict)
    by_staff: dict[str, dict] = field(default_factory=dict)
    by_month: dict[str, dict] = field(default_factory=dict)
    flagged: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


def _figures(kind: str, n: int, total: int, high: int, low: int) -> dict:
    """count, average, and NPS (promoters - detractors, in points) or CSAT (share of 4-5)."""
    out: dict = {"responses": n, "average": round(total / n, 2) if n else None}
    if kind == "nps":
        out["promoters"], out["detractors"] = high, low
        out["nps"] = round((high - low) * 100 / n, 1) if n else None
    else:
        out["satisfied"] = high
        out["csat"] = round(high / n, 4) if n else None
    return out


def results(
    session: Session,
    name: str,
    period: Period,
    *,
    config: Config,
    now: datetime,
    segment: str | None = None,
    members=None,
) -> SurveyResults:
    """Aggregate a survey's answers of ``period`` in SQL, overall and by group (of the
    customers in ``segment``; ``members`` are its ids if already looked up)."""
    survey = survey_def(config, name)
    if survey.kind == "nps":
        high = case((SurveyResponse.score >= 9, 1), else_=0)
        low = case((SurveyResponse.score <= 6, 1), else_=0)
    else:
        high = case((SurveyResponse.score >= 4, 1), else_=0)
        low = case((SurveyResponse.score <= 2, 1), else_=0)
    where = [
        SurveyResponse.survey == name,
        SurveyResponse.answered_at >= period.start_utc,
        SurveyResponse.answered_at < period.end_utc,
    ]
    if segment:
        if members is None:
            members = segment_members(session, config, segment, now)
        where.extend(in_members(SurveyResponse.customer_id, members))
    measures = (
        func.count(),
        func.coalesce(func.sum(SurveyResponse.score), 0),
        func.coalesce(func.sum(high), 0),
        func.coalesce(func.sum(low), 0),
    )

    def grouped(column) -> dict[str, dict]:
        rows = session.execute(select(column, *measures).where(*where).group_by(column)).all()
        return {
            str(key if key is not None else "-"): _figures(survey.kind, *map(int, rest))
            for key, *rest in rows
        }

    overall = _figures(
        survey.kind, *map(int, session.execute(select(*measures).where(*where)).one())
    )
    month = month_index(session, SurveyResponse.answered_at, period)
    by_month = {month_label(int(k)): v for k, v in grouped(month).items() if k != "-"}
    flagged = session.scalar(
        select(func.count()).select_from(SurveyResponse).where(*where, SurveyResponse.flagged)
    )
    return SurveyResults(
        survey=name,
        kind=survey.kind,
        period=period.as_dict(),
        segment=segment,
        overall=overall,
        by_channel=grouped(SurveyResponse.channel),
        by_staff={k: v for k, v in grouped(SurveyResponse.staff).items() if k != "-"},
        by_month=by_month,
        flagged=int(flagged or 0),
    )


def _line(kind: str, label: str, figures: dict, lang: str) -> str:
    if kind == "nps":
        score = "—" if figures["nps"] is None else f"{figures['nps']:+.1f}"
        return t(
            "measures.survey.nps_line",
            lang,
            label=label,
            n=figures["responses"],
            nps=score,
            average=figures["average"] if figures["average"] is not None else "—",
        )
    share = "—" if figures["csat"] is None else f"{figures['csat'] * 100:.1f}%"
    return t(
        "measures.survey.csat_line",
        lang,
        label=label,
        n=figures["responses"],
        csat=share,
        average=figures["average"] if figures["average"] is not None else "—",
    )


def format_results(r: SurveyResults, lang: str) -> str:
    """The results as lines of text in ``lang``."""
    p = r.period
    lines = [
        t(
            "measures.survey.title",
            lang,
            name=r.survey,
            start=p["from"],
            end=p["to"],
            zone=p["zone"],
        )
    ]
    if r.segment:
        lines.append(t("measures.cli.segment", lang, segment=r.segment))
    lines.append(_line(r.kind, t("measures.survey.overall", lang), r.overall, lang))
    groups = {
        "measures.survey.by_channel": r.by_channel,
        "measures.survey.by_staff": r.by_staff,
        "measures.survey.by_month": r.by_month,
    }
    for key, rows in groups.items():
        if rows:
            lines.append(t(key, lang))
            lines += ["  " + _line(r.kind, label, figures, lang) for label, figures in rows.items()]
    lines.append(t("measures.survey.flagged", lang, n=r.flagged))
    return "\n".join(lines)


def send_to_segment(
    session: Session,
    *,
    config: Config,
    renderer: Renderer,
    name: str,
    segment: str,
    source: str,
    now: datetime,
) -> dict[str, int]:
    """Send a survey to everyone in a segment (streamed), each through the policy; returns
    counts by outcome (queued, deferred, duplicate, opt_out, frequency_cap, unreachable)."""
    from bot.customers.segments import iter_segment_ids
    from bot.measures.referrals import customer_ref

    survey = survey_def(config, name)
    outcomes: dict[str, int] = {}
    for customer_id in iter_segment_ids(session, segment, config=config, now=now):
        customer = session.get(Customer, customer_id)
        to = customer_ref(session, customer_id)
        if customer is None or to is None:
            outcome = "unreachable"
        else:
            outcome = send(
                session,
                config=config,
                renderer=renderer,
                customer=customer,
                to=to,
                survey=survey,
                source=source,
                now=now,
            )
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    return outcomes
