"""Tables of running the groups: scheduled group posts (社群 SOP), FAQ answers, moderation.

* :class:`GroupTag` — a label on a group (``tag:周末`` in a post plan's targets).
* :class:`SopPlan` — a post plan: which groups, when (``schedule``), what, from when to when;
  each time slot it fires is one :class:`SopRun` (unique per plan and slot, so two
  processes or a restart never post one slot twice), and each group it posted to is one
  :class:`GroupPost` bound to its outbox row (delivery) and counting clicks.
* :class:`FaqEntry` — a question (keywords), its answer and where and how it is answered;
  :class:`FaqCooldown` is when it was last answered in a chat.
* :class:`GroupModeration` — a group's moderation settings; :class:`ModerationAction` is
  the audit log of every moderation action (who, whom, what, why);
  :class:`GroupWarning` counts ``/warn``; :class:`NewcomerCheck` is a newcomer who must
  press the confirm button before ``deadline``.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Date,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from storage.clock import utcnow
from storage.models import Base, BigId

__all__ = [
    "FaqCooldown",
    "FaqEntry",
    "GroupModeration",
    "GroupPost",
    "GroupTag",
    "GroupWarning",
    "ModerationAction",
    "NewcomerCheck",
    "SopPlan",
    "SopRun",
]


class GroupTag(Base):
    """A label a manager put on a group, used to pick the groups of a post plan."""

    __tablename__ = "group_tags"

    group_id: Mapped[int] = mapped_column(ForeignKey("groups.id"), primary_key=True)
    tag: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class SopPlan(Base):
    """A scheduled group post plan (社群 SOP). status: active | paused."""

    __tablename__ = "sop_plans"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    channel: Mapped[str] = mapped_column(String(16), default="")
    targets: Mapped[list[str]] = mapped_column(JSON, default=list)
    schedule: Mapped[str] = mapped_column(String(200))
    text: Mapped[str | None] = mapped_column(Text)
    template: Mapped[str | None] = mapped_column(String(64))
    coupon: Mapped[str | None] = mapped_column(String(64))
    button: Mapped[str | None] = mapped_column(String(64))
    link: Mapped[str | None] = mapped_column(String(2000))
    starts_on: Mapped[date | None] = mapped_column(Date)
    ends_on: Mapped[date | None] = mapped_column(Date)
    status: Mapped[str] = mapped_column(String(16), default="active")
    created_by: Mapped[str] = mapped_column(String(128), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    #: Slots up to this time were considered (posted or recorded as missed).
    checked_until: Mapped[datetime | None]


class SopRun(Base):
    """One time slot of a plan: posted (to ``groups`` groups), missed or without groups."""

    __tablename__ = "sop_runs"
    __table_args__ = (UniqueConstraint("plan_id", "slot_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    plan_id: Mapped[int] = mapped_column(ForeignKey("sop_plans.id", ondelete="CASCADE"))
    slot_at: Mapped[datetime]
    status: Mapped[str] = mapped_column(String(16))
    groups: Mapped[int] = mapped_column(Integer, default=0)
    reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class GroupPost(Base):
    """A plan's post to one group: its outbox row (delivery) and the clicks it got."""

    __tablename__ = "group_posts"
    __table_args__ = (Index("ix_group_posts_plan", "plan_id", "group_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("sop_runs.id", ondelete="CASCADE"))
    plan_id: Mapped[int] = mapped_column(BigId)
    group_id: Mapped[int] = mapped_column(ForeignKey("groups.id"))
    outbox_key: Mapped[str] = mapped_column(String(200), unique=True)
    link_token: Mapped[str | None] = mapped_column(String(32), unique=True)
    button_clicks: Mapped[int] = mapped_column(Integer, default=0)
    link_clicks: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class FaqEntry(Base):
    """A question managers answer once: its keywords, answer, where and how often.

    scope: everywhere | private | groups | chats (only ``chats``: ``channel:chat_id``);
    group_mode: mention (answer in a group only when the bot is mentioned or replied to) |
    always | off (never in groups).
    """

    __tablename__ = "faq_entries"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    question: Mapped[str] = mapped_column(String(200))
    keywords: Mapped[list[str]] = mapped_column(JSON, default=list)
    answer_zh: Mapped[str | None] = mapped_column(Text)
    answer_en: Mapped[str | None] = mapped_column(Text)
    template: Mapped[str | None] = mapped_column(String(64))
    scope: Mapped[str] = mapped_column(String(16), default="everywhere")
    chats: Mapped[list[str]] = mapped_column(JSON, default=list)
    group_mode: Mapped[str] = mapped_column(String(16), default="mention")
    cooldown_seconds: Mapped[int] = mapped_column(Integer, default=600)
    hits: Mapped[int] = mapped_column(Integer, default=0)
    last_hit_at: Mapped[datetime | None]
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_by: Mapped[str] = mapped_column(String(128), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class FaqCooldown(Base):
    """When a FAQ answer was last given in one chat (group or 1:1)."""

    __tablename__ = "faq_cooldowns"

    entry_id: Mapped[int] = mapped_column(
        ForeignKey("faq_entries.id", ondelete="CASCADE"), primary_key=True
    )
    channel: Mapped[str] = mapped_column(String(16), primary_key=True)
    chat_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    answered_at: Mapped[datetime]


class GroupModeration(Base):
    """A group's moderation settings (bot/groups/moderation.py: ``Settings``)."""

    __tablename__ = "group_moderation"

    group_id: Mapped[int] = mapped_column(ForeignKey("groups.id"), primary_key=True)
    settings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    updated_by: Mapped[str] = mapped_column(String(128), default="")
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class ModerationAction(Base):
    """The audit log of moderation: what was done (or reported) to whom, by whom, why.

    action: delete | mute | unmute | ban | unban | remove | warn | report | restrict;
    ``outbox_key`` is the platform operation's outbox row (its status says whether
    Telegram carried it out), empty for what is only recorded (warn, report).
    """

    __tablename__ = "moderation_actions"
    __table_args__ = (Index("ix_moderation_actions_group", "group_id", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    group_id: Mapped[int] = mapped_column(ForeignKey("groups.id"))
    user_id: Mapped[str] = mapped_column(String(128))
    user_name: Mapped[str] = mapped_column(String(200), default="")
    action: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str] = mapped_column(Text, default="")
    actor: Mapped[str] = mapped_column(String(128))
    outbox_key: Mapped[str | None] = mapped_column(String(200))
    until: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class GroupWarning(Base):
    """A member's warnings in a group since their last mute for warnings."""

    __tablename__ = "group_warnings"

    group_id: Mapped[int] = mapped_column(ForeignKey("groups.id"), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    count: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class NewcomerCheck(Base):
    """A newcomer who must confirm with the button. status: waiting | confirmed | removed."""

    __tablename__ = "newcomer_checks"
    __table_args__ = (Index("ix_newcomer_checks_due", "status", "deadline"),)

    group_id: Mapped[int] = mapped_column(ForeignKey("groups.id"), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    user_name: Mapped[str] = mapped_column(String(200), default="")
    status: Mapped[str] = mapped_column(String(16), default="waiting")
    deadline: Mapped[datetime]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
