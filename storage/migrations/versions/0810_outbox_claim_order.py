"""The outbox claim order: an index for transactional-first and fair-share claims; NOTIFY

Workers claim transactional rows (by purpose) before marketing, and each campaign's or
scenario's rows in turn (by source), so the index leads with status and purpose and ends
with the source and id. On PostgreSQL a statement trigger sends ``NOTIFY siyu_outbox``
whenever rows are inserted (committed with them), so workers in other processes wake at
once instead of at their next poll.

Revision ID: 0810
Revises: 0791
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0810"
down_revision: str | Sequence[str] | None = "0791"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NOTIFY_FUNCTION = """
CREATE OR REPLACE FUNCTION siyu_outbox_notify() RETURNS trigger AS $$
BEGIN
  PERFORM pg_notify('siyu_outbox', '');
  RETURN NULL;
END;
$$ LANGUAGE plpgsql
"""


def upgrade() -> None:
    op.create_index(
        "ix_outbox_claim", "outbox", ["status", "purpose", "source_kind", "source_id", "id"]
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(NOTIFY_FUNCTION)
        op.execute(
            "CREATE TRIGGER outbox_notify AFTER INSERT ON outbox "
            "FOR EACH STATEMENT EXECUTE FUNCTION siyu_outbox_notify()"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS outbox_notify ON outbox")
        op.execute("DROP FUNCTION IF EXISTS siyu_outbox_notify()")
    op.drop_index("ix_outbox_claim", table_name="outbox")
