"""An index on ``webhook_deliveries.created_at``: retention finds old finished deliveries by it
(a prune that finds nothing is then an empty index range, not a scan of every delivered row
inside a write transaction).

Revision ID: 0009_delivery_created_index
Revises: 0008_delivery_notification_index
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0009_delivery_created_index"
down_revision: str | None = "0008_delivery_notification_index"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_webhook_deliveries_created_at", "webhook_deliveries", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_webhook_deliveries_created_at", "webhook_deliveries")
