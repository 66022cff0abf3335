"""callback journal: WeChat/WeCom callbacks stored before they are acknowledged, and the
signatures of plaintext-mode callbacks remembered within the replay window

Revision ID: 0730
Revises: 0710
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from storage.models import UTCDateTime

revision: str = "0730"
down_revision: str | Sequence[str] | None = "0710"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "wechat_inbound",
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("user_id", sa.String(length=128), nullable=False),
        sa.Column("fields", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("received_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("processed_at", UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_wechat_inbound")),
    )
    op.create_index(
        "ix_wechat_inbound_status_received", "wechat_inbound", ["status", "received_at"]
    )
    op.create_index("ix_wechat_inbound_user", "wechat_inbound", ["channel", "user_id"])
    op.create_table(
        "wechat_callback_nonces",
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("signature", sa.String(length=64), nullable=False),
        sa.Column("nonce", sa.String(length=64), nullable=False),
        sa.Column("timestamp", sa.BigInteger(), nullable=False),
        sa.Column("body_sha256", sa.String(length=64), nullable=False),
        sa.Column("seen_at", UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("channel", "signature", name=op.f("pk_wechat_callback_nonces")),
    )
    op.create_index("ix_wechat_callback_nonces_seen_at", "wechat_callback_nonces", ["seen_at"])


def downgrade() -> None:
    op.drop_index("ix_wechat_callback_nonces_seen_at", table_name="wechat_callback_nonces")
    op.drop_table("wechat_callback_nonces")
    op.drop_index("ix_wechat_inbound_user", table_name="wechat_inbound")
    op.drop_index("ix_wechat_inbound_status_received", table_name="wechat_inbound")
    op.drop_table("wechat_inbound")
