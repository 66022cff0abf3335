"""retention: a time index so siyu purge finds old transcripts by batch

``siyu purge`` deletes rows older than the ``[retention]`` periods a batch at a time; each
batch looks the oldest rows up by time, which without these indexes would scan the whole
table once per batch.

Revision ID: 0790
Revises: 0780
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0790"
down_revision: str | Sequence[str] | None = "0780"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # interactions.occurred_at is indexed by 0770 (the console reads it by time too)
    op.create_index("ix_sandbox_messages_created_at", "sandbox_messages", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_sandbox_messages_created_at", table_name="sandbox_messages")
