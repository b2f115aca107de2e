"""Instances' ``outbound_trusted``: whether an admin (or the library) set the endpoint and the
recovery URL, so probes and recovery POSTs may reach internal addresses (``core.outbound``).

Rows registered before the policy existed were accepted by the operator's deployment as they are:
they stay trusted (server default true) rather than fail their probes after an upgrade.

Revision ID: 0010_instance_outbound_trust
Revises: 0009_delivery_created_index
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010_instance_outbound_trust"
down_revision: str | None = "0009_delivery_created_index"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("proxy_instances") as batch:
        batch.add_column(
            sa.Column("outbound_trusted", sa.Boolean(), nullable=False, server_default=sa.true())
        )


def downgrade() -> None:
    with op.batch_alter_table("proxy_instances") as batch:
        batch.drop_column("outbound_trusted")
