"""Siyu tags mirrored to WeCom corp tags (``[wecom] corp_tags``) with ``mark_tag``.

After a contact is added, and every ``tag_sync_interval_seconds`` for every change of a
contact's Siyu tags, whatever made it (:meth:`CorpTagSync.sync`; never inside the router's
transaction). Each process reconciles; a repeated ``mark_tag`` is harmless.
"""

from __future__ import annotations

import asyncio
import logging

import requests
from sqlalchemy import delete, or_, select
from wechatpy.exceptions import WeChatClientException

from bot.adapters.base import AdapterHost
from bot.adapters.wechat.api import WecomApi
from bot.adapters.wechat.wecom_callbacks import CHANNEL
from bot.app.config import WecomConfig
from storage.db import insert_ignore
from storage.models import CustomerTag, Identity, Tag
from storage.wechat import WecomContact, WecomTagSync

__all__ = ["CorpTagSync"]

log = logging.getLogger(__name__)

Diff = dict[tuple[str, str], tuple[list[str], list[str]]]


class CorpTagSync:
    """Reconciles WeCom corp tags with Siyu tags for the mapped tags."""

    def __init__(self, config: WecomConfig, runtime: AdapterHost, api: WecomApi) -> None:
        self.config, self.api = config, api
        self.db, self.clock = runtime.db, runtime.clock
        #: Siyu tag → WeCom corp tag id
        self.corp_tags = dict(
            (tag.strip(), corp.strip())
            for tag, _, corp in (t.partition("=") for t in config.corp_tags)
        )
        self._lock = asyncio.Lock()

    async def run_forever(self) -> None:
        """Reconcile every ``tag_sync_interval_seconds`` until cancelled."""
        while True:
            await asyncio.sleep(self.config.tag_sync_interval_seconds)
            try:
                await self.sync()
            except Exception:
                log.exception("wecom: corp tag sync failed")

    async def sync(self, ext: str | None = None) -> int:
        """Make WeCom corp tags follow Siyu tags (``corp_tags``) for one or every contact.

        The wanted state (active contacts × their unexpired mapped Siyu tags) is compared
        with ``wecom_tag_syncs`` (what was marked), whatever changed the Siyu tags — a
        handler, a manager, an import, the nightly rules, expiry. Each staff member ×
        contact that differs gets one ``mark_tag`` with ``add_tag``/``remove_tag``, outside
        any transaction; the record follows the API's answer. Returns the changes made.
        """
        if not self.corp_tags:
            return 0
        async with self._lock:  # one reconcile at a time in this process
            return await self._sync(ext)

    async def _sync(self, ext: str | None) -> int:
        todo = await self.db.run(self._diff, ext)
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
            await self.db.run(self._marked, contact, staff, add, remove)
            changed += len(add) + len(remove)
        return changed

    def _diff(self, ext: str | None) -> Diff:
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
        out: Diff = {}
        for e, s, tag in wanted - done:
            out.setdefault((e, s), ([], []))[0].append(tag)
        for e, s, tag in done - wanted:
            if (e, s) in contacts:  # a removed contact cannot be untagged any more
                out.setdefault((e, s), ([], []))[1].append(tag)
        return {k: (sorted(a), sorted(r)) for k, (a, r) in out.items()}

    def _marked(self, ext: str, staff: str, add: list[str], remove: list[str]) -> None:
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
