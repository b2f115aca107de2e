"""Retention indexes and the report TTL (issue 12).

* ``proxy_failover_configurations.health_report_ttl_seconds`` (nullable: off) and
  ``proxy_instances.last_report_at`` (when a health report last set the status), so a report
  that expires is remembered across restarts;
* indexes on the timestamps retention prunes by (events' ``created_at``, samples'
  ``recorded_at``, the event log's ``occurred_at``): a prune batch that finds nothing is an
  empty index range, not a table scan.

Revision ID: 0007_retention_and_report_ttl
Revises: 0006_traffic_address
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_retention_and_report_ttl"
down_revision: str | None = "0006_traffic_address"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("proxy_failover_configurations") as batch:
        batch.add_column(sa.Column("health_report_ttl_seconds", sa.Float(), nullable=True))
    with op.batch_alter_table("proxy_instances") as batch:
        batch.add_column(sa.Column("last_report_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_proxy_failover_events_created_at", "proxy_failover_events", ["created_at"])
    op.create_index(
        "ix_proxy_instance_metrics_recorded_at", "proxy_instance_metrics", ["recorded_at"]
    )
    op.create_index("ix_notification_log_occurred_at", "notification_log", ["occurred_at"])


def downgrade() -> None:
    op.drop_index("ix_notification_log_occurred_at", "notification_log")
    op.drop_index("ix_proxy_instance_metrics_recorded_at", "proxy_instance_metrics")
    op.drop_index("ix_proxy_failover_events_created_at", "proxy_failover_events")
    with op.batch_alter_table("proxy_instances") as batch:
        batch.drop_column("last_report_at")
    with op.batch_alter_table("proxy_failover_configurations") as batch:
        batch.drop_column("health_report_ttl_seconds")
