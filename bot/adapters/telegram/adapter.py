"""The Telegram channel on python-telegram-bot 22: updates in, outbox messages out.

Inbound: updates arrive by long polling (``getUpdates``) or at ``POST /telegram/webhook``
(checked against ``X-Telegram-Bot-Api-Secret-Token``). Each is parsed by PTB, turned into
one :class:`~bot.core.events.Event` and handed to the runtime, which dedupes it by update_id.
The adapter calls the runtime itself instead of going through PTB's ``Application``
dispatch, so a failure to record an update propagates: the webhook answers 500 and
Telegram retries, the poller does not confirm the offset. A malformed or unknown update is
logged and skipped. Button presses are always answered.

Outbound: :meth:`TelegramAdapter.send` is called by the delivery worker for outbox rows. It
waits for Telegram's rate limits, escapes and splits the text, attaches inline keyboards,
and maps Telegram's errors to the outbox's: 429 → RetryAfter, 403 in a private chat →
RecipientUnreachable, other 4xx → PermanentError, network trouble → TransientError. Parts
of a long text already sent are recorded in the outbox row, so a retry never repeats them.

Several processes: only processes that take events in (``inbound``) poll or register the
webhook; a delivery-only process just connects to send. In polling mode with a
``poll_lock`` (a :class:`storage.leader.LeaderLock`), the processes stand by and exactly
one of them, the lock's holder, polls; when it dies another takes over.

Staff relay group (optional, telegram_relay.py): updates from it go to the
:class:`~bot.adapters.telegram.relay.RelayDesk`, not the router; outbox rows carrying
``extra["relay"]`` are sent into the conversation's forum topic.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import time
import warnings
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import timedelta

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from telegram import Bot, ChatPermissions, InlineKeyboardButton, InlineKeyboardMarkup, Update
from telegram import error as tg_error
from telegram.constants import ParseMode
from telegram.request import HTTPXRequest
from telegram.warnings import PTBUserWarning

from bot.adapters.base import (
    AdapterHost,
    Button,
    OutboundMessage,
    PermanentError,
    RecipientUnreachable,
    RetryAfter,
    SendReceipt,
    TransientError,
)
from bot.adapters.telegram.convert import CHANNEL, admin_change, to_event
from bot.adapters.telegram.format import (
    CALLBACK_TOKEN_PREFIX,
    callback_token,
    fits_callback,
    render_chunks,
)
from bot.adapters.telegram.limits import RateLimiter, TelegramRateLimiter
from bot.adapters.telegram.menus import register_menus
from bot.adapters.telegram.relay import RelayDesk
from bot.app.config import TelegramConfig
from bot.core.events import ChatType, Event, EventKind
from bot.core.routing import DispatchResult
from bot.outbox.states import is_transactional
from storage import telegram as tg_store
from storage.leader import LeaderLock

__all__ = ["ALLOWED_UPDATES", "WEBHOOK_PATH", "TelegramAdapter"]

log = logging.getLogger(__name__)

ALLOWED_UPDATES = (
    "message",
    "edited_message",
    "callback_query",
    "chat_member",
    "my_chat_member",
)
WEBHOOK_PATH = "/telegram/webhook"
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
DEFAULT_BASE_URL = "https://api.telegram.org/bot"


def _seconds(exc: tg_error.RetryAfter) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = exc.retry_after
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


class TelegramAdapter:
    """The Telegram channel (see the module docstring)."""

    channel = CHANNEL

    def __init__(
        self,
        config: TelegramConfig,
        runtime: AdapterHost,
        *,
        limiter: RateLimiter | None = None,
        relay: RelayDesk | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        inbound: bool = True,
        poll_lock: LeaderLock | None = None,
        standby_seconds: float = 5.0,
    ) -> None:
        self.config = config
        self.inbound = inbound
        self.poll_lock = poll_lock
        self.standby_seconds = standby_seconds
        self.runtime = runtime
        self.db = runtime.db
        self.clock = runtime.clock
        self._handle = runtime.handle
        self.limiter: RateLimiter = limiter or _limiter_for(config)
        self.relay = relay
        self._monotonic = monotonic
        self.bot = Bot(
            config.token,
            base_url=config.base_url or DEFAULT_BASE_URL,
            request=HTTPXRequest(connection_pool_size=64, read_timeout=15.0),
            get_updates_request=HTTPXRequest(read_timeout=config.poll_timeout + 10.0),
        )
        self.ready = asyncio.Event()
        self._admins: dict[str, tuple[float, frozenset[str]]] = {}
        self._task: asyncio.Task | None = None
        self._stopping = asyncio.Event()

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Connect in the background (retrying), then poll or register the webhook."""
        self._stopping.clear()
        if self.relay is not None:
            self.relay.start()
        self._task = asyncio.create_task(self._run(), name="siyu-telegram")

    async def stop(self) -> None:
        self._stopping.set()
        if self.relay is not None:
            self.relay.stop()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        with contextlib.suppress(Exception):
            await self.bot.shutdown()
        with contextlib.suppress(Exception):
            await self.limiter.aclose()
        self.ready.clear()

    async def _run(self) -> None:
        delay = 1.0
        while not self._stopping.is_set():
            try:
                await self._connect()
                break
            except tg_error.InvalidToken:
                log.error("telegram: the bot token was rejected; check [telegram] token")
                return
            except Exception as exc:
                log.warning("telegram: cannot connect (%s); retrying in %.0fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 60.0)
        if self.config.mode != "polling" or not self.inbound or self._stopping.is_set():
            return
        if self.poll_lock is None:
            await self._poll()
        else:
            await self._poll_as_leader(self.poll_lock)

    async def _connect(self) -> None:
        await self.bot.initialize()
        # a delivery-only process (not inbound) neither polls nor touches the webhook
        if self.inbound and self.config.mode == "polling":
            await self.bot.delete_webhook()
        elif self.inbound and self.config.webhook_url:
            await self.bot.set_webhook(
                self.config.webhook_url,
                secret_token=self.config.webhook_secret,
                allowed_updates=list(ALLOWED_UPDATES),
            )
        await register_menus(self.bot)
        log.info("telegram: connected as @%s (%s mode)", self.bot.username, self.config.mode)
        self.ready.set()

    # -- inbound: polling -----------------------------------------------------------------

    async def _poll(self) -> None:
        offset: int | None = None
        delay = 1.0
        while not self._stopping.is_set():
            try:
                batch = await self._get_updates(offset)
            except asyncio.CancelledError:
                raise
            except tg_error.RetryAfter as exc:
                await asyncio.sleep(_seconds(exc))
                continue
            except Exception as exc:
                log.warning("telegram: getUpdates failed (%s); retrying in %.0fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 60.0)
                continue
            delay = 1.0
            if not isinstance(batch, list) or not batch:
                continue
            confirmed = await self.process_batch(batch)
            if confirmed is not None:
                offset = confirmed + 1
            if confirmed is None or confirmed < _max_update_id(batch):
                await asyncio.sleep(1.0)  # processing failed: the rest comes again

    async def _poll_as_leader(self, lock: LeaderLock) -> None:
        """Poll while holding ``lock``; stand by (retrying every ``standby_seconds``) else."""
        while not self._stopping.is_set():
            try:
                held = await asyncio.to_thread(lock.acquire)
            except Exception as exc:
                log.warning("telegram: polling lock unavailable (%s); retrying", exc)
                held = False
            if not held:
                await asyncio.sleep(self.standby_seconds)
                continue
            log.info("telegram: this process polls (it holds the polling lock)")
            poller = asyncio.create_task(self._poll(), name="siyu-telegram-poll")
            try:
                while not poller.done():
                    await asyncio.wait({poller}, timeout=self.standby_seconds)
                    if not poller.done() and not await asyncio.to_thread(lock.alive):
                        log.warning("telegram: lost the polling lock; standing by")
                        break
            finally:
                poller.cancel()
                await asyncio.gather(poller, return_exceptions=True)
                await asyncio.to_thread(lock.release)

    async def _get_updates(self, offset: int | None) -> object:
        """Raw getUpdates, so that one malformed update cannot poison a whole batch."""
        with warnings.catch_warnings():
            # do_api_request (public) would otherwise suggest the typed, all-or-nothing method
            warnings.filterwarnings("ignore", "Please use 'Bot.getUpdates'", PTBUserWarning)
            return await self.bot.do_api_request(
                "getUpdates",
                api_kwargs={
                    "offset": offset,
                    "timeout": self.config.poll_timeout,
                    "allowed_updates": list(ALLOWED_UPDATES),
                },
                read_timeout=self.config.poll_timeout + 10.0,
            )

    async def process_batch(self, batch: list) -> int | None:
        """Process a getUpdates batch (chats concurrently, each chat in order).

        Returns the highest update_id below which everything is done (to confirm as offset),
        or None if nothing could be confirmed.
        """
        by_chat: dict[str, list[Mapping]] = defaultdict(list)
        for item in batch:
            by_chat[_chat_key(item)].append(item)
        failed: list[int] = []

        async def run_chat(items: list[Mapping]) -> None:
            for n, item in enumerate(items):
                try:
                    await self.process(item)
                except Exception:
                    log.exception("telegram: update %s failed; it will be retried", _uid(item))
                    failed.extend(uid for i in items[n:] if (uid := _uid(i)) is not None)
                    return

        await asyncio.gather(*(run_chat(items) for items in by_chat.values()))
        ids = [u for u in (_uid(i) for i in batch) if u is not None]
        if not ids:
            return None
        if failed:
            lowest = min(failed)
            done = [u for u in ids if u < lowest]
            return max(done) if done else None
        return max(ids)

    # -- inbound: one update ----------------------------------------------------------------

    async def process(self, data: object) -> DispatchResult | None:
        """Handle one update as JSON data; None if it was skipped (malformed or not for us)."""
        if not isinstance(data, Mapping):
            log.warning("telegram: skipped an update that is not a JSON object: %.200r", data)
            return None
        try:
            update = Update.de_json(dict(data), self.bot)
            if update is None or not isinstance(update.update_id, int):
                raise ValueError("no update_id")
        except Exception as exc:
            log.warning("telegram: skipped a malformed update (%s): %.300s", exc, _dump(data))
            return None
        if changed := admin_change(update):
            self._admins.pop(changed, None)
        if self.relay is not None and self.relay.owns(update):
            await self.relay.process(update, self.bot.username)
            return None
        try:
            event = to_event(update, data, bot_username=self.bot.username, now=self.clock.now())
        except Exception as exc:
            log.warning(
                "telegram: skipped update %s that could not be read (%r)", update.update_id, exc
            )
            event = None
        query = update.callback_query
        try:
            if event is None:
                log.debug("telegram: update %s has nothing for Siyu", update.update_id)
                return None
            event = await self._enrich(event)
            return await self._handle(event)
        finally:
            if query is not None:
                await self._answer(query.id)

    async def _enrich(self, event: Event) -> Event:
        """Add what the update alone does not say: admin rights, long button data."""
        changes: dict = {}
        # messages too: moderation never checks a group's admins (the list is cached)
        asks_rights = event.kind in (
            EventKind.COMMAND,
            EventKind.BUTTON,
            EventKind.MESSAGE,
            EventKind.EDITED,
        )
        if (
            event.chat_type is ChatType.GROUP
            and asks_rights
            and await self.is_admin(event.ref.chat_id, event.actor.user_id)
        ):
            changes["actor"] = replace(event.actor, is_platform_admin=True)
        data = event.button_data
        if data and data.startswith(CALLBACK_TOKEN_PREFIX):
            full = await self.db.run(self._resolve_callback, data)
            if full is not None:
                changes["button_data"] = full
        return replace(event, **changes) if changes else event

    def _blocked(self, chat_id: str) -> bool:
        with self.db.sessions() as session:
            return tg_store.is_unreachable(session, chat_id)

    def _resolve_callback(self, token: str) -> str | None:
        with self.db.sessions() as session:
            return tg_store.resolve_callback(session, token)

    async def _answer(self, query_id: str) -> None:
        try:
            await self.bot.answer_callback_query(query_id)
        except Exception as exc:  # too old, already answered, network: nothing to redo
            log.info("telegram: could not answer button press %s: %s", query_id, exc)

    async def is_admin(self, chat_id: str, user_id: str) -> bool:
        """Whether the user is an admin of the group (getChatAdministrators, cached)."""
        now = self._monotonic()
        cached = self._admins.get(chat_id)
        if cached is None or cached[0] <= now:
            try:
                admins = await self.bot.get_chat_administrators(int(chat_id))
                ids = frozenset(str(m.user.id) for m in admins)
                ttl = self.config.admin_cache_seconds
            except Exception as exc:
                log.warning("telegram: cannot list the admins of %s: %s", chat_id, exc)
                ids, ttl = frozenset(), 30.0
            cached = self._admins[chat_id] = (now + ttl, ids)
        return user_id in cached[1]

    # -- inbound: webhook ----------------------------------------------------------------

    def routes(self) -> list[BaseRoute]:
        """The webhook route for Siyu's HTTP app."""
        return [Route(WEBHOOK_PATH, self._webhook, methods=["POST"])]

    async def _webhook(self, request: Request) -> Response:
        secret = self.config.webhook_secret
        given = request.headers.get(SECRET_HEADER, "")
        if not secret or not hmac.compare_digest(given.encode(), secret.encode()):
            return JSONResponse({"error": "wrong or missing secret token"}, status_code=403)
        if not self.ready.is_set():
            return JSONResponse({"error": "telegram channel is starting"}, status_code=503)
        try:
            data = json.loads(await request.body())
        except (ValueError, RecursionError):  # not JSON, not UTF-8, too deep, huge numbers
            # (the body itself is bounded by the app's BodyLimitMiddleware before this read)
            return JSONResponse({"error": "the body is not valid JSON"}, status_code=400)
        try:
            await self.process(data)
        except Exception:
            log.exception("telegram: webhook update failed; Telegram will retry it")
            return JSONResponse({"error": "not processed"}, status_code=500)
        return Response(status_code=200)

    # -- outbound -------------------------------------------------------------------------

    async def send(self, message: OutboundMessage) -> SendReceipt:
        """Send one outbox message (split if long); raise the outbox's DeliveryErrors.

        The parts of a long message already sent are recorded in the outbox row (its
        ``extra["sent_parts"]``) as each goes out, so a retry, even by another process after
        a crash, never sends an earlier part again.
        """
        chat_id = message.chat_id
        is_group = chat_id.startswith("-")
        urgent = is_transactional(message.purpose)  # the next free slot is a reply's
        paused = await self.limiter.paused_for(chat_id)
        if paused > 0:
            raise RetryAfter(paused, f"chat {chat_id} is rate limited")
        if message.extra.get("moderation") is not None:  # bot/groups/moderation.py
            return await self.moderate(chat_id, message.extra["moderation"])
        if not message.text.strip():
            raise PermanentError("empty message")
        try:
            target = int(chat_id)
        except ValueError:
            raise PermanentError(f"not a Telegram chat id: {chat_id!r}") from None
        if not is_group and await self.db.run(self._blocked, chat_id):
            raise RecipientUnreachable("telegram: the user blocked the bot earlier")
        chunks = render_chunks(message.text, message.extra.get("mentions", ()))
        markup = await self._keyboard(message.buttons) if message.buttons else None
        thread = message.extra.get("message_thread_id")
        relay = message.extra.get("relay") if self.relay is not None else None
        sent_ids = [str(i) for i in message.extra.get("sent_parts", ())][: len(chunks)]
        try:
            if relay is not None:
                assert self.relay is not None  # relay is only read when a desk exists
                thread = await self.relay.thread_for(
                    self.bot,
                    relay,
                    lambda: self.limiter.acquire(chat_id, is_group=True, urgent=True),
                )
            for index in range(len(sent_ids), len(chunks)):
                await self.limiter.acquire(chat_id, is_group=is_group, urgent=urgent)
                sent = await self.bot.send_message(
                    target,
                    chunks[index],
                    parse_mode=ParseMode.HTML,
                    reply_markup=markup if index == len(chunks) - 1 else None,
                    message_thread_id=thread,
                )
                sent_ids.append(str(sent.message_id))
                if index < len(chunks) - 1:
                    await self.db.run(self._record_parts, message.outbox_id, sent_ids)
        except tg_error.TelegramError as exc:
            if (
                relay is not None
                and self.relay is not None
                and "thread not found" in exc.message.lower()
            ):
                await self.relay.forget(relay)
                raise TransientError(f"telegram: relay topic gone ({exc.message})") from exc
            raise await self._delivery_error(exc, chat_id, is_group) from exc
        if message.extra.get("pin") and is_group:
            await self._pin(target, int(sent_ids[0]))
        return SendReceipt(platform_message_id=",".join(sent_ids)[:128])

    async def moderate(self, chat_id: str, op: Mapping) -> SendReceipt:
        """Carry out one moderation operation in a group (the bot must be an admin with
        **Delete messages** and **Ban users**): ``delete`` a message, ``mute`` (until a
        time) / ``restrict`` (until lifted) / ``unmute`` a member, ``ban``, ``unban``, or
        ``remove`` (ban, then unban at once: they may rejoin). Errors map like sends."""
        kind = op.get("op")
        try:
            target, user = int(chat_id), int(op.get("user_id") or 0)
        except (TypeError, ValueError):
            raise PermanentError(f"moderation: bad chat or user id in {dict(op)!r}") from None
        until = op.get("until")
        try:
            if kind == "delete":
                if not isinstance(op.get("message_id"), int):
                    raise PermanentError("moderation: no message id to delete")
                await self.bot.delete_message(target, op["message_id"])
            elif kind in ("mute", "restrict"):
                await self.bot.restrict_chat_member(
                    target, user, ChatPermissions.no_permissions(), until_date=until
                )
            elif kind == "unmute":
                await self.bot.restrict_chat_member(target, user, ChatPermissions.all_permissions())
            elif kind == "ban":
                await self.bot.ban_chat_member(target, user, until_date=until)
            elif kind == "unban":
                await self.bot.unban_chat_member(target, user, only_if_banned=True)
            elif kind == "remove":
                await self.bot.ban_chat_member(target, user)
                await self.bot.unban_chat_member(target, user, only_if_banned=True)
            else:
                raise PermanentError(f"moderation: unknown operation {kind!r}")
        except tg_error.TelegramError as exc:
            raise await self._delivery_error(exc, chat_id, True) from exc
        return SendReceipt(platform_message_id=f"{kind}:{op.get('message_id') or user}"[:128])

    def _record_parts(self, outbox_id: int, sent_ids: list[str]) -> None:
        with self.db.transaction() as session:
            tg_store.record_sent_parts(session, outbox_id, sent_ids)

    async def _delivery_error(self, exc: tg_error.TelegramError, chat_id: str, is_group: bool):
        if isinstance(exc, tg_error.RetryAfter):
            seconds = _seconds(exc)
            await self.limiter.pause(chat_id, seconds)
            return RetryAfter(seconds, f"telegram: {exc.message}")
        if isinstance(exc, tg_error.Forbidden):
            if is_group:
                return PermanentError(f"telegram: the bot cannot write to the group: {exc.message}")
            return RecipientUnreachable(f"telegram: {exc.message}")
        if isinstance(exc, tg_error.ChatMigrated):
            return PermanentError(f"telegram: the group moved to chat {exc.new_chat_id}")
        if isinstance(exc, tg_error.BadRequest):
            if not is_group and "chat not found" in exc.message.lower():
                return RecipientUnreachable(f"telegram: {exc.message}")
            return PermanentError(f"telegram: {exc.message}")
        return TransientError(f"telegram: {exc.message}")

    async def _keyboard(self, buttons: tuple[Button, ...]) -> InlineKeyboardMarkup:
        rows = []
        long_data: dict[str, str] = {}
        for b in buttons:
            data = b.data
            if not fits_callback(data):
                token = callback_token(data)
                long_data[token] = data
                data = token
            rows.append([InlineKeyboardButton(b.label, callback_data=data)])
        if long_data:
            await self.db.run(self._remember_callbacks, long_data)
        return InlineKeyboardMarkup(rows)

    def _remember_callbacks(self, items: dict[str, str]) -> None:
        with self.db.transaction() as session:
            for token, data in items.items():
                tg_store.remember_callback(session, token, data, self.clock.now())

    async def _pin(self, chat_id: int, message_id: int) -> None:
        try:
            await self.bot.pin_chat_message(chat_id, message_id, disable_notification=False)
        except tg_error.TelegramError as exc:  # sent all the same; pinning needs admin rights
            log.warning("telegram: could not pin message %s in %s: %s", message_id, chat_id, exc)


def _limiter_for(config: TelegramConfig) -> RateLimiter:
    """Limits shared through Redis when ``redis_url`` is set, else kept in this process."""
    if config.redis_url:
        from bot.adapters.telegram.limits_redis import RedisRateLimiter

        bot_id = config.token.partition(":")[0]  # one bot's limits, whoever else uses Redis
        return RedisRateLimiter(config.redis_url, prefix=f"siyu:telegram:{bot_id}:rate:")
    return TelegramRateLimiter()


def _uid(item: object) -> int | None:
    if isinstance(item, Mapping) and isinstance(item.get("update_id"), int):
        return item["update_id"]
    return None


def _max_update_id(batch: list) -> int:
    return max((u for u in (_uid(i) for i in batch) if u is not None), default=-1)


def _chat_key(item: object) -> str:
    """The chat an update belongs to, for ordering (unknown shapes go to one lane)."""
    if not isinstance(item, Mapping):
        return "?"
    for field in ("message", "edited_message", "chat_member", "my_chat_member"):
        body = item.get(field)
        if isinstance(body, Mapping) and isinstance(body.get("chat"), Mapping):
            return str(body["chat"].get("id"))
    query = item.get("callback_query")
    if isinstance(query, Mapping):
        message = query.get("message")
        if isinstance(message, Mapping) and isinstance(message.get("chat"), Mapping):
            return str(message["chat"].get("id"))
        if isinstance(query.get("from"), Mapping):
            return str(query["from"].get("id"))
    return "?"


def _dump(data: object) -> str:
    try:
        return json.dumps(data, ensure_ascii=False, default=str)
    except Exception:
        return repr(data)
