"""The sandbox channel: a real adapter whose "platform" is Siyu's own web page.

People (and tests) act as customers and managers in 1:1 chats with the bot and in sandbox
community groups. Inbound messages become the same normalized events as any platform's;
outbound messages come from the same outbox through :meth:`SandboxAdapter.send`, which
writes them to the sandbox transcript. The transcript's unique outbox key makes delivery
idempotent, so a crash between sending and recording never shows a message twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session
from sqlalchemy.sql import Executable

from bot.adapters.base import AdapterHost, OutboundMessage, PermanentError, SendReceipt
from bot.app.config import SandboxConfig
from bot.core.events import Actor, ChatType, ConversationRef, Event, EventKind, parse_command
from bot.core.routing import DispatchResult
from storage.db import Database
from storage.group_commit import GroupCommit
from storage.models import SandboxMessage

__all__ = ["SandboxAdapter", "SandboxGroup", "SandboxInput"]

log = logging.getLogger(__name__)

CHANNEL = "sandbox"
MAX_TEXT = 4000
#: How a sandbox message mentions the bot (FAQ answers in groups that want a mention).
BOT_MENTIONS = ("@siyu", "@bot", "@私域")


@dataclass(frozen=True)
class SandboxGroup:
    """A sandbox community group."""

    chat_id: str
    title: str


def _insert_returning_id(db: Database) -> Executable:
    """INSERT .. ON CONFLICT (outbox_key) DO NOTHING RETURNING id, built once per dialect."""
    stmt = _INSERTS.get(db.dialect)
    if stmt is None:
        make = postgresql.insert if db.is_postgres else sqlite.insert
        insert = make(SandboxMessage).on_conflict_do_nothing(index_elements=["outbox_key"])
        stmt = _INSERTS[db.dialect] = insert.returning(SandboxMessage.id)
    return stmt


_INSERTS: dict[str, Executable] = {}


@dataclass(frozen=True)
class SandboxInput:
    """What a person did on the sandbox page, validated."""

    user_id: str
    chat_id: str
    display_name: str = ""
    locale: str | None = None
    text: str = ""
    button_data: str | None = None
    join: bool = False
    message_id: str = ""


class SandboxInputError(ValueError):
    """The sandbox page sent something we cannot take; the message says what."""


class SandboxAdapter:
    """The local sandbox channel (see the module docstring)."""

    channel = CHANNEL

    def __init__(
        self,
        config: SandboxConfig,
        runtime: AdapterHost,
    ) -> None:
        self.config = config
        self.runtime = runtime
        self.db = runtime.db
        self.clock = runtime.clock
        self.group_admins = frozenset(config.group_admins)  # "<group chat id>:<user id>"
        self._handle = runtime.handle
        self.groups = [SandboxGroup(f"group-{i + 1}", t) for i, t in enumerate(config.groups)]
        # One Event per generation of the transcript: a write sets it and starts the next.
        # No lock is shared with the streams, so a stream cancelled at any point (a dropped
        # connection) can never leave anything held for the others.
        self._changed = asyncio.Event()
        # Transcript rows of messages arriving together share a transaction.
        self._inbound_writes = GroupCommit(self.db, savepoints=False)

    async def start(self) -> None:
        log.info("sandbox channel ready (%d group(s))", len(self.groups))

    async def stop(self) -> None:
        self._wake()

    def group(self, chat_id: str) -> SandboxGroup | None:
        return next((g for g in self.groups if g.chat_id == chat_id), None)

    # -- inbound -------------------------------------------------------------------------

    def parse(self, data: object) -> SandboxInput:
        """Validate the page's JSON; raises SandboxInputError with a precise reason."""
        if not isinstance(data, dict):
            raise SandboxInputError("expected a JSON object")

        def text_field(name: str, *, required: bool = False, limit: int = 128) -> str:
            value = data.get(name, "")
            if value is None:
                value = ""
            if not isinstance(value, str):
                raise SandboxInputError(f"'{name}' must be a string")
            value = value.strip() if name != "text" else value
            if required and not value:
                raise SandboxInputError(f"'{name}' is required")
            if len(value) > limit:
                raise SandboxInputError(f"'{name}' is longer than {limit} characters")
            return value

        user_id = text_field("user_id", required=True)
        chat_id = text_field("chat_id") or user_id
        if chat_id != user_id and self.group(chat_id) is None:
            raise SandboxInputError(f"unknown chat {chat_id!r}")
        locale = text_field("locale", limit=16) or None
        if locale not in (None, "zh-CN", "en"):
            raise SandboxInputError("'locale' must be 'zh-CN' or 'en'")
        text = text_field("text", limit=MAX_TEXT)
        button = text_field("button_data", limit=64) or None
        join = data.get("join", False)
        if not isinstance(join, bool):
            raise SandboxInputError("'join' must be true or false")
        if not text.strip() and button is None and not join:
            raise SandboxInputError("nothing to send: give 'text', 'button_data' or 'join'")
        return SandboxInput(
            user_id=user_id,
            chat_id=chat_id,
            display_name=text_field("display_name", limit=100),
            locale=locale,
            text=text,
            button_data=button,
            join=join,
            message_id=text_field("message_id", limit=64) or uuid.uuid4().hex,
        )

    def to_event(self, item: SandboxInput) -> Event:
        group = self.group(item.chat_id)
        ref = ConversationRef(CHANNEL, item.chat_id, item.user_id)
        common: dict[str, Any] = {
            "ref": ref,
            "platform_id": item.message_id,
            "actor": Actor(
                item.user_id,
                item.display_name,
                item.locale,
                is_platform_admin=f"{item.chat_id}:{item.user_id}" in self.group_admins,
            ),
            "chat_type": ChatType.GROUP if group else ChatType.PRIVATE,
            "chat_title": group.title if group else "",
            "occurred_at": self.clock.now(),
            "raw": {"sandbox": True, "message_id": item.message_id},
        }
        if item.join:
            return Event(kind=EventKind.JOIN, **common)
        if item.button_data is not None:
            return Event(kind=EventKind.BUTTON, button_data=item.button_data, **common)
        parsed = parse_command(item.text)
        if parsed:
            name, args = parsed
            return Event(kind=EventKind.COMMAND, text=item.text, command=name, args=args, **common)
        mentions = any(name in item.text.lower() for name in BOT_MENTIONS)
        return Event(kind=EventKind.MESSAGE, text=item.text, mentions_bot=mentions, **common)

    async def receive(self, data: object) -> DispatchResult:
        """Take one action from the page: record it in the transcript, then route it."""
        item = self.parse(data)
        event = self.to_event(item)
        shown = item.text if item.text else f"[{event.kind.value}: {item.button_data or ''}]"
        await self._inbound_writes.run(
            self._write_in, item.chat_id, item.user_id, "in", shown, {}, f"in:{item.message_id}"
        )
        await self._notify()
        return await self._handle(event)

    # -- outbound ------------------------------------------------------------------------

    async def send(self, message: OutboundMessage) -> SendReceipt:
        if not message.text.strip():
            raise PermanentError("empty message")
        buttons = {"buttons": [{"label": b.label, "data": b.data} for b in message.buttons]}
        row_id = await self.db.run(
            self._write,
            message.chat_id,
            message.user_id,
            "out",
            message.text,
            buttons,
            message.idempotency_key,
        )
        await self._notify()
        return SendReceipt(platform_message_id=str(row_id) if row_id else None)

    def _write(
        self, chat_id: str, user_id: str, direction: str, text: str, buttons: dict, key: str
    ) -> int | None:
        with self.db.transaction() as session:
            return self._write_in(session, chat_id, user_id, direction, text, buttons, key)

    def _write_in(
        self,
        session: Session,
        chat_id: str,
        user_id: str,
        direction: str,
        text: str,
        buttons: dict,
        key: str,
    ) -> int | None:
        """Record one transcript row in ``session``; returns its id."""
        row = {
            "chat_id": chat_id,
            "user_id": user_id,
            "direction": direction,
            "text": text,
            "buttons": buttons,
            "outbox_key": key,
            "created_at": self.clock.now(),
        }
        # One statement in the common case: the new row's id comes back by RETURNING; only a
        # repeated key (a redelivery) looks the existing row up.
        inserted = session.connection().execute(_insert_returning_id(self.db), row).first()
        if inserted is not None:
            return inserted[0]
        return session.scalar(select(SandboxMessage.id).where(SandboxMessage.outbox_key == key))

    def _wake(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def _notify(self) -> None:
        self._wake()

    async def wait_for_change(self, timeout: float) -> None:
        """Wait until something is written to the transcript (or the timeout passes)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout)

    # -- transcript ----------------------------------------------------------------------

    async def transcript(self, chat_id: str, after: int = 0, limit: int = 200) -> list[dict]:
        return await self.db.run(self._transcript, chat_id, after, limit)

    def _transcript(self, chat_id: str, after: int, limit: int) -> list[dict]:
        with self.db.sessions() as session:
            rows = session.scalars(
                select(SandboxMessage)
                .where(SandboxMessage.chat_id == chat_id, SandboxMessage.id > after)
                .order_by(SandboxMessage.id)
                .limit(limit)
            )
            return [
                {
                    "id": r.id,
                    "chat_id": r.chat_id,
                    "user_id": r.user_id,
                    "direction": r.direction,
                    "text": r.text,
                    "buttons": (r.buttons or {}).get("buttons", []),
                    "at": r.created_at.isoformat(),
                }
                for r in rows
            ]
