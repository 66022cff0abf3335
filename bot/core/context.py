"""What a handler gets: the event, who it is from, their conversation, and ways to act.

Handlers never talk to a platform: ``reply`` queues a message in the outbox (rendered from
a template in the customer's locale), ``tag`` tags the customer, ``state`` is the
conversation's persisted breakpoint state.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import flag_modified

from bot.core.events import Button, ConversationRef, Event
from bot.core.templating import Renderer
from storage import repos
from storage.models import Conversation, Customer, Identity, Interaction

if TYPE_CHECKING:
    from bot.app.config import Config
    from bot.core.routing import Handler

__all__ = ["Context", "Enqueue"]

#: How a context queues a message: the outbox's ``enqueue`` (bot/outbox/queue.py), given by
#: whoever builds the router, so the core does not depend on the outbox.
Enqueue = Callable[..., bool]


class Context:
    """Per-event handler context; one database transaction for the whole event."""

    def __init__(
        self,
        event: Event,
        session: Session,
        config: Config,
        renderer: Renderer,
        now: datetime,
        *,
        enqueue: Enqueue,
    ) -> None:
        self.event: Event = event
        self.enqueue = enqueue
        self.session = session
        self.config = config
        self.renderer = renderer
        self.now = now
        self.customer: Customer | None = None
        self.identity: Identity | None = None
        self.conversation: Conversation | None = None
        self.interaction: Interaction | None = None
        self.role: str = "customer"
        self.bot_silenced: bool = False
        self.handler: Handler | None = None
        self.queued: list[str] = []
        #: Where replies go instead of the event's chat (e.g. the manager's private chat
        #: for commands that show personal data in a group); None: the event's chat.
        self.redirect: ConversationRef | None = None
        self._sequence: dict[str, int] = {}

    @property
    def locale(self) -> str:
        return self.customer.locale if self.customer else self.config.general.locale

    @property
    def state(self) -> dict[str, Any]:
        """The conversation's breakpoint state; changes are saved with the event."""
        assert self.conversation is not None
        if self.conversation.state is None:
            self.conversation.state = {}
        return self.conversation.state

    def save_state(self) -> None:
        """Mark the state as changed (needed after in-place edits of nested values)."""
        assert self.conversation is not None
        flag_modified(self.conversation, "state")

    def render(self, template: str, /, **variables: Any) -> str:
        """Render a message template in this customer's locale."""
        base = {"customer": self.customer, "event": self.event}
        return self.renderer.render(template, self.locale, **(base | variables))

    def _next_key(self, purpose: str) -> str:
        handler = self.handler.name if self.handler else "router"
        slot = f"{purpose}:{handler}"
        n = self._sequence.get(slot, 0)
        self._sequence[slot] = n + 1
        return f"{purpose}:{self.event.dedupe_key}:{handler}:{n}"

    def reply(
        self,
        template: str,
        /,
        *,
        buttons: Sequence[Button] = (),
        to: ConversationRef | None = None,
        **variables: Any,
    ) -> str:
        """Render ``template`` and queue it to this conversation (or ``to``); returns the text."""
        text = self.render(template, **variables)
        self.send_text(text, buttons=buttons, to=to)
        return text

    def send_text(
        self,
        text: str,
        *,
        buttons: Sequence[Button] = (),
        to: ConversationRef | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        """Queue already-rendered text (e.g. a manager's announcement) through the outbox.

        ``extra`` carries delivery hints adapters may honour: ``{"pin": True}`` (pin it in
        the group), ``{"mentions": [{"user_id": ..., "text": ...}]}`` (link a name).
        """
        target = to or self.redirect or self.event.ref
        self.enqueue(
            self.session,
            key=self._next_key("reply"),
            to=target,
            text=text,
            buttons=buttons,
            extra=extra,
            customer_id=self.customer.id if self.customer and target == self.event.ref else None,
            now=self.now,
        )
        self.queued.append(text)
        if self.conversation is not None and target == self.event.ref:
            self.conversation.last_bot_message = text

    def private_ref(self) -> ConversationRef:
        """The 1:1 chat with the person who sent the event, on the same channel."""
        user = self.event.actor.user_id
        return ConversationRef(self.event.ref.channel, user, user)

    def tag(self, tag: str, *, source: str, ttl: timedelta | None = None) -> bool:
        """Tag the customer; True if the tag is new for them."""
        assert self.customer is not None
        return repos.add_tag(
            self.session, self.customer.id, tag, source=source, now=self.now, ttl=ttl
        )
