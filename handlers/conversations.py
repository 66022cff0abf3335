"""Flows and flagging for staff: the handlers of conversations that remember.

Where they run (see handlers/__init__.py):

- ``customer_returned`` (group RETURNS, also during handoff): any message, command or
  button from the customer cancels the conversation's pending follow-ups;
- ``flag_for_staff`` (ANSWERS, priority 200): a handoff keyword (投诉 退款 人工 complaint
  refund human …) or ``/human`` puts the conversation in the staff queue and tells the
  customer when a person will answer. It does *not* run during handoff: the conversation
  is already with staff, who see every message live in the inbox;
- ``flow_start`` (ANSWERS, 60): a flow's keyword, command or start button (a campaign
  message can carry it) starts the flow, or resumes it if it is half done;
- ``flow_answer`` (ANSWERS, 50): the answer to the current step; a bad answer re-asks
  without losing state, a customer back after a pause gets the breakpoint recap, and
  misunderstanding twice in a row hands the conversation to staff;
- ``flag_vip`` (ANSWERS, -50): a VIP's free text that nothing else answered goes to staff;
- ``not_understood`` (ANSWERS, -1000, the last of the group): private free text that no
  other answer handler took says so (with /help and /human hints) and counts the miss in
  the breakpoint state (``state["unanswered"]``). Misses are consecutive when no other
  interaction of the customer in this chat came between them; the second in a row (
  ``[conversations] misunderstandings_before_handoff``) flags the conversation for staff.
  Tagging (group TAGGING) never answers, so a message that was only tagged still counts.

Flows and flagging are for 1:1 chats; in groups the bot does not run flows.
"""

from __future__ import annotations

from datetime import timedelta

from bot.app.config import Config, KeywordRule
from bot.conversations.flows import FlowLibrary, FlowRun, Turn, load_flows
from bot.conversations.handoff import expected_reply, flag
from bot.core import filters as f
from bot.core.context import Context
from bot.core.events import EventKind
from bot.core.templating import Renderer
from bot.customers.tagging import KeywordMatcher
from storage import repos
from storage.followups import cancel_pending_of

__all__ = ["ConversationHandlers"]


class ConversationHandlers:
    """The flow and flagging handlers, sharing one flow library and keyword matcher."""

    def __init__(self, config: Config, renderer: Renderer, library: FlowLibrary | None = None):
        self.config = config
        self.library = library or load_flows(config.conversations.flows_dir or None, renderer)
        self._keywords = KeywordMatcher(
            [KeywordRule(tag="handoff", keywords=list(config.handoff.keywords))]
        )
        self._vip = frozenset(config.handoff.vip_tags)

    # -- filters -----------------------------------------------------------------------

    @property
    def returned(self) -> f.Filter:
        """The customer's message, command or button while follow-ups may be pending (the
        conversation's marker; a conversation that has none skips the handler's savepoint)."""

        def may_have_followups(c: Context) -> bool:
            return c.conversation is not None and c.conversation.followups_pending is not False

        return (
            f.is_private
            & f.kind(EventKind.MESSAGE, EventKind.COMMAND, EventKind.BUTTON)
            & f.Filter(may_have_followups, "followups_pending")
        )

    @property
    def wants_staff(self) -> f.Filter:
        keyword = f.Filter(lambda c: bool(self._keywords.match(c.event.text)), "handoff_keyword")
        return f.is_private & (f.command("human") | (f.text & keyword))

    @property
    def starts_flow(self) -> f.Filter:
        return f.is_private & f.Filter(lambda c: self._flow_to_start(c) is not None, "flow_start")

    @property
    def answers_flow(self) -> f.Filter:
        def in_flow(c: Context) -> bool:
            if c.event.kind not in (EventKind.MESSAGE, EventKind.BUTTON):
                return False
            return self._run(c).active

        return f.is_private & f.Filter(in_flow, "flow_answer")

    @property
    def vip_text(self) -> f.Filter:
        def vip(c: Context) -> bool:
            assert c.customer is not None
            tags = repos.tags_of(c.session, c.customer.id, c.now)
            return any(t.tag.name in self._vip for t in tags)

        return f.is_private & f.text & f.Filter(vip, "vip")

    @property
    def unanswered_text(self) -> f.Filter:
        """Private free text; registered last in ANSWERS, so only what nothing answered."""
        return f.is_private & f.text

    # -- handlers ----------------------------------------------------------------------

    def customer_returned(self, ctx: Context) -> None:
        assert ctx.conversation is not None
        cancel_pending_of(ctx.session, ctx.conversation, "customer_returned")

    def flag_for_staff(self, ctx: Context) -> None:
        reason = "human" if ctx.event.kind is EventKind.COMMAND else "keyword"
        self._flag(ctx, reason)

    def flag_vip(self, ctx: Context) -> None:
        self._flag(ctx, "vip")

    def flow_start(self, ctx: Context) -> None:
        flow = self._flow_to_start(ctx)
        assert flow is not None
        self._say(ctx, self._run(ctx).start(flow))

    def flow_answer(self, ctx: Context) -> None:
        turn = self._run(ctx).answer(ctx.event.text, ctx.event.button_data)
        if turn.outcome == "misunderstood":
            self._flag(ctx, "misunderstood")
        else:
            self._say(ctx, turn)

    def not_understood(self, ctx: Context) -> None:
        """Say the bot did not understand; the N-th miss in a row goes to staff."""
        assert ctx.interaction is not None
        previous = repos.previous_interaction_id(ctx.session, ctx.interaction)
        last = ctx.state.get("unanswered") or {}
        count = int(last.get("count", 0)) + 1 if last.get("interaction_id") == previous else 1
        limit = self.config.conversations.misunderstandings_before_handoff
        ctx.state["unanswered"] = {
            "count": 0 if count >= limit else count,
            "interaction_id": ctx.interaction.id,
        }
        ctx.save_state()
        if count >= limit and ctx.role == "customer":  # managers only get the hint
            self._flag(ctx, "misunderstood")
        else:
            ctx.reply("not_understood")

    # -- helpers -----------------------------------------------------------------------

    def _run(self, ctx: Context) -> FlowRun:
        assert ctx.conversation is not None and ctx.customer is not None
        conv = self.config.conversations
        return FlowRun(
            ctx.session,
            ctx.conversation,
            ctx.customer,
            self.library,
            ctx.now,
            resume_after=timedelta(minutes=conv.resume_after_minutes),
            max_misses=conv.misunderstandings_before_handoff,
        )

    def _flow_to_start(self, ctx: Context):
        event = ctx.event
        if event.kind is EventKind.COMMAND:
            return self.library.by_command(event.command)
        if event.kind is EventKind.BUTTON:
            found = self.library.by_button(event.button_data)
            return found[0] if found and found[1] is None else None
        if event.kind is EventKind.MESSAGE:
            return self.library.by_keyword(event.text)
        return None

    def _say(self, ctx: Context, turn: Turn) -> None:
        for message in turn.messages:
            text, buttons = message.render(ctx.renderer, ctx.locale, ctx.customer)
            ctx.send_text(text, buttons=buttons)

    def _flag(self, ctx: Context, reason: str) -> None:
        assert ctx.conversation is not None and ctx.customer is not None
        tags = {t.tag.name for t in repos.tags_of(ctx.session, ctx.customer.id, ctx.now)}
        _ticket, created = flag(
            ctx.session,
            ctx.conversation,
            reason=reason,
            now=ctx.now,
            detail=ctx.event.text or f"/{ctx.event.command}",
            vip=bool(tags & self._vip),
        )
        if created:
            when = expected_reply(self.config, ctx.customer, ctx.now)
            ctx.reply(
                "handoff_queued",
                reason=reason,
                in_hours=when.in_hours,
                minutes=when.minutes,
                opens=when.opens,
            )
