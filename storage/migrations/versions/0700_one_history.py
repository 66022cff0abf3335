"""one history: join the areas' branches into a single line

Each area (telegram, wechat, customers, conversations, campaigns, ...) grew its own branch
from 0001. From here on every migration follows the one before it.

Revision ID: 0700
Revises: 0100, 0200, 0310, 0510, 0520, 0610 (0400 comes in through 0510)
"""

from collections.abc import Sequence

revision: str = "0700"
down_revision: str | Sequence[str] | None = ("0100", "0200", "0310", "0510", "0520", "0610")
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
