"""The WeCom (企业微信) channel: app messages from staff, customer contact and customer groups.

Inbound, ``GET/POST /wecom/callback`` (always encrypted): URL verification decrypts
``echostr`` after the ``msg_signature`` check; callbacks are checked like the Official
Account's. wechatpy 1.8.18 parses ``change_external_contact`` / ``change_external_chat``
as ``UnknownMessage``, so this adapter reads the decrypted XML itself:

* app text messages → message/command events of the staff member (chat ``app:<userid>``);
* ``add_external_contact`` / ``add_half_external_contact`` → ``contact_added`` (``State`` is
  the source attribution; the ``WelcomeCode`` is kept 20 s for the welcome message);
  ``del_external_contact`` / ``del_follow_user`` → ``contact_removed``;
* ``change_external_chat``: ``create`` / ``dismiss`` update the group; ``update`` with
  ``add_member`` / ``del_member`` → one ``join`` / ``leave`` per member.

Outbound: to staff (``app:<userid>``) an app message; to an external contact the welcome
message while its code is valid, else a customer mass-send task (``add_msg_template``)
that the staff member must confirm — recorded as ``pending_confirmation`` and polled with
``get_group_msg_result`` (its outbox row stays ``awaiting_confirm`` until the outcome is
known, then becomes ``sent`` / ``failed`` / ``unreachable`` with the reason); to a
customer group a group mass-send task (``chat_id_list``) from its owner
(``groupchat/get``). Marketing messages (campaigns, follow-ups) are batched into one task
per staff member and text (bot/adapters/wechat/wecom_mass.py).
Siyu tags listed in ``corp_tags`` are mirrored to WeCom corp tags with ``mark_tag``: after
a contact is added, and every ``tag_sync_interval_seconds`` for every change of a contact's
Siyu tags, whatever made it (:meth:`WecomAdapter.sync_corp_tags`; never inside the router's
transaction). Each process reconciles; a repeated ``mark_tag`` is harmless.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import requests
from sqlalchemy import delete, or_, select, update
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from wechatpy.exceptions import WeChatClientException

from bot.adapters.base import (
    AWAITING_CONFIRMATION,
    OutboundMessage,
    PermanentError,
    RecipientUnreachable,
    RetryAfter,
    SendReceipt,
    TransientError,
)
from bot.adapters.wechat import wecom_mass as wecom_batch
from bot.adapters.wechat.api import TokenStore, WecomApi, errcode_of
from bot.adapters.wechat.callback import CallbackCrypto, CallbackRejected, parse_xml, read_body
from bot.adapters.wechat.common import Background, handle_within, record_delivery, record_source
from bot.app.config import WecomConfig
from bot.core.events import Actor, ChatType, ConversationRef, Event, EventKind, parse_command
from bot.core.routing import DispatchResult
from storage import repos
from storage.db import insert_ignore
from storage.identity_links import link_unionid, unionid_of
from storage.models import CustomerTag, Identity, Tag
from storage.wechat import WecomContact, WecomMassTask, WecomTagSync

__all__ = ["WecomAdapter"]

log = logging.getLogger(__name__)

CHANNEL = "wecom"
APP_PREFIX = "app:"
WELCOME_SECONDS = 20
MASS_STATUS = {1: "sent", 2: "not_friend", 3: "limited"}
UNREACHABLE_ERRORS = {40003, 60111, 81013, 84061, 40096}


def _items(value: object) -> list[str]:
    """Member ids from ``<MemChangeList><Item>..</Item></MemChangeList>``."""
    if isinstance(value, dict):
        value = value.get("Item", [])
    if isinstance(value, str):
        return [value] if value else []
    if not isinstance(value, list | tuple):
        return []
    return [str(v) for v in value if v]


class WecomAdapter:
    """The WeCom channel (see the module docstring)."""

    channel = CHANNEL

    def __init__(self, config: WecomConfig, runtime, api: WecomApi | None = None) -> None:
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
        self.api = api or WecomApi(
            config.corp_id,
            config.secret,
            self.tokens,
            config.api_base_url,
            config.http_timeout_seconds,
        )
        self.corp_tags = dict(
            (tag.strip(), corp.strip())
            for tag, _, corp in (t.partition("=") for t in config.corp_tags)
        )
        self.background = Background()
        self._poller: asyncio.Task | None = None
        self._tag_sync: asyncio.Task | None = None
        self._flush: asyncio.Task | None = None
        self._tag_lock = asyncio.Lock()

    def routes(self) -> list[Route]:
        return [Route("/wecom/callback", self.callback, methods=["GET", "POST"])]

    async def start(self) -> None:
        if not self.crypto.encrypted:
            log.warning("wecom: no encoding_aes_key configured; every callback will be refused")
        self._poller = asyncio.create_task(self._poll_forever(), name="wecom-mass-poller")
        self._schedule_flush()  # batches claimed or queued before a restart
        if self.corp_tags:
            self._tag_sync = asyncio.create_task(
                self._sync_tags_forever(), name="wecom-corp-tag-sync"
            )
        log.info("wecom: corp %s ready (agent %s)", self.config.corp_id, self.config.agent_id)

    async def stop(self) -> None:
        for task in (self._poller, self._tag_sync, self._flush):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self.background.drain(timeout=5.0)

    # -- inbound -------------------------------------------------------------------------

    async def callback(self, request: Request) -> Response:
        try:
            q = request.query_params
            timestamp, nonce = q.get("timestamp", ""), q.get("nonce", "")
            if request.method == "GET":
                self.crypto.check_timestamp(timestamp)
                echo = self.crypto.decrypt(
                    q.get("echostr", ""), q.get("msg_signature", ""), timestamp, nonce
                )
                return PlainTextResponse(echo)
            body = await read_body(request, self.config.max_body_bytes)
            self.crypto.check_timestamp(timestamp)
            outer = parse_xml(body)
            inner = self.crypto.decrypt(
                str(outer.get("Encrypt", "")), q.get("msg_signature", ""), timestamp, nonce
            )
            fields = parse_xml(inner)
        except CallbackRejected as exc:
            log.warning(
                "wecom callback refused (%d) from %s: %s",
                exc.status,
                request.client.host if request.client else "?",
                exc.reason,
            )
            return PlainTextResponse(exc.reason, status_code=exc.status)
        events = self.to_events(fields)
        if events:
            await handle_within(
                self.background,
                lambda: self._process(events, fields),
                self.config.reply_budget_seconds,
                f"wecom:{events[0].dedupe_key}",
            )
        else:
            await self.db.run(self._before_dispatch, None, fields)
        return PlainTextResponse("success")

    def to_events(self, f: dict) -> list[Event]:
        """The normalized events of one callback (a member change may name several people)."""
        sender = str(f.get("FromUserName", ""))
        try:
            created = datetime.fromtimestamp(int(f.get("CreateTime", 0) or 0), UTC)
        except (ValueError, OverflowError):
            created = self.clock.now()
        raw = dict(f)
        msg_type = str(f.get("MsgType", "")).lower()
        if msg_type == "text":
            text = str(f.get("Content", ""))
            ref = ConversationRef(CHANNEL, APP_PREFIX + sender, sender)
            common: dict[str, Any] = {
                "ref": ref,
                "platform_id": str(f.get("MsgId", "")),
                "actor": Actor(sender),
                "occurred_at": created,
                "raw": raw,
                "text": text,
            }
            parsed = parse_command(text)
            if parsed:
                return [Event(kind=EventKind.COMMAND, command=parsed[0], args=parsed[1], **common)]
            return [Event(kind=EventKind.MESSAGE, **common)]
        if msg_type != "event":
            return []
        name = str(f.get("Event", ""))
        change = str(f.get("ChangeType", ""))
        base = f"{sender}:{f.get('CreateTime', '')}:{name}:{change}"
        if name == "change_external_contact":
            ext = str(f.get("ExternalUserID", ""))
            if not ext:
                return []
            common = {
                "ref": ConversationRef(CHANNEL, ext, ext),
                "actor": Actor(ext),
                "occurred_at": created,
                "raw": raw,
                "platform_id": f"{base}:{ext}:{f.get('UserID', '')}",
            }
            if change in ("add_external_contact", "add_half_external_contact"):
                return [
                    Event(
                        kind=EventKind.CONTACT_ADDED,
                        button_data=str(f.get("State", "")) or None,
                        **common,
                    )
                ]
            if change in ("del_external_contact", "del_follow_user"):
                return [Event(kind=EventKind.CONTACT_REMOVED, **common)]
            return []
        if name == "change_external_chat" and change == "update":
            chat = str(f.get("ChatId", ""))
            detail = str(f.get("UpdateDetail", ""))
            kind = {"add_member": EventKind.JOIN, "del_member": EventKind.LEAVE}.get(detail)
            if kind is None or not chat:
                return []
            return [
                Event(
                    kind=kind,
                    ref=ConversationRef(CHANNEL, chat, member),
                    actor=Actor(member),
                    chat_type=ChatType.GROUP,
                    occurred_at=created,
                    raw=raw,
                    platform_id=f"{base}:{chat}:{member}",
                )
                for member in _items(f.get("MemChangeList"))
            ]
        return []

    async def _process(self, events: list[Event], fields: dict) -> list[DispatchResult]:
        await self.db.run(self._before_dispatch, events[0], fields)
        results = [await self.runtime.handle(event) for event in events]
        first = events[0]
        if not results[0].duplicate and first.kind is EventKind.CONTACT_ADDED:
            ext = first.ref.user_id
            self.background.spawn(self._after_contact(ext), f"wecom:contact:{ext}")
        return results

    def _before_dispatch(self, event: Event | None, f: dict) -> None:
        """Channel facts recorded before handlers run (idempotent: a retry redoes them)."""
        now = self.clock.now()
        change = str(f.get("ChangeType", ""))
        with self.db.transaction() as session:
            if f.get("Event") == "change_external_chat":
                chat = str(f.get("ChatId", ""))
                if chat:
                    group = repos.ensure_group(session, CHANNEL, chat, "")
                    group.active = change != "dismiss"
                return
            if event is None or f.get("Event") != "change_external_contact":
                return
            ext, staff = event.ref.user_id, str(f.get("UserID", ""))
            customer, identity = repos.upsert_customer(
                session,
                CHANNEL,
                ext,
                display_name="",
                locale=self.runtime.config.general.locale,
                timezone=self.runtime.config.general.timezone,
                now=now,
            )
            contact = session.get(WecomContact, (ext, staff))
            if change in ("add_external_contact", "add_half_external_contact"):
                code = str(f.get("WelcomeCode", "")) or None
                if contact is None:
                    session.add(
                        WecomContact(
                            external_userid=ext,
                            staff_userid=staff,
                            state=str(f.get("State", "")) or None,
                            welcome_code=code,
                            added_at=now,
                            welcome_expires_at=now + timedelta(seconds=WELCOME_SECONDS)
                            if code
                            else None,
                        )
                    )
                elif contact.removed_at is not None or contact.added_at < event.occurred_at:
                    contact.removed_at = contact.removed_by = None
                    contact.added_at = now
                    contact.state = str(f.get("State", "")) or contact.state
                    if code:
                        contact.welcome_code = code
                        contact.welcome_expires_at = now + timedelta(seconds=WELCOME_SECONDS)
                identity.unreachable, identity.unreachable_reason = False, None
                if f.get("State"):
                    record_source(
                        session,
                        event_key=event.dedupe_key,
                        customer_id=customer.id,
                        channel=CHANNEL,
                        external_id=ext,
                        source=str(f["State"]),
                        kind="contact_state",
                        now=now,
                    )
            elif change in ("del_external_contact", "del_follow_user") and contact is not None:
                contact.removed_at = contact.removed_at or now
                contact.removed_by = "staff" if change == "del_external_contact" else "customer"
                session.flush()
                remaining = session.scalar(
                    select(WecomContact.staff_userid)
                    .where(WecomContact.external_userid == ext, WecomContact.removed_at.is_(None))
                    .limit(1)
                )
                if remaining is None:
                    repos.mark_unreachable(session, CHANNEL, ext, f"{change} ({staff})")

    async def _after_contact(self, ext: str) -> None:
        if self.config.fetch_unionid and not await self.db.run(self._known_unionid, ext):
            try:
                info = await asyncio.to_thread(self.api.call, self.api.external_contact.get, ext)
                unionid = (info.get("external_contact") or {}).get("unionid")
            except (WeChatClientException, requests.RequestException) as exc:
                log.warning("wecom: externalcontact/get for %s failed: %s", ext, exc)
                unionid = None
            if unionid:
                await self.db.run(self._link, ext, unionid)
        await self.sync_corp_tags(ext)

    def _known_unionid(self, ext: str) -> str | None:
        with self.db.sessions() as session:
            return unionid_of(session, CHANNEL, ext)

    def _link(self, ext: str, unionid: str) -> None:
        with self.db.transaction() as session:
            link_unionid(session, CHANNEL, ext, unionid, self.clock.now())

    # -- corp tags -----------------------------------------------------------------------

    async def _sync_tags_forever(self) -> None:
        while True:
            await asyncio.sleep(self.config.tag_sync_interval_seconds)
            try:
                await self.sync_corp_tags()
            except Exception:
                log.exception("wecom: corp tag sync failed")

    async def sync_corp_tags(self, ext: str | None = None) -> int:
        """Make WeCom corp tags follow Siyu tags (``corp_tags``) for one or every contact.

        The wanted state (active contacts × their unexpired mapped Siyu tags) is compared
        with ``wecom_tag_syncs`` (what was marked), whatever changed the Siyu tags — a
        handler, a manager, an import, the nightly rules, expiry. Each staff member ×
        contact that differs gets one ``mark_tag`` with ``add_tag``/``remove_tag``, outside
        any transaction; the record follows the API's answer. Returns the changes made.
        """
        if not self.corp_tags:
            return 0
        async with self._tag_lock:  # one reconcile at a time in this process
            return await self._sync_corp_tags(ext)

    async def _sync_corp_tags(self, ext: str | None) -> int:
        todo = await self.db.run(self._tag_diff, ext)
        changed = 0
        for (contact, staff), (add, remove) in sorted(todo.items()):
            try:
                await asyncio.to_thread(
                    self.api.call,
                    self.api.external_contact.mark_tag,
                    staff,
                    contact,
                    add,
                    remove,
                )
            except (WeChatClientException, requests.RequestException) as exc:
                log.warning("wecom: mark_tag +%s -%s for %s failed: %s", add, remove, contact, exc)
                continue
            await self.db.run(self._tags_marked, contact, staff, add, remove)
            changed += len(add) + len(remove)
        return changed

    def _tag_diff(self, ext: str | None) -> dict[tuple[str, str], tuple[list[str], list[str]]]:
        now = self.clock.now()
        with self.db.sessions() as session:
            active = select(WecomContact.external_userid, WecomContact.staff_userid).where(
                WecomContact.removed_at.is_(None)
            )
            wanted_q = (
                select(Identity.external_id, WecomContact.staff_userid, Tag.name)
                .join(CustomerTag, CustomerTag.customer_id == Identity.customer_id)
                .join(Tag, Tag.id == CustomerTag.tag_id)
                .join(
                    WecomContact,
                    (WecomContact.external_userid == Identity.external_id)
                    & WecomContact.removed_at.is_(None),
                )
                .where(
                    Identity.channel == CHANNEL,
                    Tag.name.in_(list(self.corp_tags)),
                    or_(CustomerTag.expires_at.is_(None), CustomerTag.expires_at > now),
                )
            )
            done_q = select(
                WecomTagSync.external_userid, WecomTagSync.staff_userid, WecomTagSync.corp_tag_id
            ).where(WecomTagSync.corp_tag_id.in_(set(self.corp_tags.values())))
            if ext is not None:
                active = active.where(WecomContact.external_userid == ext)
                wanted_q = wanted_q.where(Identity.external_id == ext)
                done_q = done_q.where(WecomTagSync.external_userid == ext)
            contacts = {tuple(r) for r in session.execute(active)}
            wanted = {(e, s, self.corp_tags[n]) for e, s, n in session.execute(wanted_q)}
            done = {tuple(r) for r in session.execute(done_q)}
        out: dict[tuple[str, str], tuple[list[str], list[str]]] = {}
        for e, s, tag in wanted - done:
            out.setdefault((e, s), ([], []))[0].append(tag)
        for e, s, tag in done - wanted:
            if (e, s) in contacts:  # a removed contact cannot be untagged any more
                out.setdefault((e, s), ([], []))[1].append(tag)
        return {k: (sorted(a), sorted(r)) for k, (a, r) in out.items()}

    def _tags_marked(self, ext: str, staff: str, add: list[str], remove: list[str]) -> None:
        with self.db.transaction() as session:
            for tag_id in add:
                insert_ignore(
                    session,
                    WecomTagSync,
                    {
                        "external_userid": ext,
                        "staff_userid": staff,
                        "corp_tag_id": tag_id,
                        "at": self.clock.now(),
                    },
                    ["external_userid", "staff_userid", "corp_tag_id"],
                )
            if remove:
                session.execute(
                    delete(WecomTagSync).where(
                        WecomTagSync.external_userid == ext,
                        WecomTagSync.staff_userid == staff,
                        WecomTagSync.corp_tag_id.in_(remove),
                    )
                )

    # -- outbound ------------------------------------------------------------------------

    async def send(self, message: OutboundMessage) -> SendReceipt:
        if not message.text.strip():
            raise PermanentError("empty message")
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
        except WeChatClientException as exc:
            code = errcode_of(exc)
            detail = f"WeCom errcode {code}: {exc.errmsg}"
            if code in (45009, 45033, 45011, -1) or code is None:
                raise RetryAfter(60, detail) from exc
            await self.db.run(self._record, message, "error", code, detail)
            if code in UNREACHABLE_ERRORS:
                raise RecipientUnreachable(detail) from exc
            raise PermanentError(detail) from exc
        except requests.RequestException as exc:
            raise TransientError(f"WeCom API unreachable: {exc}") from exc

    async def _send_to_contact(self, message: OutboundMessage) -> SendReceipt:
        ext = message.user_id
        code, staff = await self.db.run(self._take_welcome_code, ext)
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
        if await self.db.run(self._batched, message, staff, "single"):
            self._schedule_flush()
            return SendReceipt(None, status=AWAITING_CONFIRMATION)
        template = {
            "chat_type": "single",
            "external_userid": [ext],
            "sender": staff,
            "text": {"content": message.text},
        }
        return await self._mass_task(message, staff, "single", template)

    async def _send_to_group(self, message: OutboundMessage) -> SendReceipt:
        info = await asyncio.to_thread(
            self.api.call, self.api.external_contact_group_chat.get, message.chat_id
        )
        owner = (info.get("group_chat") or {}).get("owner")
        if not owner:
            raise PermanentError(f"customer group {message.chat_id} has no owner to send from")
        if await self.db.run(self._batched, message, owner, "group"):
            self._schedule_flush()
            return SendReceipt(None, status=AWAITING_CONFIRMATION)
        template = {
            "chat_type": "group",
            "sender": owner,
            "chat_id_list": [message.chat_id],
            "text": {"content": message.text},
        }
        return await self._mass_task(message, owner, "group", template)

    # -- batched mass-sends (bot/adapters/wechat/wecom_mass.py) ---------------------------------

    def _batched(self, message: OutboundMessage, sender: str, chat_type: str) -> bool:
        """Queue a marketing message for its sender's batch; False for other messages."""
        with self.db.transaction() as session:
            if not wecom_batch.is_marketing(session, message.outbox_id):
                return False
            wecom_batch.queue(session, message, sender, chat_type, self.clock.now())
        return True

    def _schedule_flush(self) -> None:
        if self._flush is None or self._flush.done():
            self._flush = asyncio.get_running_loop().create_task(
                self._flush_later(), name="wecom-mass-batch"
            )

    async def _flush_later(self) -> None:
        await asyncio.sleep(self.config.mass_batch_seconds)
        try:
            await self.flush_mass_batches()
        except Exception:
            log.exception("wecom: flushing mass-send batches failed")

    async def flush_mass_batches(self) -> list[str]:
        """Turn every waiting batch into one add_msg_template task; returns the msgids."""
        batches = await self.db.run(self._claim_batches)
        msgids = []
        for batch in batches:
            try:
                result = await asyncio.to_thread(
                    self.api.call, self.api.external_contact.add_msg_template, batch.template()
                )
            except WeChatClientException as exc:
                code = errcode_of(exc)
                if code in (45009, 45033, 45011, -1) or code is None:
                    await self.db.run(self._batch_write, wecom_batch.released, batch)
                else:
                    detail = f"WeCom errcode {code}: {exc.errmsg}"
                    log.warning("wecom: mass-send batch of %s refused: %s", batch.sender, detail)
                    await self.db.run(
                        self._batch_write, wecom_batch.failed, batch, code, detail, self.clock.now()
                    )
                continue
            except requests.RequestException as exc:
                log.warning("wecom: mass-send batch of %s not sent yet: %s", batch.sender, exc)
                await self.db.run(self._batch_write, wecom_batch.released, batch)
                continue
            msgid = str(result.get("msgid", ""))
            await self.db.run(
                self._batch_write, wecom_batch.sent, batch, msgid, result, self.clock.now()
            )
            log.info(
                "wecom: one mass-send task %s from %s for %d message(s)",
                msgid,
                batch.sender,
                len(batch.ids),
            )
            msgids.append(msgid)
        return msgids

    def _claim_batches(self) -> list[wecom_batch.Batch]:
        with self.db.transaction() as session:
            return wecom_batch.claim(session, self.clock.now())

    def _batch_write(self, fn, *args) -> None:
        with self.db.transaction() as session:
            fn(session, *args)

    async def _mass_task(
        self, message: OutboundMessage, sender: str, chat_type: str, template: dict
    ) -> SendReceipt:
        existing = await self.db.run(self._task_of, message.idempotency_key)
        if existing:  # created before a crash: do not create it twice
            return SendReceipt(f"mass:{existing}", status=AWAITING_CONFIRMATION)
        result = await asyncio.to_thread(
            self.api.call, self.api.external_contact.add_msg_template, template
        )
        msgid = str(result.get("msgid", ""))
        if result.get("fail_list") and not msgid:
            raise RecipientUnreachable(f"WeCom refused the mass-send for {result['fail_list']}")
        await self.db.run(self._save_task, message, msgid, sender, chat_type, template)
        return SendReceipt(f"mass:{msgid}", status=AWAITING_CONFIRMATION)

    def _take_welcome_code(self, ext: str) -> tuple[str | None, str | None]:
        """Use the contact's welcome code once (if still valid); also the staff member to send from."""
        now = self.clock.now()
        with self.db.transaction() as session:
            contacts = list(
                session.scalars(
                    select(WecomContact)
                    .where(WecomContact.external_userid == ext, WecomContact.removed_at.is_(None))
                    .order_by(WecomContact.added_at.desc())
                )
            )
            if not contacts:
                return None, None
            for c in contacts:
                code = c.welcome_code
                if code and c.welcome_expires_at and c.welcome_expires_at > now:
                    taken = session.execute(
                        update(WecomContact)
                        .where(
                            WecomContact.external_userid == ext,
                            WecomContact.staff_userid == c.staff_userid,
                            WecomContact.welcome_code == code,
                        )
                        .values(welcome_code=None)
                    )
                    if taken.rowcount == 1:
                        return code, c.staff_userid
            return None, contacts[0].staff_userid

    def _task_of(self, key: str) -> str | None:
        with self.db.sessions() as session:
            return session.scalar(
                select(WecomMassTask.msgid).where(WecomMassTask.outbox_key == key)
            )

    def _save_task(
        self, message: OutboundMessage, msgid: str, sender: str, chat_type: str, template: dict
    ) -> None:
        now = self.clock.now()
        with self.db.transaction() as session:
            session.add(
                WecomMassTask(
                    outbox_key=message.idempotency_key,
                    msgid=msgid or None,
                    sender=sender,
                    chat_type=chat_type,
                    targets={
                        "external_userid": template.get("external_userid", []),
                        "chat_id": message.chat_id if chat_type == "group" else None,
                    },
                    text=message.text,
                    status="pending_confirmation",
                    result={},
                    created_at=now,
                )
            )
            record_delivery(
                session,
                outbox_id=message.outbox_id,
                channel=CHANNEL,
                user_id=message.user_id,
                route="mass_task",
                detail=f"msgid {msgid}; waiting for {sender} to confirm",
                now=now,
            )

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

    # -- mass-send results -----------------------------------------------------------------

    async def _poll_forever(self) -> None:
        while True:
            await asyncio.sleep(self.config.mass_poll_interval_seconds)
            try:
                await self.flush_mass_batches()
                await self.poll_mass_tasks()
            except Exception:
                log.exception("wecom: polling mass-send tasks failed")

    async def poll_mass_tasks(self) -> dict[str, str]:
        """Ask WeCom about every task still waiting for confirmation; returns msgid → status."""
        msgids = await self.db.run(self._pending_tasks)
        out: dict[str, str] = {}
        for msgid in msgids:
            try:
                result = await asyncio.to_thread(
                    self.api.call, self.api.external_contact.get_group_msg_result, msgid
                )
            except (WeChatClientException, requests.RequestException) as exc:
                log.warning("wecom: get_group_msg_result %s failed: %s", msgid, exc)
                continue
            statuses = [int(d.get("status", 0)) for d in result.get("detail_list", [])]
            if not statuses or all(s == 0 for s in statuses):
                status = "pending_confirmation"
            elif all(s == 1 for s in statuses):
                status = "sent"
            elif any(s == 1 for s in statuses):
                status = "partly_sent"
            else:
                status = MASS_STATUS.get(next(s for s in statuses if s), "failed")
            await self.db.run(self._task_result, msgid, status, result)
            out[msgid] = status
        return out

    def _pending_tasks(self) -> list[str]:
        with self.db.sessions() as session:
            return list(
                session.scalars(
                    select(WecomMassTask.msgid).where(
                        WecomMassTask.status == "pending_confirmation",
                        WecomMassTask.msgid.is_not(None),
                    )
                )
            )

    def _task_result(self, msgid: str, status: str, result: dict) -> None:
        with self.db.transaction() as session:
            task = session.scalars(select(WecomMassTask).where(WecomMassTask.msgid == msgid)).one()
            task.status, task.result, task.checked_at = status, result, self.clock.now()
            members = [m for m in (task.targets or {}).get("members", []) if m != task.id]
            if members:  # the messages batched into this task share its outcome
                session.execute(
                    update(WecomMassTask)
                    .where(WecomMassTask.id.in_(members))
                    .values(status=status, checked_at=self.clock.now())
                )
            if status != "pending_confirmation":
                per_target = {
                    str(d.get("external_userid") or d.get("chat_id") or ""): int(d.get("status", 0))
                    for d in result.get("detail_list", [])
                }
                rows = [task]
                if members:
                    rows += session.scalars(
                        select(WecomMassTask).where(WecomMassTask.id.in_(members))
                    )
                wecom_batch.settle_outbox(
                    session,
                    {
                        row.outbox_key: wecom_batch.outcome(
                            status, per_target.get(wecom_batch.target_of(row)), task.sender
                        )
                        for row in rows
                    },
                    msgid,
                    self.clock.now(),
                )
            if status == "not_friend":
                for ext in (task.targets or {}).get("external_userid", []):
                    session.execute(
                        update(Identity)
                        .where(Identity.channel == CHANNEL, Identity.external_id == ext)
                        .values(
                            unreachable=True,
                            unreachable_reason="not a contact any more (mass-send)",
                        )
                    )
