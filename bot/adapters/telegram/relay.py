"""The staff relay group, Telegram half: one forum topic per conversation; staff act there.

``[telegram] relay_chat_id`` names a forum supergroup (topics enabled) where the bot is an
admin allowed to manage topics. Posts to it are outbox rows (see :mod:`bot.conversations.relay`); when
the adapter sends one, :meth:`RelayDesk.thread_for` finds the conversation's topic or
opens it with ``createForumTopic`` and records its ``message_thread_id`` in
``telegram_relay_topics``.

Updates from the relay group never reach the router (staff are not customers). A message
in a topic acts on the handed-off conversation of that topic through :mod:`bot.conversations.handoff`,
exactly as the web inbox does, so every action is audited:

- plain text is the staff member's answer to the customer (``handoff.reply``, through the
  outbox, once per update); a conversation still waiting is claimed first;
- ``/claim``, ``/release`` (the bot resumes at the breakpoint), ``/resolve``,
  ``/note <text>``, ``/transfer <username>``.

Who is who: a Telegram user acts as the staff account named for them in
``[telegram] relay_staff`` (``"<telegram user id>:<staff username>"``); the account must
exist and be active (the same one logs in to the web inbox), so the audit log names one
person whatever surface they use. Anyone else gets a notice in the topic and nothing else
happens. Inbound dedupe is by update_id, as for customers' updates.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session
from telegram import Bot, Update
from telegram import error as tg_error

from bot.app.config import Config
from bot.conversations import handoff
from bot.conversations.flows import FlowLibrary, load_flows
from bot.conversations.handoff import HandoffError
from bot.conversations.relay import RELAY_SESSION_FLAG, RelayObserver, enqueue_relay, relay_enabled
from bot.core.events import ConversationRef, parse_command
from bot.core.templating import Renderer
from storage import repos
from storage import telegram as tg_store
from storage.handoff import HandoffTicket, StaffUser
from storage.models import Conversation

__all__ = ["RelayDesk", "relay_desk"]

log = logging.getLogger(__name__)


def relay_desk(config: Config, runtime) -> RelayDesk | None:
    """The relay desk for a runtime, or None when no relay group is configured."""
    if not relay_enabled(config):
        return None
    return RelayDesk(config, runtime.db, runtime.clock, runtime.renderer, runtime.worker.wake)


class RelayDesk:
    """The staff relay group: topics for conversations, staff messages to the handoff model."""

    def __init__(
        self,
        config: Config,
        db,
        clock,
        renderer: Renderer,
        wake: Callable[[], None],
        library: FlowLibrary | None = None,
    ) -> None:
        self.config = config
        self.db = db
        self.clock = clock
        self.renderer = renderer
        self.wake = wake
        self.chat_id = config.telegram.relay_chat_id
        self.staff = dict(e.split(":", 1) for e in config.telegram.relay_staff)
        self.library = library or load_flows(config.conversations.flows_dir or None, renderer)
        self.observer = RelayObserver(config, renderer, db.engine)
        self._unsubscribe: Callable[[], None] | None = None

    def start(self) -> None:
        """Follow the handoff model's actions (posting them to the topics)."""
        if self._unsubscribe is None:
            self._unsubscribe = handoff.subscribe(self.observer)

    def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    # -- outbound: the topic of a conversation ----------------------------------------------

    async def thread_for(
        self, bot: Bot, relay: Mapping, wait_turn: Callable[[], Awaitable[object]]
    ) -> int:
        """The conversation's topic (message_thread_id), opened now if it has none yet
        (``wait_turn`` first waits for the rate limiter: opening a topic is a request too)."""
        ref = ConversationRef(str(relay["channel"]), str(relay["chat_id"]), str(relay["user_id"]))
        found = await self.db.run(self._topic, ref)
        if found is not None:
            return found
        name = str(relay.get("title") or ref)[:128]
        await wait_turn()
        topic = await bot.create_forum_topic(int(self.chat_id), name=name)
        saved = await self.db.run(self._save_topic, topic.message_thread_id, ref)
        if saved != topic.message_thread_id:  # another process opened one first: keep theirs
            with contextlib.suppress(tg_error.TelegramError):
                await bot.delete_forum_topic(int(self.chat_id), topic.message_thread_id)
        return saved

    async def forget(self, relay: Mapping) -> None:
        """The topic is gone (deleted in Telegram): the next post opens a new one."""
        ref = ConversationRef(str(relay["channel"]), str(relay["chat_id"]), str(relay["user_id"]))
        await self.db.run(self._forget, ref)

    def _topic(self, ref: ConversationRef) -> int | None:
        with self.db.transaction() as session:
            topic = tg_store.topic_for(session, ref)
            if topic is None:
                return None
            if topic.relay_chat_id != self.chat_id:  # the relay group was changed in config
                session.delete(topic)
                return None
            return topic.thread_id

    def _save_topic(self, thread_id: int, ref: ConversationRef) -> int:
        with self.db.transaction() as session:
            return tg_store.save_topic(
                session, self.chat_id, thread_id, ref, self.clock.now()
            ).thread_id

    def _forget(self, ref: ConversationRef) -> None:
        with self.db.transaction() as session:
            topic = tg_store.topic_for(session, ref)
            if topic is not None:
                session.delete(topic)

    # -- inbound: staff in the relay group --------------------------------------------------

    def owns(self, update: Update) -> bool:
        """Whether the update comes from the relay group (then only the desk handles it)."""
        chat = update.effective_chat
        return chat is not None and str(chat.id) == self.chat_id

    async def process(self, update: Update, bot_username: str | None) -> None:
        message = update.message
        if message is None or message.from_user is None or message.from_user.is_bot:
            return
        if not message.is_topic_message or message.message_thread_id is None:
            return  # the General topic: staff talking among themselves
        text = (message.text or message.caption or "").strip()
        if not text:
            return
        queued = await self.db.run(
            self._handle,
            update.update_id,
            message.message_thread_id,
            str(message.from_user.id),
            text,
            bot_username,
        )
        if queued:
            self.wake()

    def _handle(
        self, update_id: int, thread_id: int, user_id: str, text: str, bot_username: str | None
    ) -> bool:
        now = self.clock.now()
        with self.db.transaction() as session:
            session.info[RELAY_SESSION_FLAG] = True
            if not repos.claim_inbound(session, f"telegram:{update_id}", uuid.uuid4().hex, now):
                return False
            topic = tg_store.find_topic(session, self.chat_id, thread_id)
            conversation = (
                None
                if topic is None
                else session.scalars(
                    select(Conversation).where(
                        Conversation.channel == topic.channel,
                        Conversation.chat_id == topic.chat_id,
                        Conversation.user_id == topic.user_id,
                    )
                ).one_or_none()
            )
            if conversation is None:
                log.info("telegram relay: update %s is in no known topic", update_id)
                return False

            def notice(kind: str, **variables) -> None:
                body = self.renderer.render(
                    "relay_notice", self.config.general.locale, kind=kind, **variables
                )
                enqueue_relay(
                    session,
                    self.config,
                    conversation,
                    key=f"relay:notice:{update_id}",
                    text=body,
                    now=now,
                )

            staff = self._staff(session, user_id)
            if staff is None:
                notice("not_staff", user_id=user_id)
                return True
            ticket = handoff.open_ticket(session, conversation.id)
            try:
                with session.begin_nested():
                    self._act(session, ticket, staff, text, update_id, bot_username, now, notice)
            except HandoffError as exc:
                notice("error", error=exc.text(staff.locale))
            return True

    def _staff(self, session: Session, user_id: str) -> StaffUser | None:
        username = self.staff.get(user_id)
        if username is None:
            return None
        return session.scalars(
            select(StaffUser).where(StaffUser.username == username, StaffUser.active.is_(True))
        ).one_or_none()

    def _act(
        self,
        session: Session,
        ticket: HandoffTicket | None,
        staff: StaffUser,
        text: str,
        update_id: int,
        bot_username: str | None,
        now: datetime,
        notice: Callable[..., None],
    ) -> None:
        parsed = parse_command(text, bot_username)
        if ticket is None:
            notice("no_ticket")
            return
        if parsed is None:
            if ticket.status == "waiting" and not handoff.claim(session, ticket.id, staff, now):
                return  # someone else has it; the refusal is posted by the observer
            handoff.reply(session, ticket.id, staff, text, f"tg{update_id}", now)
            return
        name, args = parsed
        rest = text.split(maxsplit=1)[1] if len(text.split(maxsplit=1)) > 1 else ""
        if name == "claim":
            handoff.claim(session, ticket.id, staff, now)
        elif name == "release":
            handoff.release(
                session,
                ticket.id,
                staff,
                now,
                renderer=self.renderer,
                library=self.library,
                config=self.config,
            )
        elif name == "resolve":
            handoff.resolve(session, ticket.id, staff, now, confirmed=True, renderer=self.renderer)
        elif name == "note" and rest:
            handoff.add_note(session, ticket.id, staff, rest, now)
        elif name == "transfer" and args:
            handoff.transfer(session, ticket.id, staff, args[0], now)
        else:
            notice("usage")
