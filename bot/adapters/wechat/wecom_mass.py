"""Batching WeCom customer mass-sends: one ``add_msg_template`` task per staff member.

WeCom makes every customer mass-send a task the staff member confirms in their app, so a
campaign to 3 000 contacts must not become 3 000 tasks. Marketing messages (purposes in
:data:`bot.marketing.policy.MARKETING_PURPOSES`) to external contacts and customer groups are
therefore not sent one by one: the adapter's send path records each as a
:class:`~storage.wechat.WecomMassTask` row with status ``batching`` (the outbox row is then
``awaiting_confirm``, :data:`~bot.adapters.base.AWAITING_CONFIRMATION`, which the delivery
worker never claims), and the batcher (``WecomAdapter.flush_mass_batches``, a
few seconds later and at every mass-task poll) claims the waiting rows, groups them by
sender, chat type and text, and creates one task per group (up to WeCom's limit of
targets per task). The group's first row becomes the task (``msgid``, all targets, and its
``members``); the others are ``batched`` into it and follow its outcome.

The outcome is copied back to the outbox rows (:func:`settle_outbox`): a task WeCom
refuses fails them at once with its errcode; when ``get_group_msg_result`` reports the
staff member's send, each row becomes ``sent`` (status 1 for its target), ``unreachable``
(2: not a contact any more) or ``failed`` (3: the customer's mass-send limit, or not sent),
with the reason in ``last_error``. All of it is in the database, so a restart keeps it.

Claims are one ``UPDATE ... WHERE status = 'batching'`` that stamps a claim token, so two
processes never put one message in two tasks; a claim older than :data:`CLAIM_TIMEOUT`
(a crash between claim and answer) is taken again.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from bot.adapters.base import OutboundMessage
from bot.adapters.wechat.common import record_delivery
from bot.core.redaction import redact, redact_or_none
from bot.marketing.policy import MARKETING_PURPOSES
from bot.outbox.states import OutboxStatus, transitions
from storage.db import insert_ignore, rowcount
from storage.models import OutboxMessage
from storage.wechat import WecomMassTask

__all__ = [
    "Batch",
    "claim",
    "failed",
    "is_marketing",
    "outcome",
    "queue",
    "released",
    "sent",
    "settle_outbox",
    "target_of",
]

CHANNEL = "wecom"
CLAIM_TIMEOUT = timedelta(minutes=10)
#: WeCom's limits on targets in one add_msg_template task.
MAX_TARGETS = {"single": 10000, "group": 2000}
TARGET_FIELD = {"single": "external_userid", "group": "chat_id_list"}
#: Outbox statuses a mass-send outcome may still change (``sending``/``pending``: a worker
#: crashed after handing the message to WeCom, before it recorded that).
OPEN_OUTBOX = (OutboxStatus.AWAITING_CONFIRM, OutboxStatus.SENDING, OutboxStatus.PENDING)


def is_marketing(session: Session, outbox_id: int) -> bool:
    purpose = session.scalar(select(OutboxMessage.purpose).where(OutboxMessage.id == outbox_id))
    return purpose in MARKETING_PURPOSES


def queue(
    session: Session, message: OutboundMessage, sender: str, chat_type: str, now: datetime
) -> None:
    """Put one marketing message in the batch of ``sender`` (idempotent by outbox key)."""
    target = message.user_id if chat_type == "single" else message.chat_id
    insert_ignore(
        session,
        WecomMassTask,
        {
            "outbox_key": message.idempotency_key,
            "sender": sender,
            "chat_type": chat_type,
            "targets": {TARGET_FIELD[chat_type]: [target]},
            "text": message.text,
            "status": "batching",
            "result": {},
            "created_at": now,
        },
        ["outbox_key"],
    )
    record_delivery(
        session,
        outbox_id=message.outbox_id,
        channel=CHANNEL,
        user_id=message.user_id,
        route="mass_batch",
        detail=f"in the {chat_type} batch of {sender}",
        now=now,
    )


class Batch:
    """Claimed rows that go out as one task: same sender, chat type and text."""

    def __init__(self, sender: str, chat_type: str, text: str, rows: list[tuple[int, str]]):
        self.sender, self.chat_type, self.text = sender, chat_type, text
        self.ids = [i for i, _ in rows]
        self.targets = list(dict.fromkeys(t for _, t in rows))

    def template(self) -> dict:
        return {
            "chat_type": self.chat_type,
            "sender": self.sender,
            TARGET_FIELD[self.chat_type]: self.targets,
            "text": {"content": self.text},
        }


def claim(session: Session, now: datetime, limit: int = 50000) -> list[Batch]:
    """Claim every message waiting to be batched (and stale claims); group them."""
    token = "batch:" + uuid.uuid4().hex[:12]
    waiting = (
        select(WecomMassTask.id)
        .where(
            or_(
                WecomMassTask.status == "batching",
                WecomMassTask.status.like("batch:%")
                & (WecomMassTask.checked_at < now - CLAIM_TIMEOUT),
            )
        )
        .order_by(WecomMassTask.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    session.execute(
        update(WecomMassTask)
        .where(WecomMassTask.id.in_(waiting.scalar_subquery()))
        .values(status=token, checked_at=now)
        .execution_options(synchronize_session=False)
    )
    rows = session.execute(
        select(
            WecomMassTask.id,
            WecomMassTask.sender,
            WecomMassTask.chat_type,
            WecomMassTask.text,
            WecomMassTask.targets,
        )
        .where(WecomMassTask.status == token)
        .order_by(WecomMassTask.id)
    ).all()
    groups: dict[tuple[str, str, str], list[tuple[int, str]]] = defaultdict(list)
    for row_id, sender, chat_type, text, targets in rows:
        target = ((targets or {}).get(TARGET_FIELD.get(chat_type, "")) or [""])[0]
        groups[(sender, chat_type, text)].append((row_id, target))
    batches = []
    for (sender, chat_type, text), members in groups.items():
        size = MAX_TARGETS.get(chat_type, 1000)
        for start in range(0, len(members), size):
            batches.append(Batch(sender, chat_type, text, members[start : start + size]))
    return batches


def sent(session: Session, batch: Batch, msgid: str, result: dict, now: datetime) -> None:
    """WeCom created the task: the first row is the task, the others are batched into it."""
    lead, *others = batch.ids
    session.execute(
        update(WecomMassTask)
        .where(WecomMassTask.id == lead)
        .values(
            msgid=msgid or None,
            status="pending_confirmation",
            targets={
                TARGET_FIELD[batch.chat_type]: batch.targets,
                "members": batch.ids,
            },
            result={"fail_list": result.get("fail_list") or []},
            checked_at=now,
        )
    )
    if others:
        session.execute(
            update(WecomMassTask)
            .where(WecomMassTask.id.in_(others))
            .values(status="batched", result={"task_id": lead}, checked_at=now)
        )


def failed(session: Session, batch: Batch, errcode: int | None, detail: str, now: datetime) -> None:
    """WeCom refused the task for good: every row in it, and its outbox message, says why."""
    session.execute(
        update(WecomMassTask)
        .where(WecomMassTask.id.in_(batch.ids))
        .values(
            status="failed",
            result={"errcode": errcode, "detail": redact(detail)},
            checked_at=now,
        )
    )
    keys = session.scalars(select(WecomMassTask.outbox_key).where(WecomMassTask.id.in_(batch.ids)))
    settle_outbox(session, {k: ("failed", f"mass-send refused: {detail}") for k in keys}, None, now)


def target_of(task: WecomMassTask) -> str:
    """The one external contact or customer group a (member) task row is for."""
    targets = task.targets or {}
    if task.chat_type == "group":
        return str(targets.get("chat_id") or (targets.get("chat_id_list") or [""])[0])
    return str((targets.get("external_userid") or [""])[0])


def outcome(task_status: str, target_status: int | None, sender: str) -> tuple[str, str | None]:
    """Outbox status and reason of one target of a task WeCom reported on.

    ``target_status`` is the target's ``status`` in ``get_group_msg_result`` (None if the
    answer does not list it: then the task's overall status decides).
    """
    code = target_status
    if code is None:
        code = {"sent": 1, "not_friend": 2, "limited": 3}.get(task_status, -1)
    if code == 1:
        return "sent", None
    if code == 2:
        return "unreachable", f"WeCom mass-send: not a contact of {sender} any more"
    if code == 3:
        return "failed", "WeCom mass-send: the customer already got a mass-send (limit)"
    if code == 0:
        return "failed", f"WeCom mass-send: {sender} did not send it to this customer"
    return "failed", f"WeCom mass-send {task_status}"


def settle_outbox(
    session: Session,
    outcomes: dict[str, tuple[str, str | None]],
    msgid: str | None,
    now: datetime,
) -> int:
    """Record mass-send outcomes (outbox key → status, reason) on the outbox rows still open.

    Clearing ``claimed_by`` makes a worker that still holds such a row (it crashed or is
    slow to record the hand-over) unable to overwrite the outcome.
    """
    by_outcome: dict[tuple[str, str | None], list[str]] = defaultdict(list)
    for key, result in outcomes.items():
        by_outcome[result].append(key)
    changed = 0
    for (status, reason), keys in by_outcome.items():
        values: dict = {
            "status": transitions(OPEN_OUTBOX, status).value,
            "last_error": redact_or_none(reason),
            "claimed_by": None,
            "lease_until": None,
        }
        if status == "sent":
            values["sent_at"] = now
            if msgid:
                values["platform_message_id"] = f"mass:{msgid}"
        updated = session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.idempotency_key.in_(keys), OutboxMessage.status.in_(OPEN_OUTBOX))
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        changed += rowcount(updated)
    return changed


def released(session: Session, batch: Batch) -> None:
    """A transient failure: the rows wait for the next batch."""
    session.execute(
        update(WecomMassTask).where(WecomMassTask.id.in_(batch.ids)).values(status="batching")
    )
