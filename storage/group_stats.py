"""A group's activity over a period: members, joins, leaves, messages, top members and tags."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from storage.models import Customer, CustomerTag, Group, Interaction, Membership, Tag

__all__ = ["GroupStats", "group_stats"]


@dataclass(frozen=True)
class GroupStats:
    """Counts since a moment; ``active`` and ``tags`` are (name, count), most first."""

    members: int
    joins: int
    leaves: int
    messages: int
    active: list[tuple[str | None, int]]
    tags: list[tuple[str, int]]


def group_stats(
    session: Session, group: Group, since: datetime, now: datetime, *, top: int = 5
) -> GroupStats:
    """The group's activity since ``since`` (tags: members' unexpired tags at ``now``)."""
    in_chat = (
        (Interaction.channel == group.channel)
        & (Interaction.chat_id == group.external_id)
        & (Interaction.occurred_at >= since)
    )

    def count(kind: str) -> int:
        return int(
            session.scalar(
                select(func.count())
                .select_from(Interaction)
                .where(in_chat, Interaction.kind == kind)
            )
            or 0
        )

    members = session.scalar(
        select(func.count())
        .select_from(Membership)
        .where(Membership.group_id == group.id, Membership.active.is_(True))
    )
    active = session.execute(
        select(Customer.display_name, func.count().label("n"))
        .join(Interaction, Interaction.customer_id == Customer.id)
        .where(in_chat, Interaction.kind == "message")
        .group_by(Customer.id, Customer.display_name)
        .order_by(func.count().desc(), Customer.id)
        .limit(top)
    ).all()
    tags = session.execute(
        select(Tag.name, func.count().label("n"))
        .join(CustomerTag, CustomerTag.tag_id == Tag.id)
        .join(Membership, Membership.customer_id == CustomerTag.customer_id)
        .where(Membership.group_id == group.id, Membership.active.is_(True))
        .where((CustomerTag.expires_at.is_(None)) | (CustomerTag.expires_at > now))
        .group_by(Tag.id, Tag.name)
        .order_by(func.count().desc(), Tag.name)
        .limit(top)
    ).all()
    return GroupStats(
        members=int(members or 0),
        joins=count("join"),
        leaves=count("leave"),
        messages=count("message"),
        active=[(name, n) for name, n in active],
        tags=[(name, n) for name, n in tags],
    )
