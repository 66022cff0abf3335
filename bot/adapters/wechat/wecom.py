"""The WeCom (企业微信) channel: app messages from staff, customer contact and customer groups.

Inbound, ``GET/POST /wecom/callback`` (always encrypted): URL verification decrypts
``echostr`` after the ``msg_signature`` check; callbacks are checked like the Official
Account's, turned into events by :mod:`~bot.adapters.wechat.wecom_callbacks`, and their
channel facts (contacts, welcome codes, groups) recorded by
:mod:`~bot.adapters.wechat.wecom_contacts` before the handlers run.

Its batch work — flushing mass-send batches, polling their results, corp tag sync — runs
only where ``batch_work`` is on (worker processes; web processes only take callbacks). Every
WeCom API call counts against that API's shared quota (:mod:`~bot.adapters.wechat.api`).

Outbound: to staff (``app:<userid>``) an app message; to an external contact the welcome
message while its code is valid, else a customer mass-send task; to a customer group a
group mass-send task from its owner (``groupchat/get``). Tasks, their batching and their
results are :mod:`~bot.adapters.wechat.wecom_mass_tasks`. Siyu tags listed in
``corp_tags`` are mirrored to WeCom corp tags by :mod:`~bot.adapters.wechat.wecom_tags`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import requests
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from wechatpy.exceptions import WeChatClientException

from bot.adapters.base import (
    AdapterHost,
    OutboundMessage,
    PermanentError,
    RecipientUnreachable,
    RetryAfter,
    SendReceipt,
    TransientError,
)
from bot.adapters.quotas import QuotaWindow, SharedQuota
from bot.adapters.wechat.api import (
    CALL_PURPOSE,
    QuotaExceeded,
    TokenStore,
    WecomApi,
    errcode_of,
)
from bot.adapters.wechat.callback import CallbackCrypto, CallbackRejected, parse_xml, read_body
from bot.adapters.wechat.common import Background, handle_within, record_delivery
from bot.adapters.wechat.inbound import CallbackJournal, fields_key
from bot.adapters.wechat.wecom_callbacks import APP_PREFIX, CHANNEL, to_events
from bot.adapters.wechat.wecom_contacts import WecomContacts
from bot.adapters.wechat.wecom_mass_tasks import RETRY_LATER_ERRORS, WecomMassSends
from bot.adapters.wechat.wecom_tags import CorpTagSync
from bot.app.config import WecomConfig
from bot.core.events import Event, EventKind
from bot.core.routing import DispatchResult

__all__ = ["WecomAdapter"]

log = logging.getLogger(__name__)

UNREACHABLE_ERRORS = {40003, 60111, 81013, 84061, 40096}


class WecomAdapter:
    """The WeCom channel (see the module docstring): callbacks in, messages and mass-send
    tasks out; contacts, tasks and corp tags are its parts."""

    channel = CHANNEL

    def __init__(
        self,
        config: WecomConfig,
        runtime: AdapterHost,
        api: WecomApi | None = None,
        *,
        batch_work: bool = True,
    ):
        self.config = config
        self.runtime = runtime
        self.db = runtime.db
        self.clock = runtime.clock
        self.crypto = CallbackCrypto(
            token=config.token,
            encoding_aes_key=config.encoding_aes_key,
            receiver_id=config.corp_id,
            replay_window=config.replay_window_seconds,
            now=lambda: self.clock.now().timestamp(),
            corp=True,
        )
        self.tokens = TokenStore(self.db, self.clock, config.token_refresh_margin_seconds)
        limits = runtime.config.limits
        # WeCom's limits count per company and API: one quota, scoped by endpoint
        self.quota = SharedQuota(
            f"wecom:{config.corp_id}",
            [
                QuotaWindow("minute", limits.wecom_per_minute, 60.0),
                QuotaWindow("hour", limits.wecom_per_hour, 3600.0),
            ],
            redis_url=limits.redis_url,
            reply_reserve=limits.reply_reserve,
        )
        self.api = api or WecomApi(
            config.corp_id,
            config.secret,
            self.tokens,
            config.api_base_url,
            config.http_timeout_seconds,
            quota=self.quota,
        )
        self.contacts = WecomContacts(config, runtime.config.general, runtime, self.api)
        self.mass = WecomMassSends(config, runtime, self.api)
        self.tags = CorpTagSync(config, runtime, self.api)
        self.background = Background()
        self._poller: asyncio.Task | None = None
        self._tag_sync: asyncio.Task | None = None
        self.journal = CallbackJournal(self.db, self.clock, CHANNEL, config.replay_window_seconds)
        self._sweeper: asyncio.Task | None = None
        self.batch_work = batch_work

    @property
    def corp_tags(self) -> dict[str, str]:
        """Siyu tag → WeCom corp tag id (``[wecom] corp_tags``)."""
        return self.tags.corp_tags

    def routes(self) -> list[Route]:
        return [Route("/wecom/callback", self.callback, methods=["GET", "POST"])]

    async def start(self) -> None:
        if not self.crypto.encrypted:
            log.warning("wecom: no encoding_aes_key configured; every callback will be refused")
        if self.batch_work:  # a worker process: never in web processes
            self._poller = asyncio.create_task(self.mass.run_forever(), name="wecom-mass-poller")
            self.mass.schedule_flush()  # batches claimed or queued before a restart
            if self.corp_tags:
                self._tag_sync = asyncio.create_task(
                    self.tags.run_forever(), name="wecom-corp-tag-sync"
                )
        self._sweeper = asyncio.create_task(
            self.journal.run_sweeper(self._route_fields), name="wecom-callback-sweeper"
        )
        log.info("wecom: corp %s ready (agent %s)", self.config.corp_id, self.config.agent_id)

    async def stop(self) -> None:
        for task in (self._poller, self._tag_sync, self._sweeper):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self.mass.stop()
        await self.background.drain(timeout=5.0)
        await self.quota.aclose()

    async def sync_corp_tags(self, ext: str | None = None) -> int:
        """Mirror mapped Siyu tags to WeCom corp tags now (see :class:`CorpTagSync`)."""
        return await self.tags.sync(ext)

    async def flush_mass_batches(self) -> list[str]:
        """Send every waiting batch as one mass-send task now; returns the msgids."""
        return await self.mass.flush_batches()

    async def poll_mass_tasks(self) -> dict[str, str]:
        """Ask WeCom about every unconfirmed task now; returns msgid → status."""
        return await self.mass.poll()

    # -- inbound -------------------------------------------------------------------------

    async def callback(self, request: Request) -> Response:
        started = time.monotonic()
        try:
            q = request.query_params
            timestamp, nonce = q.get("timestamp", ""), q.get("nonce", "")
            if request.method == "GET":
                self.crypto.check_timestamp(timestamp)
                echo = self.crypto.decrypt(
                    q.get("echostr", ""), q.get("msg_signature", ""), timestamp, nonce
                )
                return PlainTextResponse(echo)
            self.crypto.check_timestamp(timestamp)
            body = await read_body(request, self.config.max_body_bytes)
            outer = parse_xml(body)
            inner = self.crypto.decrypt(
                str(outer.get("Encrypt", "")), q.get("msg_signature", ""), timestamp, nonce
            )
            fields = parse_xml(inner)
            events = self.to_events(fields)
            key = events[0].dedupe_key if events else fields_key(CHANNEL, fields)
            budget = self.config.reply_budget_seconds
            sender = str(fields.get("ExternalUserID") or fields.get("FromUserName") or "")
            seen = await self.journal.record(key, sender, fields, None, budget)
        except CallbackRejected as exc:
            log.warning(
                "wecom callback refused (%d) from %s: %s",
                exc.status,
                request.client.host if request.client else "?",
                exc.reason,
            )
            return PlainTextResponse(exc.reason, status_code=exc.status)
        if seen == "done":
            return PlainTextResponse("success")  # a retry of a callback already routed
        await handle_within(
            self.background,
            lambda: self.journal.route(key, lambda: self._route_fields(fields, events)),
            max(0.1, budget - (time.monotonic() - started)),
            f"wecom:{key}",
            queue_wait=self.runtime.routing_wait(self.journal.in_flight),
        )
        return PlainTextResponse("success")

    async def _route_fields(self, fields: dict, events: list[Event] | None = None) -> None:
        """Route one recorded callback (from the request, or again from the sweeper)."""
        events = self.to_events(fields) if events is None else events
        if events:
            await self._process(events, fields)
        else:
            await self.db.run(self.contacts.record, None, fields)

    def to_events(self, f: dict) -> list[Event]:
        """The normalized events of one callback (a member change may name several people)."""
        return to_events(f, self.clock.now())

    async def _process(self, events: list[Event], fields: dict) -> list[DispatchResult]:
        await self.db.run(self.contacts.record, events[0], fields)
        results = [await self.runtime.handle(event) for event in events]
        first = events[0]
        if not results[0].duplicate and first.kind is EventKind.CONTACT_ADDED:
            ext = first.ref.user_id
            self.background.spawn(self._after_contact(ext), f"wecom:contact:{ext}")
        return results

    async def _after_contact(self, ext: str) -> None:
        await self.contacts.unionid_after_added(ext)
        await self.sync_corp_tags(ext)

    # -- outbound ------------------------------------------------------------------------

    async def send(self, message: OutboundMessage) -> SendReceipt:
        if not message.text.strip():
            raise PermanentError("empty message")
        CALL_PURPOSE.set(message.purpose)  # this send's own task: its API calls count so
        try:
            if message.chat_id.startswith(APP_PREFIX):
                result = await asyncio.to_thread(
                    self.api.call,
                    self.api.message.send_text,
                    self.config.agent_id,
                    message.user_id,
                    message.text,
                )
                await self.db.run(self._record, message, "app", None, None)
                return SendReceipt(str(result.get("msgid", "")) or None)
            if message.chat_id == message.user_id:
                return await self._send_to_contact(message)
            return await self._send_to_group(message)
        except QuotaExceeded as exc:
            raise RetryAfter(exc.wait, f"WeCom {exc.endpoint}: call quota used for now") from exc
        except WeChatClientException as exc:
            code = errcode_of(exc)
            detail = f"WeCom errcode {code}: {exc.errmsg}"
            if code in RETRY_LATER_ERRORS or code is None:
                raise RetryAfter(60, detail) from exc
            await self.db.run(self._record, message, "error", code, detail)
            if code in UNREACHABLE_ERRORS:
                raise RecipientUnreachable(detail) from exc
            raise PermanentError(detail) from exc
        except requests.RequestException as exc:
            raise TransientError(f"WeCom API unreachable: {exc}") from exc

    async def _send_to_contact(self, message: OutboundMessage) -> SendReceipt:
        ext = message.user_id
        code, staff = await self.db.run(self.contacts.take_welcome_code, ext)
        if code:
            try:
                await asyncio.to_thread(
                    self.api.call,
                    self.api.external_contact.send_welcome_msg,
                    {"welcome_code": code, "text": {"content": message.text}},
                )
            except WeChatClientException as exc:
                log.info(
                    "wecom: welcome code for %s refused (%s); using a mass-send task",
                    ext,
                    exc.errcode,
                )
            else:
                await self.db.run(self._record, message, "welcome", None, f"staff {staff}")
                return SendReceipt(f"welcome:{ext}")
        if staff is None:
            raise RecipientUnreachable(
                f"{ext} is no longer an external contact of any staff member"
            )
        template = {
            "chat_type": "single",
            "external_userid": [ext],
            "sender": staff,
            "text": {"content": message.text},
        }
        return await self.mass.send(message, staff, "single", template)

    async def _send_to_group(self, message: OutboundMessage) -> SendReceipt:
        info = await asyncio.to_thread(
            self.api.call, self.api.external_contact_group_chat.get, message.chat_id
        )
        owner = (info.get("group_chat") or {}).get("owner")
        if not owner:
            raise PermanentError(f"customer group {message.chat_id} has no owner to send from")
        template = {
            "chat_type": "group",
            "sender": owner,
            "chat_id_list": [message.chat_id],
            "text": {"content": message.text},
        }
        return await self.mass.send(message, owner, "group", template)

    def _record(
        self, message: OutboundMessage, route: str, code: int | None, detail: str | None
    ) -> None:
        with self.db.transaction() as session:
            record_delivery(
                session,
                outbox_id=message.outbox_id,
                channel=CHANNEL,
                user_id=message.user_id,
                route=route,
                errcode=code,
                detail=detail,
                now=self.clock.now(),
            )
