"""Instances' ``traffic_address``: where a data plane sends the instance's user traffic (SPEC §9).

Nullable: an instance without one sends its traffic to the host and port of its endpoint.

Revision ID: 0006_traffic_address
Revises: 0005_change_version
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_traffic_address"
down_revision: str | None = "0005_change_version"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("proxy_instances") as batch:
        batch.add_column(sa.Column("traffic_address", sa.String(261), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("proxy_instances") as batch:
        batch.drop_column("traffic_address")
