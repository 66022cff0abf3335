"""Joining customers: unionid links across WeChat channels, and merging two customers.

An Official Account openid and a WeCom external_userid with the same WeChat unionid are the
same person: :func:`link_unionid` records the unionid and folds the two customers into the
older one. Without a unionid they stay separate until a manager merges them
(:func:`merge_customers`, ``siyu customer merge A B``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from sqlalchemy import Column, Table, delete, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from storage.batch_rows import forget_customers
from storage.db import insert_ignore
from storage.models import Base, Customer, CustomerTag, Identity, Membership
from storage.tag_scores import TagInterest, days_since_epoch
from storage.wechat import CustomerMerge, UnionId

__all__ = ["MergeError", "link_unionid", "merge_customers", "unionid_of"]

log = logging.getLogger(__name__)
#: The least score kept for a merged interest row (so its log2 exists), far below any use.
_TINY = 1e-300


class MergeError(ValueError):
    """Two customers cannot be merged (unknown id, same customer); the message says why."""


def unionid_of(session: Session, channel: str, external_id: str) -> str | None:
    row = session.get(UnionId, (channel, external_id))
    return row.unionid if row else None


def link_unionid(
    session: Session, channel: str, external_id: str, unionid: str, now: datetime
) -> int | None:
    """Record an identity's unionid; merge customers sharing it. Returns the customer id.

    Links of one unionid are serialized (on PostgreSQL a transaction-scoped advisory lock;
    SQLite has one writer anyway), so an OA follow and a WeCom add of the same person
    processed at the same moment still see each other and end as one customer.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(
            text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"),
            {"key": f"siyu:unionid:{unionid}"},
        )
    existing = session.get(UnionId, (channel, external_id))
    if existing is None:
        insert_ignore(
            session,
            UnionId,
            {"channel": channel, "external_id": external_id, "unionid": unionid, "at": now},
            ["channel", "external_id"],
        )
    elif existing.unionid != unionid:
        existing.unionid, existing.at = unionid, now
    session.flush()
    customer_ids = set(
        session.scalars(
            select(Identity.customer_id)
            .join(
                UnionId,
                (UnionId.channel == Identity.channel)
                & (UnionId.external_id == Identity.external_id),
            )
            .where(UnionId.unionid == unionid)
        )
    )
    if not customer_ids:
        return None
    into = min(customer_ids)
    for other in sorted(customer_ids - {into}):
        merge_customers(session, into, other, reason=f"unionid {unionid}", now=now)
    return into


def _customer_columns() -> Iterator[tuple[Table, Column[Any]]]:
    """Every (table, column) that holds a customer id, in any module's tables."""
    for table in Base.metadata.sorted_tables:
        if table.name == "customers":
            continue
        for column in table.columns:
            refers = any(fk.column.table.name == "customers" for fk in column.foreign_keys)
            if refers or column.name == "customer_id":
                yield table, column


def _fold_shared_tags(session: Session, into_id: int, from_id: int) -> None:
    """A tag both customers have: the survivor's row spans both (earliest first seen,
    latest last seen, latest expiry, no expiry if either has none); the other row goes."""
    for row in session.scalars(select(CustomerTag).where(CustomerTag.customer_id == from_id)).all():
        kept = session.get(CustomerTag, (into_id, row.tag_id))
        if kept is None:
            continue  # moved with the other customer-id columns below
        kept.first_seen_at = min(kept.first_seen_at, row.first_seen_at)
        kept.last_seen_at = max(kept.last_seen_at, row.last_seen_at)
        if kept.expires_at is None or row.expires_at is None:
            kept.expires_at = None
        else:
            kept.expires_at = max(kept.expires_at, row.expires_at)
        session.delete(row)
    session.flush()


def _fold_shared_interest(session: Session, into_id: int, from_id: int) -> None:
    """A tag both customers have an interest score for: add the two scores (each decayed to
    the later of the two last hits, see storage/tag_scores.py) into the survivor's row."""
    for row in session.scalars(select(TagInterest).where(TagInterest.customer_id == from_id)).all():
        kept = session.get(TagInterest, (into_id, row.tag_id))
        if kept is None:
            continue  # moved with the other customer-id columns below
        at = max(kept.last_hit_at, row.last_hit_at)
        score = kept.score_at(at) + row.score_at(at)
        # The rate in force at the later hit, as a new hit would (bump_interest).
        rate = kept.decay_rate if kept.last_hit_at >= row.last_hit_at else row.decay_rate
        kept.score, kept.decay_rate, kept.last_hit_at = score, rate, at
        kept.decay_key = math.log2(max(score, _TINY)) + rate * days_since_epoch(at)
        kept.hits += row.hits
        kept.first_hit_at = min(kept.first_hit_at, row.first_hit_at)
        session.delete(row)
    session.flush()


def merge_customers(
    session: Session, into_id: int, from_id: int, *, reason: str, now: datetime
) -> Customer:
    """Fold customer ``from_id`` into ``into_id``: identities, tags, history, state, outbox.

    A tag both have keeps the survivor's row, spanning both (:func:`_fold_shared_tags`); an
    interest score both have for a tag is added up (:func:`_fold_shared_interest`); group
    memberships both have keep the surviving customer's row. The emptied
    customer row stays (with no identities) and the merge is recorded.
    """
    if into_id == from_id:
        raise MergeError("a customer cannot be merged into itself")
    into = session.get(Customer, into_id)
    source = session.get(Customer, from_id)
    if into is None or source is None:
        missing = into_id if into is None else from_id
        raise MergeError(f"no customer #{missing}")
    forget_customers(session, (into_id, from_id))  # their tag rows move under other keys
    _fold_shared_tags(session, into_id, from_id)
    _fold_shared_interest(session, into_id, from_id)
    kept_groups = select(Membership.group_id).where(Membership.customer_id == into_id)
    session.execute(
        delete(Membership).where(
            Membership.customer_id == from_id, Membership.group_id.in_(kept_groups)
        )
    )
    for table, column in _customer_columns():
        try:
            with session.begin_nested():
                session.execute(
                    update(table).where(column == from_id).values({column.name: into_id})
                )
        except IntegrityError:
            log.warning("merge %s→%s: rows of %s kept on the old customer", from_id, into_id, table)
    into.marketing_opt_out = into.marketing_opt_out or source.marketing_opt_out
    for name in ("phone", "birthday", "city"):
        if getattr(into, name) is None and getattr(source, name) is not None:
            setattr(into, name, getattr(source, name))
    if source.last_active_at and (
        not into.last_active_at or source.last_active_at > into.last_active_at
    ):
        into.last_active_at = source.last_active_at
    if source.created_at and into.created_at and source.created_at < into.created_at:
        into.created_at = source.created_at
    insert_ignore(
        session,
        CustomerMerge,
        {"from_customer_id": from_id, "into_customer_id": into_id, "reason": reason, "at": now},
        ["from_customer_id"],
    )
    session.flush()
    session.expire_all()
    log.info("customer #%s merged into #%s (%s)", from_id, into_id, reason)
    return session.get_one(Customer, into_id)
