"""A proxy's change counter (``proxy_redundancy_status.change_version``).

Every write that locks a proxy bumps it in the same transaction, except the bulk recording of
routine probe successes: the engine then re-reads a proxy's snapshot only when its counter moved,
instead of every second for every proxy.

Revision ID: 0005_change_version
Revises: 0004_leases
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_change_version"
down_revision: str | None = "0004_leases"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("proxy_redundancy_status") as batch:
        batch.add_column(
            sa.Column("change_version", sa.BigInteger(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("proxy_redundancy_status") as batch:
        batch.drop_column("change_version")
