"""The WeChat Official Account (公众号) channel: callbacks in, customer-service messages out.

Inbound, ``GET/POST /wechat/callback``: the signature, timestamp and (safe mode) AES
envelope are checked, the XML is parsed with defusedxml, and the event is routed through
the runtime (inbound dedupe by MsgId, or FromUserName+CreateTime+Event for events). The
callback is answered within the configured budget: with the bot's one reply as a passive
reply when it is ready in time, else ``success`` while the work goes on.

Outbound, :meth:`WechatAdapter.send`: a customer-service message while the follower's
window is open (48 h / 5 messages after their message; 1 min / 3 after a click, subscribe
or scan), else the configured template message, else the delivery is recorded as "window
closed" (a PermanentError on the outbox row plus a ``wechat_deliveries`` row), never
dropped silently. 45015/45047 close the window; 45009 (daily quota) waits until midnight.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import requests
from sqlalchemy.orm import Session
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
from bot.adapters.wechat.api import OfficialAccountApi, TokenStore, errcode_of
from bot.adapters.wechat.callback import (
    CallbackCrypto,
    CallbackRejected,
    parse_xml,
    read_body,
    text_reply_xml,
)
from bot.adapters.wechat.common import (
    Background,
    claim_passive_reply,
    claim_window_slot,
    close_window,
    handle_within,
    open_window,
    record_delivery,
    record_source,
    refund_window_slot,
    release_passive_reply,
)
from bot.adapters.wechat.inbound import CallbackJournal, Replay
from bot.app.config import WechatConfig
from bot.core.events import Actor, ConversationRef, Event, EventKind, parse_command
from bot.core.routing import DispatchResult
from storage import repos
from storage.group_commit import GroupCommit
from storage.identity_links import link_unionid, unionid_of

__all__ = ["WechatAdapter", "WindowClosed"]

log = logging.getLogger(__name__)

CHANNEL = "wechat"
BEIJING = ZoneInfo("Asia/Shanghai")
WINDOW_ERRORS = {45015: "window_closed", 45047: "quota"}
UNREACHABLE_ERRORS = {40003, 43004, 43019, 45102}
OPENING_ACTIONS = {"subscribe", "scan", "click", "view"}


class WindowClosed(PermanentError):
    """The follower's customer-service window is closed and no template is configured."""


def _scene(event_key: str) -> str:
    return event_key.removeprefix("qrscene_") if event_key else ""


class WechatAdapter:
    """The Official Account channel (see the module docstring). Given the runtime; owns the
    callback route and the API client."""

    channel = CHANNEL

    def __init__(
        self, config: WechatConfig, runtime: AdapterHost, api: OfficialAccountApi | None = None
    ):
        self.config = config
        self.runtime = runtime
        self.db = runtime.db
        self.clock = runtime.clock
        self.crypto = CallbackCrypto(
            token=config.token,
            encoding_aes_key=config.encoding_aes_key,
            receiver_id=config.app_id,
            replay_window=config.replay_window_seconds,
            now=lambda: self.clock.now().timestamp(),
        )
        self.tokens = TokenStore(self.db, self.clock, config.token_refresh_margin_seconds)
        self.api = api or OfficialAccountApi(
            config.app_id,
            config.app_secret,
            self.tokens,
            config.api_base_url,
            config.http_timeout_seconds,
        )
        self.background = Background()
        self.journal = CallbackJournal(self.db, self.clock, CHANNEL, config.replay_window_seconds)
        # The channel facts and passive-reply claims of callbacks routed together share a
        # transaction (each is idempotent: a failing batch is redone unit by unit).
        self._facts = GroupCommit(self.db, savepoints=False)
        self._sweeper: asyncio.Task | None = None
        limits = runtime.config.limits
        day = (86400.0, 8 * 3600.0)  # WeChat's day starts at midnight Beijing time
        self.custom_quota = SharedQuota(
            "wechat-custom",
            [QuotaWindow("day", limits.wechat_custom_per_day, *day)],
            redis_url=limits.redis_url,
            reply_reserve=limits.reply_reserve,
        )
        self.template_quota = SharedQuota(
            "wechat-template",
            [QuotaWindow("day", limits.wechat_template_per_day, *day)],
            redis_url=limits.redis_url,
            reply_reserve=limits.reply_reserve,
        )

    def routes(self) -> list[Route]:
        return [Route("/wechat/callback", self.callback, methods=["GET", "POST"])]

    async def start(self) -> None:
        mode = "safe mode" if self.crypto.encrypted else "plaintext mode"
        log.info("wechat: Official Account %s ready (%s)", self.config.app_id, mode)
        self._sweeper = asyncio.create_task(self.journal.run_sweeper(self._route_recorded))

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
            self._sweeper = None
        await self.background.drain(timeout=5.0)
        for quota in (self.custom_quota, self.template_quota):
            await quota.aclose()

    async def _route_recorded(self, fields: dict) -> None:
        """Route a recorded callback again (the sweeper: its first routing failed)."""
        event = self.to_event(fields)
        if event is not None:
            await self._process(event, fields, {"open": False})

    # -- inbound -------------------------------------------------------------------------

    async def callback(self, request: Request) -> Response:
        try:
            if request.method == "GET":
                return self._verify_url(request)
            return await self._receive(request)
        except CallbackRejected as exc:
            log.warning(
                "wechat callback refused (%d) from %s: %s",
                exc.status,
                request.client.host if request.client else "?",
                exc.reason,
            )
            return PlainTextResponse(exc.reason, status_code=exc.status)

    def _verify_url(self, request: Request) -> Response:
        q = request.query_params
        self.crypto.check_timestamp(q.get("timestamp", ""))
        self.crypto.check_signature(
            q.get("signature", ""), q.get("timestamp", ""), q.get("nonce", "")
        )
        return PlainTextResponse(q.get("echostr", ""))

    async def _receive(self, request: Request) -> Response:
        started = time.monotonic()
        q = request.query_params
        timestamp, nonce = q.get("timestamp", ""), q.get("nonce", "")
        self.crypto.check_timestamp(timestamp)
        self.crypto.check_signature(q.get("signature", ""), timestamp, nonce)
        body = await read_body(request, self.config.max_body_bytes)
        outer = parse_xml(body)
        encrypted = q.get("encrypt_type", "raw") == "aes"
        if encrypted:
            inner = self.crypto.decrypt(
                str(outer.get("Encrypt", "")), q.get("msg_signature", ""), timestamp, nonce
            )
            fields = parse_xml(inner)
        elif self.crypto.encrypted and not self.config.allow_plaintext:
            raise CallbackRejected(403, "plaintext callback but safe mode is required")
        else:
            fields = outer
        if fields.get("ToUserName") and "FromUserName" not in fields:
            raise CallbackRejected(400, "no FromUserName")
        event = self.to_event(fields)
        # Plaintext signatures do not cover the body: remember them to refuse replays.
        replay = None if encrypted else Replay.of(q.get("signature", ""), nonce, timestamp, body)
        budget = self.config.reply_budget_seconds
        key = event.dedupe_key if event is not None else None
        seen = await self.journal.record(
            key, str(fields.get("FromUserName", "")), fields, replay, budget
        )
        if event is None:
            log.info(
                "wechat: %s/%s not handled; acknowledged",
                fields.get("MsgType"),
                fields.get("Event"),
            )
            return PlainTextResponse("success")
        if seen == "done":
            return PlainTextResponse("success")  # a retry of a callback already routed
        waiting = {"open": True}
        outcome = await handle_within(
            self.background,
            lambda: self.journal.route(key, lambda: self._process(event, fields, waiting)),
            max(0.1, budget - (time.monotonic() - started)),
            f"wechat:{event.dedupe_key}",
            queue_wait=self.runtime.routing_wait(self.journal.in_flight),
        )
        if outcome is None:
            waiting["open"] = False  # too late: a reply claimed from now on is given back
            return PlainTextResponse("success")
        passive = outcome[1] if isinstance(outcome, tuple) else None
        if passive is None:
            return PlainTextResponse("success")
        xml = text_reply_xml(
            event.ref.user_id,
            str(fields.get("ToUserName", "")),
            passive,
            int(self.clock.now().timestamp()),
        )
        if encrypted:
            xml = self.crypto.encrypt_reply(xml)
        return Response(xml, media_type="application/xml")

    def to_event(self, f: dict) -> Event | None:
        """The normalized event of a callback, or None for callbacks Siyu does not route."""
        openid = str(f.get("FromUserName", ""))
        msg_type = str(f.get("MsgType", "")).lower()
        try:
            created = datetime.fromtimestamp(int(f.get("CreateTime", 0) or 0), UTC)
        except (ValueError, OverflowError):
            raise CallbackRejected(400, "bad CreateTime") from None
        common: dict[str, Any] = {
            "ref": ConversationRef(CHANNEL, openid, openid),
            "actor": Actor(openid),
            "occurred_at": created,
            "raw": {k: v for k, v in f.items() if k != "Encrypt"},
        }
        if not openid:
            raise CallbackRejected(400, "no FromUserName")
        if msg_type == "event":
            name = str(f.get("Event", "")).lower()
            key = str(f.get("EventKey", "") or "")
            pid = f"{openid}:{f.get('CreateTime', '')}:{f.get('Event', '')}"
            if name == "subscribe":
                return Event(
                    kind=EventKind.SUBSCRIBE,
                    platform_id=pid,
                    button_data=_scene(key) or None,
                    **common,
                )
            if name == "unsubscribe":
                return Event(kind=EventKind.UNSUBSCRIBE, platform_id=pid, **common)
            if name == "scan":
                return Event(
                    kind=EventKind.BUTTON, platform_id=pid, button_data=f"scan:{key}", **common
                )
            if name == "click":
                return Event(kind=EventKind.MENU, platform_id=pid, button_data=key, **common)
            if name == "view":
                return Event(
                    kind=EventKind.MENU, platform_id=pid, button_data=f"view:{key}", **common
                )
            return None
        msg_id = str(f.get("MsgId", "") or f"{openid}:{f.get('CreateTime', '')}:{msg_type}")
        if msg_type == "text":
            text = str(f.get("Content", ""))
            if f.get("bizmsgmenuid"):
                return Event(
                    kind=EventKind.BUTTON,
                    platform_id=msg_id,
                    text=text,
                    button_data=str(f["bizmsgmenuid"]),
                    **common,
                )
            parsed = parse_command(text)
            if parsed:
                return Event(
                    kind=EventKind.COMMAND,
                    platform_id=msg_id,
                    text=text,
                    command=parsed[0],
                    args=parsed[1],
                    **common,
                )
            return Event(kind=EventKind.MESSAGE, platform_id=msg_id, text=text, **common)
        texts = {
            "image": "",
            "voice": str(f.get("Recognition", "") or ""),
            "video": "",
            "shortvideo": "",
            "location": str(f.get("Label", "") or ""),
            "link": str(f.get("Title", "") or ""),
        }
        if msg_type in texts:
            return Event(kind=EventKind.MESSAGE, platform_id=msg_id, text=texts[msg_type], **common)
        return None

    async def _process(
        self, event: Event, fields: dict, waiting: dict
    ) -> tuple[DispatchResult, str | None]:
        """Record channel facts, route the event, and take its reply for the passive answer
        while the callback still waits (right after routing, before the delivery worker)."""
        await self._facts.run(self._before_dispatch, event, fields)
        result = await self.runtime.handle(event)
        passive = None
        if not result.duplicate and self.config.passive_reply and waiting["open"]:
            claimed = await self._facts.run(self._claim_passive, event)
            if claimed is not None and not waiting["open"]:
                await self.db.run(self._unclaim_passive, claimed[0])
                self.runtime.wake_delivery()
            elif claimed is not None:
                passive = claimed[1]
        if (
            not result.duplicate
            and self.config.fetch_unionid
            and event.kind is not EventKind.UNSUBSCRIBE
        ):
            self.background.spawn(
                self._enrich(event.ref.user_id), f"wechat:unionid:{event.ref.user_id}"
            )
        return result, passive

    def _before_dispatch(self, session: Session, event: Event, fields: dict) -> None:
        """Channel facts recorded before handlers run (idempotent: a retry redoes them)."""
        now = self.clock.now()
        openid = event.ref.user_id
        name = str(fields.get("Event", "")).lower()
        customer, identity = repos.upsert_customer(
            session,
            CHANNEL,
            openid,
            display_name="",
            locale=self.runtime.config.general.locale,
            timezone=self.runtime.config.general.timezone,
            now=now,
        )
        at = min(event.occurred_at, now) if event.occurred_at.timestamp() > 0 else now
        if event.kind in (EventKind.MESSAGE, EventKind.COMMAND) or (
            event.kind is EventKind.BUTTON and not name
        ):
            open_window(session, CHANNEL, openid, by="message", at=at, now=now)
        elif name in OPENING_ACTIONS:
            open_window(session, CHANNEL, openid, by=name, at=at, now=now)
        if name == "subscribe":
            identity.unreachable, identity.unreachable_reason = False, None
        if name in ("subscribe", "scan"):
            scene = _scene(str(fields.get("EventKey", "") or ""))
            if scene:
                record_source(
                    session,
                    event_key=event.dedupe_key,
                    customer_id=customer.id,
                    channel=CHANNEL,
                    external_id=openid,
                    source=scene,
                    kind=f"qrscene:{name}",
                    now=now,
                )
        if name == "unsubscribe":
            repos.mark_unreachable(session, CHANNEL, openid, "unsubscribed")
            customer.marketing_opt_out = True

    async def _enrich(self, openid: str) -> None:
        """Look up the follower's unionid (once) and join them with their other identities."""
        known = await self.db.run(self._known_unionid, openid)
        if known:
            return
        try:
            info = await asyncio.to_thread(self.api.call, self.api.user.get, openid)
        except (WeChatClientException, requests.RequestException) as exc:
            log.warning("wechat: user/info for %s failed: %s", openid, exc)
            return
        unionid = info.get("unionid") if isinstance(info, dict) else None
        if unionid:
            await self.db.run(self._link, openid, unionid)

    def _known_unionid(self, openid: str) -> str | None:
        with self.db.sessions() as session:
            return unionid_of(session, CHANNEL, openid)

    def _link(self, openid: str, unionid: str) -> None:
        with self.db.transaction() as session:
            link_unionid(session, CHANNEL, openid, unionid, self.clock.now())

    def _claim_passive(self, session: Session, event: Event) -> tuple[int, str] | None:
        return claim_passive_reply(session, event, self.clock.now())

    def _unclaim_passive(self, outbox_id: int) -> None:
        with self.db.transaction() as session:
            release_passive_reply(session, outbox_id)

    # -- outbound ------------------------------------------------------------------------

    async def send(self, message: OutboundMessage) -> SendReceipt:
        if not message.text.strip():
            raise PermanentError("empty message")
        template_id = message.extra.get("template_id")
        if template_id:
            return await self._send_template(message, template_id, "template")
        closed = await self.db.run(self._take_slot, message.user_id)
        if closed is None:
            if wait := await self.custom_quota.take(message.purpose):
                await self.db.run(self._refund, message.user_id)
                raise RetryAfter(wait, "customer-service API quota of the day is used")
            try:
                result = await asyncio.to_thread(self._custom_send, message)
            except WeChatClientException as exc:
                code = errcode_of(exc)
                if code not in WINDOW_ERRORS:
                    await self.db.run(self._refund, message.user_id)
                    raise await self._fail(message, exc, "custom") from exc
                closed = f"WeChat answered {code} ({exc.errmsg})"
                await self.db.run(self._record, message, WINDOW_ERRORS[code], code, closed, True)
            except requests.RequestException as exc:
                await self.db.run(self._refund, message.user_id)
                raise TransientError(f"WeChat API unreachable: {exc}") from exc
            else:
                await self.db.run(self._record, message, "custom", None, None, False)
                return SendReceipt(str(result.get("msgid", "")) or None)
        if self.config.fallback_template_id:
            return await self._send_template(message, self.config.fallback_template_id, "template")
        await self.db.run(self._record, message, "window_closed", None, closed, False)
        raise WindowClosed(f"window closed: {closed}; no fallback template configured")

    def _custom_send(self, message: OutboundMessage) -> dict:
        if message.buttons:
            menu = {
                "head_content": message.text,
                "list": [{"id": b.data, "content": b.label} for b in message.buttons],
                "tail_content": "",
            }
            return self.api.call(self.api.message.send_msg_menu, message.user_id, menu)
        return self.api.call(self.api.message.send_text, message.user_id, message.text)

    async def _send_template(
        self, message: OutboundMessage, template_id: str, route: str
    ) -> SendReceipt:
        if wait := await self.template_quota.take(message.purpose):
            raise RetryAfter(wait, "template message API quota of the day is used")
        data = message.extra.get("template_data") or {
            self.config.fallback_template_field: {"value": message.text}
        }
        url = message.extra.get("template_url") or self.config.fallback_template_url or None
        try:
            result = await asyncio.to_thread(
                self.api.call,
                self.api.message.send_template,
                message.user_id,
                template_id,
                data,
                url,
            )
        except WeChatClientException as exc:
            raise await self._fail(message, exc, route) from exc
        except requests.RequestException as exc:
            raise TransientError(f"WeChat API unreachable: {exc}") from exc
        await self.db.run(self._record, message, route, None, f"template {template_id}", False)
        return SendReceipt(str(result.get("msgid", "")) or None)

    async def _fail(
        self, message: OutboundMessage, exc: WeChatClientException, route: str
    ) -> Exception:
        """Record a refused send and turn WeChat's errcode into the delivery error it means."""
        code = errcode_of(exc)
        detail = f"WeChat errcode {code}: {exc.errmsg}"
        if code == 45009:
            local = self.clock.now().astimezone(BEIJING)
            midnight = (local + timedelta(days=1)).replace(
                hour=0, minute=0, second=5, microsecond=0
            )
            await self.db.run(self._record, message, "quota", code, detail, False)
            return RetryAfter((midnight - local).total_seconds(), f"daily API quota used: {detail}")
        if code == 45011:
            return RetryAfter(60, f"API frequency limit: {detail}")
        if code is None or code in (-1, 45033):
            return TransientError(detail)
        await self.db.run(self._record, message, "error", code, f"{route}: {detail}", False)
        if code in UNREACHABLE_ERRORS:
            return RecipientUnreachable(detail)
        return PermanentError(detail)

    def _take_slot(self, openid: str) -> str | None:
        with self.db.transaction() as session:
            return claim_window_slot(session, CHANNEL, openid, self.clock.now())

    def _refund(self, openid: str) -> None:
        with self.db.transaction() as session:
            refund_window_slot(session, CHANNEL, openid)

    def _record(
        self,
        message: OutboundMessage,
        route: str,
        code: int | None,
        detail: str | None,
        close: bool,
    ) -> None:
        with self.db.transaction() as session:
            if close:
                close_window(session, CHANNEL, message.user_id)
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
