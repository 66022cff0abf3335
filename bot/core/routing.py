"""The router: middleware in a fixed order, then handlers by group and priority.

One inbound event is one database transaction:

1. inbound dedupe — the platform id is recorded; a retried delivery stops here;
2. ``customer`` — resolve or create the customer, group membership; record the interaction;
3. ``role`` — customer, manager (config), group admin (platform);
4. ``conversation`` — lock the conversation row, load its breakpoint state;
5. ``handoff`` — a conversation owned by staff silences bot handlers (tagging still runs);
6. handlers — groups in ascending order; in each group the first matching handler (by
   priority, highest first) runs. A handler that raises is logged with the event id and
   rolled back alone; the event and the other handlers' work are kept. A handler with
   ``block=True`` (or raising :class:`StopPropagation`) ends the dispatch.

Handler isolation comes in two modes. *Isolated* (``isolate=True``): each handler runs in
its own savepoint, so a failing one is rolled back alone, recorded on the interaction and
the dispatch goes on. *Optimistic* (``isolate=False``, what the pipeline tries first): no
savepoints; a handler that raises aborts the dispatch with :class:`HandlerFailed`, the
caller rolls the whole transaction back and routes the same events again isolated. The
outcome is the same either way; the optimistic mode saves a ``SAVEPOINT``/``RELEASE`` pair
and a flush per handler when nothing fails, which is nearly always.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

from bot.core import authz
from bot.core.clock import Clock
from bot.core.context import Context, Enqueue
from bot.core.events import ChatType, Event, EventKind
from bot.core.filters import Filter
from bot.core.redaction import redact
from bot.core.templating import Renderer
from storage import inbound_batch, repos

if TYPE_CHECKING:
    from bot.app.config import Config

__all__ = ["DispatchResult", "Handler", "HandlerFailed", "Router", "StopPropagation"]

log = logging.getLogger(__name__)

#: Events that say the customer left; anything else 1:1 says they can be reached again.
GONE_KINDS = frozenset({EventKind.UNSUBSCRIBE, EventKind.CONTACT_REMOVED, EventKind.BOT_REMOVED})

#: Handoff statuses in which bot handlers stay silent for the conversation.
SILENT_STATUSES = frozenset({"waiting", "staff"})


class StopPropagation(Exception):
    """Raised by a handler to end the dispatch after it (its work is kept)."""


class HandlerFailed(Exception):
    """A handler (or its filter's flush) raised during an optimistic dispatch: the caller
    must roll the transaction back and route its events again with ``isolate=True``."""

    def __init__(self, handler: str, event_id: str) -> None:
        super().__init__(f"handler {handler} failed on event {event_id}")
        self.handler = handler
        self.event_id = event_id


@dataclass(frozen=True)
class Handler:
    """A handler callback with its filter, group, priority and stop rule."""

    name: str
    callback: Callable[[Context], Any]
    filter: Filter
    group: int = 0
    priority: int = 0
    block: bool = False
    during_handoff: bool = False


@dataclass
class DispatchResult:
    """What happened to one event."""

    event_id: str
    duplicate: bool = False
    handlers: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    queued: int = 0


class Router:
    """Routes events through the middleware and handlers; see the module docstring."""

    MIDDLEWARE = ("customer", "role", "conversation", "handoff")

    def __init__(
        self, config: Config, renderer: Renderer, clock: Clock, *, enqueue: Enqueue
    ) -> None:
        self.config = config
        self.enqueue = enqueue
        self.renderer = renderer
        self.clock = clock
        self._handlers: list[Handler] = []

    def add(self, handler: Handler) -> Handler:
        if any(h.name == handler.name for h in self._handlers):
            raise ValueError(f"a handler named {handler.name!r} is already registered")
        self._handlers.append(handler)
        self._handlers.sort(key=lambda h: (h.group, -h.priority))
        return handler

    def handler(
        self, filter: Filter, **options: Any
    ) -> Callable[[Callable[[Context], Any]], Callable[[Context], Any]]:
        """Decorator form of :meth:`add`."""

        def register(fn: Callable[[Context], Any]) -> Callable[[Context], Any]:
            self.add(
                Handler(
                    name=options.pop("name", fn.__name__), callback=fn, filter=filter, **options
                )
            )
            return fn

        return register

    @property
    def handlers(self) -> tuple[Handler, ...]:
        return tuple(self._handlers)

    # -- dispatch ----------------------------------------------------------------------

    def prefetch(self, session: Session, events: list[Event]) -> None:
        """Claim a batch's platform ids and load its identities and conversations in a few
        queries (storage/inbound_batch.py); :meth:`dispatch` of each event then reads them
        from the session's batch."""
        inbound_batch.prefetch(
            session,
            [
                inbound_batch.Claim(
                    e.dedupe_key,
                    e.id,
                    e.ref.channel,
                    e.actor.user_id,
                    e.ref.chat_id,
                    e.ref.user_id,
                    display_name=e.actor.display_name,
                    locale=e.actor.locale or self.config.general.locale,
                    timezone=self.config.general.timezone,
                )
                for e in events
            ],
            self.clock.now(),
        )

    def dispatch(self, session: Session, event: Event, *, isolate: bool = True) -> DispatchResult:
        """Process one event inside the caller's transaction.

        ``isolate=False`` runs the handlers without savepoints and raises
        :class:`HandlerFailed` if one of them raises (see the module docstring)."""
        result = DispatchResult(event_id=event.id)
        now = self.clock.now()
        batch = inbound_batch.current(session)
        claimed = batch.claim(event.id) if batch is not None else None
        if claimed is None:
            claimed = repos.claim_inbound(session, event.dedupe_key, event.id, now)
        if not claimed:
            result.duplicate = True
            return result
        ctx = Context(event, session, self.config, self.renderer, now, enqueue=self.enqueue)
        for step in self.MIDDLEWARE:
            getattr(self, f"_mw_{step}")(ctx)
        session.flush()  # what the middleware left pending (a new group, a name change)
        if isolate:
            self._run_handlers(ctx, result)
        else:
            self._run_handlers_optimistic(ctx, result)
        result.queued = len(ctx.queued)
        return result

    def _mw_customer(self, ctx: Context) -> None:
        event = ctx.event
        actor = event.actor
        customer, identity = repos.upsert_customer(
            ctx.session,
            event.ref.channel,
            actor.user_id,
            display_name=actor.display_name,
            locale=actor.locale or self.config.general.locale,
            timezone=self.config.general.timezone,
            now=ctx.now,
            reachable=event.is_private and event.kind not in GONE_KINDS,
        )
        ctx.customer, ctx.identity = customer, identity
        if event.chat_type is ChatType.GROUP:
            group = repos.ensure_group(
                ctx.session, event.ref.channel, event.ref.chat_id, event.chat_title
            )
            if event.kind is EventKind.BOT_REMOVED:
                group.active = False
            elif event.kind is EventKind.BOT_ADDED:
                group.active = True
            else:
                repos.ensure_membership(
                    ctx.session,
                    group.id,
                    customer.id,
                    ctx.now,
                    active=event.kind is not EventKind.LEAVE,
                )
        ctx.interaction = repos.record_interaction(
            ctx.session,
            customer.id,
            event_id=event.id,
            channel=event.ref.channel,
            chat_id=event.ref.chat_id,
            kind=event.kind.value,
            text=event.text,
            payload={
                "platform_id": event.platform_id,
                "raw": _jsonable(event.raw),
                **({"button_data": event.button_data} if event.button_data else {}),
            },
            now=ctx.now,
        )

    def _mw_role(self, ctx: Context) -> None:
        ctx.role = authz.chat_role(ctx).value

    def _mw_conversation(self, ctx: Context) -> None:
        ref = ctx.event.ref
        assert ctx.customer is not None
        ctx.conversation = repos.load_conversation(
            ctx.session, ref.channel, ref.chat_id, ref.user_id, ctx.customer.id, ctx.now
        )
        if ctx.event.text:
            repos.write_columns(
                ctx.session,
                ctx.conversation,
                last_customer_message=ctx.event.text,
                updated_at=ctx.now,
            )
        else:
            repos.write_columns(ctx.session, ctx.conversation, updated_at=ctx.now)

    def _mw_handoff(self, ctx: Context) -> None:
        assert ctx.conversation is not None
        ctx.bot_silenced = ctx.conversation.handoff_status in SILENT_STATUSES

    def _matching(self, ctx: Context, result: DispatchResult, *, strict: bool) -> Iterator[Handler]:
        """The handlers to run for ``ctx``, one per group, in order (the caller stops taking
        them when the dispatch ends). A filter that raises is logged and skipped, or with
        ``strict`` ends an optimistic dispatch with :class:`HandlerFailed`."""
        done_groups: set[int] = set()
        for handler in self._handlers:
            if handler.group in done_groups:
                continue
            if ctx.bot_silenced and not handler.during_handoff:
                continue
            try:
                matched = handler.filter(ctx)
            except Exception as exc:
                if strict:
                    raise HandlerFailed(handler.name, ctx.event.id) from exc
                log.exception("filter of handler %s failed on event %s", handler.name, ctx.event.id)
                result.errors.append(f"{handler.name}: filter error")
                continue
            if not matched:
                continue
            done_groups.add(handler.group)
            yield handler

    def _run_handlers_optimistic(self, ctx: Context, result: DispatchResult) -> None:
        for handler in self._matching(ctx, result, strict=True):
            ctx.handler = handler
            stop = handler.block
            try:
                # What the earlier handlers changed reaches the database first, so a
                # handler's own statements (Core updates, inserts) see it and come after it.
                ctx.session.flush()
                handler.callback(ctx)
            except StopPropagation:  # ends the dispatch; the handler's work is kept
                stop = True
            except Exception as exc:
                raise HandlerFailed(handler.name, ctx.event.id) from exc
            finally:
                ctx.handler = None
            result.handlers.append(handler.name)
            if stop:
                break

    def _run_handlers(self, ctx: Context, result: DispatchResult) -> None:
        for handler in self._matching(ctx, result, strict=False):
            ctx.handler = handler
            stop = handler.block
            queued_before = len(ctx.queued)
            try:
                with ctx.session.begin_nested():
                    try:
                        handler.callback(ctx)
                    except StopPropagation:  # ends the dispatch; the handler's work is kept
                        stop = True
                    ctx.session.flush()
            except Exception as exc:
                log.exception("handler %s failed on event %s", handler.name, ctx.event.id)
                result.errors.append(redact(f"{handler.name}: {type(exc).__name__}: {exc}"))
                del ctx.queued[queued_before:]
                repos.forget_cached_ids(ctx.session.get_bind().engine, ctx.session)  # tags it made
                if ctx.interaction is not None:
                    ctx.interaction.error = "; ".join(result.errors)
            else:
                result.handlers.append(handler.name)
            finally:
                ctx.handler = None
            if stop:
                break


def _jsonable(value: Any) -> Any:
    """The raw payload as JSON-safe data (platform payloads can hold odd types)."""
    if isinstance(value, dict) or hasattr(value, "items"):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)
