"""WeCom external contacts: who is whose contact, welcome codes, unionids.

Before the handlers see a contact or group-chat callback, :meth:`WecomContacts.record`
writes the channel's facts (idempotent, so a retried callback redoes them): the customer
and identity, the ``wecom_contacts`` row with its ``State`` (source attribution) and its
``WelcomeCode`` (kept ``WELCOME_SECONDS`` for the welcome message), a removal (the
identity becomes unreachable when no staff member has the contact any more), and a
customer group's creation or dismissal. After a new contact, its unionid links it to the
same person on the Official Account (``fetch_unionid``).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

import requests
from sqlalchemy import select, update
from wechatpy.exceptions import WeChatClientException

from bot.adapters.base import AdapterHost
from bot.adapters.wechat.api import WecomApi
from bot.adapters.wechat.common import record_source
from bot.adapters.wechat.wecom_callbacks import CHANNEL
from bot.app.config import GeneralConfig, WecomConfig
from bot.core.events import Event
from storage import repos
from storage.db import rowcount
from storage.identity_links import link_unionid, unionid_of
from storage.wechat import WecomContact

__all__ = ["WELCOME_SECONDS", "WecomContacts"]

log = logging.getLogger(__name__)

#: How long WeCom accepts a contact's welcome code.
WELCOME_SECONDS = 20


class WecomContacts:
    """The contact bookkeeping of the WeCom adapter (its storage work runs in the
    database's thread; :meth:`unionid_after_added` is a coroutine)."""

    def __init__(
        self, config: WecomConfig, general: GeneralConfig, runtime: AdapterHost, api: WecomApi
    ) -> None:
        self.config, self.general, self.api = config, general, api
        self.db, self.clock = runtime.db, runtime.clock

    def record(self, event: Event | None, f: dict) -> None:
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
                locale=self.general.locale,
                timezone=self.general.timezone,
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

    async def unionid_after_added(self, ext: str) -> None:
        """Link a new contact to the same person elsewhere by unionid (``fetch_unionid``)."""
        if not self.config.fetch_unionid:
            return
        if await self.db.run(self._known_unionid, ext):
            return
        try:
            info = await asyncio.to_thread(self.api.call, self.api.external_contact.get, ext)
            unionid = (info.get("external_contact") or {}).get("unionid")
        except (WeChatClientException, requests.RequestException) as exc:
            log.warning("wecom: externalcontact/get for %s failed: %s", ext, exc)
            unionid = None
        if unionid:
            await self.db.run(self._link, ext, unionid)

    def _known_unionid(self, ext: str) -> str | None:
        with self.db.sessions() as session:
            return unionid_of(session, CHANNEL, ext)

    def _link(self, ext: str, unionid: str) -> None:
        with self.db.transaction() as session:
            link_unionid(session, CHANNEL, ext, unionid, self.clock.now())

    def take_welcome_code(self, ext: str) -> tuple[str | None, str | None]:
        """Use the contact's welcome code once (if still valid); also the staff member to
        send from (None: nobody has the contact any more)."""
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
                    if rowcount(taken) == 1:
                        return code, c.staff_userid
            return None, contacts[0].staff_userid
