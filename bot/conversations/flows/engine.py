"""Runs a flow on one conversation row; the breakpoint is saved at every step.

The breakpoint is the core ``conversations`` row: ``flow`` and ``step`` columns, and in
``state["flow"]`` the collected answers, the pending offer, the number of bad answers in a
row and when the bot last prompted. Nothing lives in memory between events, so a restart,
days of silence, a campaign message or a staff takeover change nothing: the next contact
resumes there.

:class:`FlowRun` returns :class:`Turn` objects (what to say, not yet rendered), so handlers
render them through ``Context`` and scheduled jobs through the renderer and the outbox.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import flag_modified

from bot.adapters.base import Button
from bot.conversations.flows.definition import Flow, FlowLibrary, Step, pick
from bot.core.templating import Renderer
from bot.marketing.coupons import ensure_definition, find_code, format_code, issue_one
from bot.marketing.policy import customer_zone
from storage.followups import schedule_followup
from storage.models import Conversation, Customer

__all__ = ["FlowRun", "Outgoing", "Turn", "offer_view"]

#: What :meth:`FlowRun._parse` returns for a well-formed answer outside the step's bounds.
_OUT_OF_RANGE = object()

_CN_NUMBERS = {"一": 1, "两": 2, "二": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8}
_CN_NUMBERS |= {"九": 9, "十": 10}


@dataclass
class Outgoing:
    """One message of a turn: templates to render (joined) and the step whose buttons go along."""

    flow: Flow
    parts: list[tuple[str, dict[str, Any]]]
    step: Step | None
    answers: dict[str, Any]
    offer: dict[str, Any] | None

    def variables(self, locale: str, customer: Customer | None) -> dict[str, Any]:
        labels = {}
        for step in self.flow.steps.values():
            if step.save_as in self.answers:
                value = self.answers[step.save_as]
                choice = next((c for c in step.choices if c.value == value), None)
                labels[step.save_as] = choice.label(locale) if choice else str(value)
        return {
            "customer": customer,
            "flow_title": pick(self.flow.title, locale),
            "answers": dict(self.answers),
            "labels": labels,
            "step": self.step.id if self.step else None,
            "missing": pick(self.step.title, locale) if self.step else "",
            "offer": offer_view(self.offer, locale, customer),
        }

    def render(
        self, renderer: Renderer, locale: str, customer: Customer | None
    ) -> tuple[str, list[Button]]:
        base = self.variables(locale, customer)
        text = "\n".join(renderer.render(t, locale, **(base | extra)) for t, extra in self.parts)
        buttons = []
        if self.step is not None and self.step.kind == "choice":
            buttons = [
                Button(c.label(locale), self.flow.button_data(self.step.id, c.value))
                for c in self.step.choices
            ]
        return text, buttons


def offer_view(offer: dict | None, locale: str, customer: Customer | None) -> dict | None:
    """An offer as templates see it: code, title and expiry in the customer's own time."""
    if not offer:
        return None
    if offer.get("unavailable") or "expires_at" not in offer:
        return {"code": "", "title": pick(offer.get("title") or {}, locale), "expires": "",
                "renewed": False, "from_staff": False, "unavailable": True}  # fmt: skip
    expires = datetime.fromisoformat(offer["expires_at"])
    if customer is not None:
        expires = expires.astimezone(customer_zone(customer))
    fmt = "%-m月%-d日 %H:%M" if locale == "zh-CN" else "%b %-d, %H:%M"
    return {
        "code": offer["code"],
        "title": pick(offer.get("title") or {}, locale),
        "expires": expires.strftime(fmt),
        "renewed": bool(offer.get("renewed")),
        "from_staff": str(offer.get("source", "")).startswith("staff:"),
        "unavailable": False,
    }


@dataclass
class Turn:
    """What a flow did with an event: outcome and the messages to send.

    outcome: started, advanced, reasked, resumed, misunderstood (hand to staff), ignored.
    """

    outcome: str
    messages: list[Outgoing] = field(default_factory=list)


class FlowRun:
    """A flow running on one conversation (its row is locked by the caller's transaction)."""

    def __init__(
        self,
        session: Session,
        conversation: Conversation,
        customer: Customer,
        library: FlowLibrary,
        now: datetime,
        *,
        resume_after: timedelta = timedelta(minutes=30),
        max_misses: int = 2,
    ) -> None:
        self.session = session
        self.conversation = conversation
        self.customer = customer
        self.library = library
        self.now = now
        self.resume_after = resume_after
        self.max_misses = max_misses

    # -- the breakpoint ----------------------------------------------------------------

    @property
    def flow(self) -> Flow | None:
        return self.library.get(self.conversation.flow)

    @property
    def step(self) -> Step | None:
        flow = self.flow
        return flow.steps.get(self.conversation.step or "") if flow else None

    @property
    def fs(self) -> dict[str, Any]:
        """The flow part of the breakpoint state (a copy; write it back with _save)."""
        return dict((self.conversation.state or {}).get("flow") or {})

    def _save(self, fs: dict[str, Any]) -> None:
        state = dict(self.conversation.state or {})
        state["flow"] = fs
        self.conversation.state = state
        flag_modified(self.conversation, "state")

    @property
    def active(self) -> bool:
        """In a flow, at a step that still waits for an answer."""
        step = self.step
        return step is not None and step.expects_answer

    def _message(self, parts: list[tuple[str, dict]], step: Step | None) -> Outgoing:
        assert self.flow is not None
        fs = self.fs
        return Outgoing(self.flow, parts, step, dict(fs.get("answers") or {}), fs.get("offer"))

    # -- transitions ---------------------------------------------------------------------

    def start(self, flow: Flow) -> Turn:
        """Start ``flow``, or resume it if the conversation is in the middle of it."""
        if self.conversation.flow == flow.name and self.active:
            return self.resume("restart_request")
        keep_offer = self.fs.get("offer") if self.conversation.flow == flow.name else None
        self.conversation.flow = flow.name
        self._save(
            {
                "answers": {},
                "started_at": self.now.isoformat(),
                "misses": 0,
                **({"offer": keep_offer} if keep_offer else {}),
            }
        )
        return self._enter(flow.start, "started")

    def _enter(self, step_id: str, outcome: str) -> Turn:
        flow = self.flow
        assert flow is not None
        step = flow.steps[step_id]
        self.conversation.step = step.id
        fs = self.fs
        fs["step_entered_at"] = self.now.isoformat()
        fs["finished"] = not step.expects_answer
        self._save(fs)
        if step.kind == "offer":
            self._ensure_offer(step)
        return Turn(outcome, [self._prompted(step, [(step.prompt, {})])])

    def _prompted(self, step: Step, parts: list[tuple[str, dict]]) -> Outgoing:
        """Record that the bot prompted at ``step`` now, and schedule its follow-up."""
        fs = self.fs
        fs["last_prompt_at"] = self.now.isoformat()
        self._save(fs)
        if step.followup is not None:
            schedule_followup(
                self.session,
                conversation_id=self.conversation.id,
                customer_id=self.customer.id,
                flow=self.conversation.flow or "",
                step=step.id,
                template=step.followup.template,
                due_at=self.now + timedelta(hours=step.followup.after_hours),
                now=self.now,
                conversation=self.conversation,  # locked by every FlowRun's caller
            )
        return self._message(parts, step)

    def answer(self, text: str, button_data: str | None = None) -> Turn:
        """Take the customer's answer to the current step."""
        step = self.step
        if step is None or not step.expects_answer:
            return Turn("ignored")
        parsed = self._parse(step, text, button_data)
        fs = self.fs
        if parsed is _OUT_OF_RANGE:
            # Understood, but not a valid value (party size "0"): say what is valid and ask
            # again; this is not a misunderstanding and never hands over.
            limits = {"invalid": True, "min": step.min, "max": step.max, "given": text.strip()[:20]}
            return Turn("reasked", [self._prompted(step, [(step.reask or step.prompt, limits)])])
        if parsed is None:
            last = fs.get("last_prompt_at")
            away = last is None or self.now - datetime.fromisoformat(last) > self.resume_after
            if away or button_data is not None:
                return self.resume("returned")
            misses = int(fs.get("misses", 0)) + 1
            fs["misses"] = misses
            self._save(fs)
            if misses >= self.max_misses:
                return Turn("misunderstood")
            return Turn("reasked", [self._prompted(step, [(step.reask or step.prompt, {})])])
        answers = dict(fs.get("answers") or {})
        answers[step.save_as] = parsed
        fs["answers"], fs["misses"] = answers, 0
        self._save(fs)
        next_id = step.next_step(answers)
        assert next_id is not None  # validated when the flow was loaded
        return self._enter(next_id, "advanced")

    def resume(self, reason: str) -> Turn:
        """Recap the breakpoint and ask again for what is missing (offers re-checked)."""
        step = self.step
        if step is None:
            return Turn("ignored")
        fs = self.fs
        fs["misses"] = 0
        self._save(fs)
        if step.kind == "offer":
            self._ensure_offer(step)
        assert self.flow is not None
        parts: list[tuple[str, dict]] = [(self.flow.resume_template, {"reason": reason})]
        parts.append((step.prompt, {}))
        return Turn("resumed", [self._prompted(step, parts)])

    def followup(self, template: str) -> Outgoing | None:
        """The follow-up message for the breakpoint (None if there is nothing to follow up)."""
        step = self.step
        if step is None:
            return None
        if step.kind == "offer":
            offer = self._ensure_offer(step)
            if offer is None or offer.get("redeemed") or offer.get("unavailable"):
                return None
        parts: list[tuple[str, dict]] = [(template, {})]
        if step.expects_answer:
            parts.append((step.prompt, {}))
        fs = self.fs
        fs["last_prompt_at"] = self.now.isoformat()
        self._save(fs)
        return self._message(parts, step)

    # -- answers and offers ----------------------------------------------------------------

    def _parse(self, step: Step, text: str, button_data: str | None) -> Any:
        if button_data is not None:
            found = self.library.by_button(button_data)
            if not found or found[0].name != self.conversation.flow or found[1] != step.id:
                return None
            value = found[2]
            return value if any(c.value == value for c in step.choices) else None
        text = (text or "").strip()
        if not text:
            return None
        if step.kind == "choice":
            choice = next((c for c in step.choices if c.matches(text)), None)
            if choice is not None:
                return choice.value
            return text if step.allow_text and self._text_ok(step, text) else None
        if step.kind == "text":
            return text if self._text_ok(step, text) else None
        if step.kind == "integer":
            number = _integer(text)
            if number is None:
                return None
            if (step.min is not None and number < step.min) or (
                step.max is not None and number > step.max
            ):
                return _OUT_OF_RANGE
            return number
        return None

    @staticmethod
    def _text_ok(step: Step, text: str) -> bool:
        if not step.min_length <= len(text) <= step.max_length:
            return False
        return step.pattern is None or re.search(step.pattern, text, re.IGNORECASE) is not None

    def _ensure_offer(self, step: Step) -> dict | None:
        """The breakpoint's offer, re-checked against its coupon code: a redeemed one is
        marked so, an expired (or unknown) one is issued anew (``renewed``)."""
        fs = self.fs
        offer = fs.get("offer")
        if offer:
            row = find_code(self.session, str(offer.get("code", "")))
            if row is not None and row.status == "redeemed":
                offer = {**offer, "redeemed": True}
                fs["offer"] = offer
                self._save(fs)
                return offer
            if row is not None and row.expires_at > self.now:
                return offer
        if step.offer is None:
            return offer
        spec = step.offer
        coupon = ensure_definition(self.session, spec.coupon, self.now)
        stamp = self.now.strftime("%Y%m%dT%H%M%S%f")
        key = f"flow:{self.conversation.id}:{self.conversation.flow}:{step.id}:{stamp}"
        row = issue_one(
            self.session, coupon, self.customer.id, key, now=self.now, prefix=spec.code_prefix
        )
        if row is None:  # out of stock: the prompt says so instead of giving a code
            fs["offer"] = {"coupon": coupon.name, "title": spec.title, "unavailable": True}
        else:
            fs["offer"] = {
                "code": format_code(row.code),
                "coupon": coupon.name,
                "title": spec.title,
                "expires_at": row.expires_at.isoformat(),
                "source": f"flow:{self.conversation.flow}",
                "renewed": bool(offer and offer.get("code") != format_code(row.code)),
            }
        self._save(fs)
        return fs["offer"]


def _integer(text: str) -> int | None:
    match = re.search(r"\d+", text)
    if match:
        return int(match.group())
    for char in text:
        if char in _CN_NUMBERS:
            return _CN_NUMBERS[char]
    return None
