"""groups: scheduled group posts (SOP), FAQ answers, moderation

Tables of storage/groups.py: group tags, post plans, their runs and posts per group, FAQ
entries and their cool-downs, moderation settings, the moderation audit log, warnings and
newcomer checks.

Revision ID: 0760
Revises: 0750
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0760"
down_revision: str | Sequence[str] | None = "0750"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "faq_entries",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("question", sa.String(length=200), nullable=False),
        sa.Column("keywords", sa.JSON(), nullable=False),
        sa.Column("answer_zh", sa.Text(), nullable=True),
        sa.Column("answer_en", sa.Text(), nullable=True),
        sa.Column("template", sa.String(length=64), nullable=True),
        sa.Column("scope", sa.String(length=16), nullable=False),
        sa.Column("chats", sa.JSON(), nullable=False),
        sa.Column("group_mode", sa.String(length=16), nullable=False),
        sa.Column("cooldown_seconds", sa.Integer(), nullable=False),
        sa.Column("hits", sa.Integer(), nullable=False),
        sa.Column("last_hit_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_faq_entries")),
    )
    op.create_table(
        "sop_plans",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("targets", sa.JSON(), nullable=False),
        sa.Column("schedule", sa.String(length=200), nullable=False),
        sa.Column("text", sa.Text(), nullable=True),
        sa.Column("template", sa.String(length=64), nullable=True),
        sa.Column("coupon", sa.String(length=64), nullable=True),
        sa.Column("button", sa.String(length=64), nullable=True),
        sa.Column("link", sa.String(length=2000), nullable=True),
        sa.Column("starts_on", sa.Date(), nullable=True),
        sa.Column("ends_on", sa.Date(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("checked_until", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sop_plans")),
        sa.UniqueConstraint("name", name=op.f("uq_sop_plans_name")),
    )
    op.create_table(
        "faq_cooldowns",
        sa.Column("entry_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("chat_id", sa.String(length=128), nullable=False),
        sa.Column("answered_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["entry_id"],
            ["faq_entries.id"],
            name=op.f("fk_faq_cooldowns_entry_id_faq_entries"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("entry_id", "channel", "chat_id", name=op.f("pk_faq_cooldowns")),
    )
    op.create_table(
        "group_moderation",
        sa.Column("group_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.Column("updated_by", sa.String(length=128), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["group_id"], ["groups.id"], name=op.f("fk_group_moderation_group_id_groups")
        ),
        sa.PrimaryKeyConstraint("group_id", name=op.f("pk_group_moderation")),
    )
    op.create_table(
        "group_tags",
        sa.Column("group_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("tag", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["group_id"], ["groups.id"], name=op.f("fk_group_tags_group_id_groups")
        ),
        sa.PrimaryKeyConstraint("group_id", "tag", name=op.f("pk_group_tags")),
    )
    op.create_table(
        "group_warnings",
        sa.Column("group_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("user_id", sa.String(length=128), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["group_id"], ["groups.id"], name=op.f("fk_group_warnings_group_id_groups")
        ),
        sa.PrimaryKeyConstraint("group_id", "user_id", name=op.f("pk_group_warnings")),
    )
    op.create_table(
        "moderation_actions",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("group_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("user_id", sa.String(length=128), nullable=False),
        sa.Column("user_name", sa.String(length=200), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.Column("outbox_key", sa.String(length=200), nullable=True),
        sa.Column("until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["group_id"], ["groups.id"], name=op.f("fk_moderation_actions_group_id_groups")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_moderation_actions")),
    )
    with op.batch_alter_table("moderation_actions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_moderation_actions_created_at"), ["created_at"], unique=False
        )
        batch_op.create_index("ix_moderation_actions_group", ["group_id", "id"], unique=False)

    op.create_table(
        "newcomer_checks",
        sa.Column("group_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("user_id", sa.String(length=128), nullable=False),
        sa.Column("user_name", sa.String(length=200), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("deadline", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["group_id"], ["groups.id"], name=op.f("fk_newcomer_checks_group_id_groups")
        ),
        sa.PrimaryKeyConstraint("group_id", "user_id", name=op.f("pk_newcomer_checks")),
    )
    with op.batch_alter_table("newcomer_checks", schema=None) as batch_op:
        batch_op.create_index("ix_newcomer_checks_due", ["status", "deadline"], unique=False)

    op.create_table(
        "sop_runs",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("plan_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("slot_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("groups", sa.Integer(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["plan_id"],
            ["sop_plans.id"],
            name=op.f("fk_sop_runs_plan_id_sop_plans"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sop_runs")),
        sa.UniqueConstraint("plan_id", "slot_at", name=op.f("uq_sop_runs_plan_id")),
    )
    op.create_table(
        "group_posts",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("run_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("plan_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("group_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("outbox_key", sa.String(length=200), nullable=False),
        sa.Column("link_token", sa.String(length=32), nullable=True),
        sa.Column("button_clicks", sa.Integer(), nullable=False),
        sa.Column("link_clicks", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["group_id"], ["groups.id"], name=op.f("fk_group_posts_group_id_groups")
        ),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["sop_runs.id"],
            name=op.f("fk_group_posts_run_id_sop_runs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_group_posts")),
        sa.UniqueConstraint("link_token", name=op.f("uq_group_posts_link_token")),
        sa.UniqueConstraint("outbox_key", name=op.f("uq_group_posts_outbox_key")),
    )
    with op.batch_alter_table("group_posts", schema=None) as batch_op:
        batch_op.create_index("ix_group_posts_plan", ["plan_id", "group_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("group_posts", schema=None) as batch_op:
        batch_op.drop_index("ix_group_posts_plan")

    op.drop_table("group_posts")
    op.drop_table("sop_runs")
    with op.batch_alter_table("newcomer_checks", schema=None) as batch_op:
        batch_op.drop_index("ix_newcomer_checks_due")

    op.drop_table("newcomer_checks")
    with op.batch_alter_table("moderation_actions", schema=None) as batch_op:
        batch_op.drop_index("ix_moderation_actions_group")
        batch_op.drop_index(batch_op.f("ix_moderation_actions_created_at"))

    op.drop_table("moderation_actions")
    op.drop_table("group_warnings")
    op.drop_table("group_tags")
    op.drop_table("group_moderation")
    op.drop_table("faq_cooldowns")
    op.drop_table("sop_plans")
    op.drop_table("faq_entries")
