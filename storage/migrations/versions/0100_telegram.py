"""telegram: long callback data, staff relay topics

Revision ID: 0100
Revises: 0001
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0100"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "telegram_callback_data",
        sa.Column("token", sa.String(length=64), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("token", name=op.f("pk_telegram_callback_data")),
    )
    op.create_table(
        "telegram_relay_topics",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("relay_chat_id", sa.String(length=64), nullable=False),
        sa.Column("thread_id", sa.BigInteger(), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("chat_id", sa.String(length=128), nullable=False),
        sa.Column("user_id", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_telegram_relay_topics")),
        sa.UniqueConstraint(
            "channel", "chat_id", "user_id", name=op.f("uq_telegram_relay_topics_channel")
        ),
        sa.UniqueConstraint(
            "relay_chat_id", "thread_id", name=op.f("uq_telegram_relay_topics_relay_chat_id")
        ),
    )


def downgrade() -> None:
    op.drop_table("telegram_relay_topics")
    op.drop_table("telegram_callback_data")
