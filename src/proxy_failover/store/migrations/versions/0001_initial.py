"""Initial schema: the seed's four tables plus per-instance metric samples.

Revision ID: 0001_initial
Revises:
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001_initial"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: Open switching events; the partial unique index allows one of them per proxy.
OPEN_SWITCH = (
    "status IN ('pending', 'in_progress') AND event_type IN ('failover', 'failback', 'switchover')"
)


def upgrade() -> None:
    op.create_table(
        "proxy_failover_configurations",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("proxy_id", sa.String(length=128), nullable=False),
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("failover_strategy", sa.String(length=32), nullable=False),
        sa.Column("health_check_interval_seconds", sa.Float(), nullable=False),
        sa.Column("health_check_timeout_seconds", sa.Float(), nullable=False),
        sa.Column("fast_interval_seconds", sa.Float(), nullable=True),
        sa.Column("down_interval_seconds", sa.Float(), nullable=True),
        sa.Column("unhealthy_threshold", sa.Integer(), nullable=False),
        sa.Column("healthy_threshold", sa.Integer(), nullable=False),
        sa.Column("enable_auto_failover", sa.Boolean(), nullable=False),
        sa.Column("enable_auto_recovery", sa.Boolean(), nullable=False),
        sa.Column("max_recovery_attempts", sa.Integer(), nullable=False),
        sa.Column("recovery_backoff_seconds", sa.Float(), nullable=False),
        sa.Column("enable_auto_failback", sa.Boolean(), nullable=False),
        sa.Column("failback_delay_seconds", sa.Float(), nullable=False),
        sa.Column("enable_load_balancing", sa.Boolean(), nullable=False),
        sa.Column("load_balancing_algorithm", sa.String(length=32), nullable=False),
        sa.Column("health_check", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_proxy_failover_configurations")),
        sa.UniqueConstraint("proxy_id", name=op.f("uq_proxy_failover_configurations_proxy_id")),
    )
    op.create_index(
        op.f("ix_proxy_failover_configurations_user_id"),
        "proxy_failover_configurations",
        ["user_id"],
        unique=False,
    )
    op.create_table(
        "proxy_failover_events",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("proxy_id", sa.String(length=128), nullable=False),
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("event_type", sa.String(length=16), nullable=False),
        sa.Column("source_instance_id", sa.String(length=36), nullable=True),
        sa.Column("target_instance_id", sa.String(length=36), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("triggered_by", sa.String(length=255), nullable=False),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("duration_ms", sa.BigInteger(), nullable=True),
        sa.Column("epoch", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_proxy_failover_events")),
    )
    op.create_index(
        op.f("ix_proxy_failover_events_proxy_id"),
        "proxy_failover_events",
        ["proxy_id"],
        unique=False,
    )
    op.create_index(
        "ix_proxy_failover_events_proxy_id_created_at",
        "proxy_failover_events",
        ["proxy_id", "created_at"],
        unique=False,
    )
    op.create_index(
        op.f("ix_proxy_failover_events_status"), "proxy_failover_events", ["status"], unique=False
    )
    op.create_index(
        op.f("ix_proxy_failover_events_user_id"), "proxy_failover_events", ["user_id"], unique=False
    )
    op.create_index(
        "uq_proxy_failover_events_one_open_switch",
        "proxy_failover_events",
        ["proxy_id"],
        unique=True,
        sqlite_where=sa.text(OPEN_SWITCH),
        postgresql_where=sa.text(OPEN_SWITCH),
    )
    op.create_table(
        "proxy_instances",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("proxy_id", sa.String(length=128), nullable=False),
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("instance_name", sa.String(length=255), nullable=False),
        sa.Column("instance_type", sa.String(length=64), nullable=False),
        sa.Column("endpoint", sa.String(length=2048), nullable=True),
        sa.Column("recovery_url", sa.String(length=2048), nullable=True),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("weight", sa.Integer(), nullable=False),
        sa.Column("admin_state", sa.String(length=16), nullable=False),
        sa.Column("health_status", sa.String(length=16), nullable=False),
        sa.Column("consecutive_failures", sa.Integer(), nullable=False),
        sa.Column("consecutive_successes", sa.Integer(), nullable=False),
        sa.Column("last_health_check", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("last_latency_ms", sa.Float(), nullable=True),
        sa.Column("active_connections", sa.Integer(), nullable=True),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.Column("total_requests", sa.BigInteger(), nullable=False),
        sa.Column("successful_requests", sa.BigInteger(), nullable=False),
        sa.Column("failed_requests", sa.BigInteger(), nullable=False),
        sa.Column("average_latency_ms", sa.Float(), nullable=True),
        sa.Column("error_rate", sa.Float(), nullable=True),
        sa.Column("metadata", sa.JSON(), nullable=False),
        sa.Column("status_changed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["proxy_id"],
            ["proxy_failover_configurations.proxy_id"],
            name=op.f("fk_proxy_instances_proxy_id_proxy_failover_configurations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_proxy_instances")),
        sa.UniqueConstraint(
            "proxy_id", "instance_name", name=op.f("uq_proxy_instances_proxy_id_instance_name")
        ),
    )
    op.create_index(
        op.f("ix_proxy_instances_health_status"), "proxy_instances", ["health_status"], unique=False
    )
    op.create_index(
        op.f("ix_proxy_instances_proxy_id"), "proxy_instances", ["proxy_id"], unique=False
    )
    op.create_index(
        op.f("ix_proxy_instances_user_id"), "proxy_instances", ["user_id"], unique=False
    )
    op.create_table(
        "proxy_redundancy_status",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("proxy_id", sa.String(length=128), nullable=False),
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("total_instances", sa.Integer(), nullable=False),
        sa.Column("healthy_instances", sa.Integer(), nullable=False),
        sa.Column("unhealthy_instances", sa.Integer(), nullable=False),
        sa.Column("active_instance_id", sa.String(length=36), nullable=True),
        sa.Column("backup_instance_ids", sa.JSON(), nullable=False),
        sa.Column("last_failover_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_failover_reason", sa.Text(), nullable=True),
        sa.Column("redundancy_level", sa.String(length=16), nullable=False),
        sa.Column("is_degraded", sa.Boolean(), nullable=False),
        sa.Column("epoch", sa.BigInteger(), nullable=False),
        sa.Column("overridden", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["proxy_id"],
            ["proxy_failover_configurations.proxy_id"],
            name=op.f("fk_proxy_redundancy_status_proxy_id_proxy_failover_configurations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_proxy_redundancy_status")),
        sa.UniqueConstraint("proxy_id", name=op.f("uq_proxy_redundancy_status_proxy_id")),
    )
    op.create_index(
        op.f("ix_proxy_redundancy_status_user_id"),
        "proxy_redundancy_status",
        ["user_id"],
        unique=False,
    )
    op.create_table(
        "proxy_instance_metrics",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("instance_id", sa.String(length=36), nullable=False),
        sa.Column("proxy_id", sa.String(length=128), nullable=False),
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("cpu_percent", sa.Float(), nullable=True),
        sa.Column("memory_percent", sa.Float(), nullable=True),
        sa.Column("request_rate", sa.Float(), nullable=True),
        sa.Column("average_latency_ms", sa.Float(), nullable=True),
        sa.Column("error_rate", sa.Float(), nullable=True),
        sa.Column("connection_count", sa.Integer(), nullable=True),
        sa.Column("throughput_mbps", sa.Float(), nullable=True),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["instance_id"],
            ["proxy_instances.id"],
            name=op.f("fk_proxy_instance_metrics_instance_id_proxy_instances"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_proxy_instance_metrics")),
    )
    op.create_index(
        "ix_proxy_instance_metrics_instance_id_recorded_at",
        "proxy_instance_metrics",
        ["instance_id", "recorded_at"],
        unique=False,
    )
    op.create_index(
        op.f("ix_proxy_instance_metrics_proxy_id"),
        "proxy_instance_metrics",
        ["proxy_id"],
        unique=False,
    )
    op.create_index(
        op.f("ix_proxy_instance_metrics_user_id"),
        "proxy_instance_metrics",
        ["user_id"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_proxy_instance_metrics_user_id"), table_name="proxy_instance_metrics")
    op.drop_index(op.f("ix_proxy_instance_metrics_proxy_id"), table_name="proxy_instance_metrics")
    op.drop_index(
        "ix_proxy_instance_metrics_instance_id_recorded_at", table_name="proxy_instance_metrics"
    )
    op.drop_table("proxy_instance_metrics")
    op.drop_index(op.f("ix_proxy_redundancy_status_user_id"), table_name="proxy_redundancy_status")
    op.drop_table("proxy_redundancy_status")
    op.drop_index(op.f("ix_proxy_instances_user_id"), table_name="proxy_instances")
    op.drop_index(op.f("ix_proxy_instances_proxy_id"), table_name="proxy_instances")
    op.drop_index(op.f("ix_proxy_instances_health_status"), table_name="proxy_instances")
    op.drop_table("proxy_instances")
    op.drop_index("uq_proxy_failover_events_one_open_switch", table_name="proxy_failover_events")
    op.drop_index(op.f("ix_proxy_failover_events_user_id"), table_name="proxy_failover_events")
    op.drop_index(op.f("ix_proxy_failover_events_status"), table_name="proxy_failover_events")
    op.drop_index(
        "ix_proxy_failover_events_proxy_id_created_at", table_name="proxy_failover_events"
    )
    op.drop_index(op.f("ix_proxy_failover_events_proxy_id"), table_name="proxy_failover_events")
    op.drop_table("proxy_failover_events")
    op.drop_index(
        op.f("ix_proxy_failover_configurations_user_id"), table_name="proxy_failover_configurations"
    )
    op.drop_table("proxy_failover_configurations")
