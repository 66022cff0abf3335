"""WeCom mass-send tasks: created, batched, and polled until staff confirm them.

To an external contact or a customer group (without a welcome code) WeCom only takes a
mass-send task (``add_msg_template``) that the staff member must confirm. A task is
recorded as ``pending_confirmation`` and polled with ``get_group_msg_result``; its outbox
row stays ``awaiting_confirm`` until the outcome is known, then becomes ``sent`` /
``failed`` / ``unreachable`` with the reason. Marketing messages (campaigns, follow-ups)
are batched into one task per staff member and text (bot/adapters/wechat/wecom_mass.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import requests
from sqlalchemy import select, update
from wechatpy.exceptions import WeChatClientException

from bot.adapters.base import (
    AWAITING_CONFIRMATION,
    AdapterHost,
    OutboundMessage,
    RecipientUnreachable,
    SendReceipt,
)
from bot.adapters.wechat import wecom_mass as wecom_batch
from bot.adapters.wechat.api import WecomApi, errcode_of
from bot.adapters.wechat.common import record_delivery
from bot.adapters.wechat.wecom_callbacks import CHANNEL
from bot.app.config import WecomConfig
from storage.models import Identity
from storage.wechat import WecomMassTask

__all__ = ["MASS_STATUS", "RETRY_LATER_ERRORS", "WecomMassSends"]

log = logging.getLogger(__name__)

#: get_group_msg_result's per-target status → the task status it stands for
MASS_STATUS = {1: "sent", 2: "not_friend", 3: "limited"}
#: errcodes that mean "try again later" (frequency limits, system busy)
RETRY_LATER_ERRORS = (45009, 45033, 45011, -1)


class WecomMassSends:
    """Creates, batches and polls the WeCom adapter's mass-send tasks."""

    def __init__(self, config: WecomConfig, runtime: AdapterHost, api: WecomApi) -> None:
        self.config, self.api = config, api
        self.db, self.clock = runtime.db, runtime.clock
        self._flush: asyncio.Task | None = None

    async def stop(self) -> None:
        """Cancel a batch flush waiting to run (its rows are claimed again on start)."""
        if self._flush is not None:
            self._flush.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flush

    # -- one task --------------------------------------------------------------------------

    async def send(
        self, message: OutboundMessage, sender: str, chat_type: str, template: dict
    ) -> SendReceipt:
        """Batch a marketing message, else create its own task (once per outbox row)."""
        if await self.db.run(self._batched, message, sender, chat_type):
            self.schedule_flush()
            return SendReceipt(None, status=AWAITING_CONFIRMATION)
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

    # -- batches ---------------------------------------------------------------------------

    def _batched(self, message: OutboundMessage, sender: str, chat_type: str) -> bool:
        """Queue a marketing message for its sender's batch; False for other messages."""
        with self.db.transaction() as session:
            if not wecom_batch.is_marketing(session, message.outbox_id):
                return False
            wecom_batch.queue(session, message, sender, chat_type, self.clock.now())
        return True

    def schedule_flush(self) -> None:
        """Flush the batches after ``mass_batch_seconds`` (once, however many wait)."""
        if self._flush is None or self._flush.done():
            self._flush = asyncio.get_running_loop().create_task(
                self._flush_later(), name="wecom-mass-batch"
            )

    async def _flush_later(self) -> None:
        await asyncio.sleep(self.config.mass_batch_seconds)
        try:
            await self.flush_batches()
        except Exception:
            log.exception("wecom: flushing mass-send batches failed")

    async def flush_batches(self) -> list[str]:
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
                if code in RETRY_LATER_ERRORS or code is None:
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

    # -- results ---------------------------------------------------------------------------

    async def run_forever(self) -> None:
        """Flush batches and poll results every ``mass_poll_interval_seconds``."""
        while True:
            await asyncio.sleep(self.config.mass_poll_interval_seconds)
            try:
                await self.flush_batches()
                await self.poll()
            except Exception:
                log.exception("wecom: polling mass-send tasks failed")

    async def poll(self) -> dict[str, str]:
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
