"""outbox source: which campaign or scenario queued a row, as columns

Campaigns and scenarios were found in the outbox by the prefix of the idempotency key
(``campaign:<id>:...``, ``scenario:<name>:...``). Rows now carry ``source_kind`` and
``source_id``; existing rows are filled in from their keys, and scenario rows get their own
purpose (``scenario``) instead of ``campaign``.

Revision ID: 0740
Revises: 0730
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0740"
down_revision: str | Sequence[str] | None = "0730"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("outbox", sa.Column("source_kind", sa.String(16), nullable=True))
    op.add_column("outbox", sa.Column("source_id", sa.BigInteger(), nullable=True))
    op.create_index("ix_outbox_source", "outbox", ["source_kind", "source_id"])
    op.execute(
        "UPDATE outbox SET source_kind = 'campaign', source_id = ("
        " SELECT c.id FROM campaigns c WHERE substr(outbox.idempotency_key, 1,"
        " length('campaign:' || c.id || ':')) = 'campaign:' || c.id || ':')"
        " WHERE idempotency_key LIKE 'campaign:%'"
    )
    op.execute(
        "UPDATE outbox SET source_kind = 'scenario', purpose = 'scenario', source_id = ("
        " SELECT s.id FROM scenarios s WHERE substr(outbox.idempotency_key, 1,"
        " length('scenario:' || s.name || ':')) = 'scenario:' || s.name || ':')"
        " WHERE idempotency_key LIKE 'scenario:%'"
    )
    op.execute(
        "UPDATE outbox SET source_kind = NULL WHERE source_id IS NULL AND source_kind IS NOT NULL"
    )


def downgrade() -> None:
    op.execute("UPDATE outbox SET purpose = 'campaign' WHERE source_kind = 'scenario'")
    op.drop_index("ix_outbox_source", table_name="outbox")
    with op.batch_alter_table("outbox") as batch_op:
        batch_op.drop_column("source_id")
        batch_op.drop_column("source_kind")
