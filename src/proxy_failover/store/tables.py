"""The database schema as SQLAlchemy Core tables, every one of them: the seed's four tables, metric
samples, the notification tables (event log, webhook subscriptions/deliveries/attempts, audit log)
and the lease table.

Column names are the snake_case of SPEC §3. Migrations (``store/migrations``) must create exactly
this; a test compares them with Alembic's autogenerate on both databases.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

from proxy_failover.core.model import SWITCHING_EVENT_TYPES, EventStatus, EventType

#: Deterministic constraint/index names, identical on SQLite and PostgreSQL (Alembic needs names).
NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)


class UTCDateTime(sa.TypeDecorator[datetime]):
    """Timezone-aware UTC in and out: SQLite stores naive UTC text, PostgreSQL ``timestamptz``."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; pass timezone-aware UTC")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def _id() -> sa.Column[str]:
    return sa.Column("id", sa.String(36), primary_key=True)


def _owner() -> sa.Column[str]:
    """The user a row belongs to (ownership checks filter by it)."""
    return sa.Column("user_id", sa.String(255), nullable=False, index=True)


def _configured_proxy(*, index: bool = False, unique: bool = False) -> sa.Column[str]:
    """The proxy a row belongs to, removed with its configuration."""
    return sa.Column(
        "proxy_id",
        sa.String(128),
        sa.ForeignKey("proxy_failover_configurations.proxy_id", ondelete="CASCADE"),
        nullable=False,
        index=index,
        unique=unique,
    )


def _timestamps() -> list[sa.Column[datetime]]:
    return [
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    ]


configurations = sa.Table(
    "proxy_failover_configurations",
    metadata,
    _id(),
    sa.Column("proxy_id", sa.String(128), nullable=False, unique=True),
    _owner(),
    sa.Column("failover_strategy", sa.String(32), nullable=False),
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
    sa.Column("load_balancing_algorithm", sa.String(32), nullable=False),
    sa.Column("health_check", sa.JSON(), nullable=False),
    *_timestamps(),
    sa.Column("health_report_ttl_seconds", sa.Float(), nullable=True),  # migration 0007
)

instances = sa.Table(
    "proxy_instances",
    metadata,
    _id(),
    _configured_proxy(index=True),
    _owner(),
    sa.Column("instance_name", sa.String(255), nullable=False),
    sa.Column("instance_type", sa.String(64), nullable=False),
    sa.Column("endpoint", sa.String(2048), nullable=True),
    sa.Column("traffic_address", sa.String(261), nullable=True),
    # migration 0010: True for rows older than the outbound policy (registered before it existed)
    sa.Column("outbound_trusted", sa.Boolean(), nullable=False, server_default=sa.true()),
    sa.Column("recovery_url", sa.String(2048), nullable=True),
    sa.Column("priority", sa.Integer(), nullable=False),
    sa.Column("weight", sa.Integer(), nullable=False),
    sa.Column("admin_state", sa.String(16), nullable=False),
    sa.Column("health_status", sa.String(16), nullable=False, index=True),
    sa.Column("consecutive_failures", sa.Integer(), nullable=False),
    sa.Column("consecutive_successes", sa.Integer(), nullable=False),
    sa.Column("last_health_check", UTCDateTime(), nullable=True),
    sa.Column("last_error", sa.Text(), nullable=True),
    sa.Column("last_latency_ms", sa.Float(), nullable=True),
    sa.Column("active_connections", sa.Integer(), nullable=True),
    # Mirror of proxy_redundancy_status.active_instance_id (the source of truth), kept in sync in
    # the same transaction as every move of the pointer.
    sa.Column("is_active", sa.Boolean(), nullable=False),
    sa.Column("total_requests", sa.BigInteger(), nullable=False),
    sa.Column("successful_requests", sa.BigInteger(), nullable=False),
    sa.Column("failed_requests", sa.BigInteger(), nullable=False),
    sa.Column("average_latency_ms", sa.Float(), nullable=True),
    sa.Column("error_rate", sa.Float(), nullable=True),
    sa.Column("metadata", sa.JSON(), nullable=False),
    sa.Column("status_changed_at", UTCDateTime(), nullable=True),
    *_timestamps(),
    sa.Column("last_report_at", UTCDateTime(), nullable=True),  # migration 0007
    sa.UniqueConstraint("proxy_id", "instance_name"),
)

#: Core's open statuses and switching event types, in their enums' order (so the index text below
#: stays the one migration 0001 created: a test compares them).
OPEN_STATUSES = tuple(status.value for status in EventStatus if status.is_open)
SWITCH_TYPES = tuple(kind.value for kind in EventType if kind in SWITCHING_EVENT_TYPES)


def _listed(values: tuple[str, ...]) -> str:
    return ", ".join(f"'{value}'" for value in values)


#: Open switching events; the partial unique index below allows one per proxy.
OPEN_SWITCH = f"status IN ({_listed(OPEN_STATUSES)}) AND event_type IN ({_listed(SWITCH_TYPES)})"

events = sa.Table(
    "proxy_failover_events",
    metadata,
    _id(),
    sa.Column("proxy_id", sa.String(128), nullable=False, index=True),
    _owner(),
    sa.Column("event_type", sa.String(16), nullable=False),
    sa.Column("source_instance_id", sa.String(36), nullable=True),
    sa.Column("target_instance_id", sa.String(36), nullable=True),
    sa.Column("reason", sa.Text(), nullable=False),
    sa.Column("status", sa.String(16), nullable=False, index=True),
    sa.Column("triggered_by", sa.String(255), nullable=False),
    sa.Column("error_message", sa.Text(), nullable=True),
    sa.Column("duration_ms", sa.BigInteger(), nullable=True),
    sa.Column("epoch", sa.BigInteger(), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("completed_at", UTCDateTime(), nullable=True),
    sa.Index("ix_proxy_failover_events_proxy_id_created_at", "proxy_id", "created_at"),
    sa.Index("ix_proxy_failover_events_created_at", "created_at"),  # retention (0007)
    # The database's own guarantee of "at most one switching event in progress per proxy".
    sa.Index(
        "uq_proxy_failover_events_one_open_switch",
        "proxy_id",
        unique=True,
        sqlite_where=sa.text(OPEN_SWITCH),
        postgresql_where=sa.text(OPEN_SWITCH),
    ),
)

redundancy = sa.Table(
    "proxy_redundancy_status",
    metadata,
    _id(),
    _configured_proxy(unique=True),
    _owner(),
    sa.Column("total_instances", sa.Integer(), nullable=False),
    sa.Column("healthy_instances", sa.Integer(), nullable=False),
    sa.Column("unhealthy_instances", sa.Integer(), nullable=False),
    sa.Column("active_instance_id", sa.String(36), nullable=True),
    sa.Column("backup_instance_ids", sa.JSON(), nullable=False),
    sa.Column("last_failover_at", UTCDateTime(), nullable=True),
    sa.Column("last_failover_reason", sa.Text(), nullable=True),
    sa.Column("redundancy_level", sa.String(16), nullable=False),
    sa.Column("is_degraded", sa.Boolean(), nullable=False),
    sa.Column("epoch", sa.BigInteger(), nullable=False),
    sa.Column("overridden", sa.Boolean(), nullable=False),
    *_timestamps(),
    # Bumped by every write that locks the proxy (not by routine probe successes): the engine
    # re-reads the proxy only when it moved (migration 0005).
    sa.Column("change_version", sa.BigInteger(), nullable=False, server_default="0"),
)

metrics = sa.Table(
    "proxy_instance_metrics",
    metadata,
    _id(),
    sa.Column(
        "instance_id",
        sa.String(36),
        sa.ForeignKey("proxy_instances.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("proxy_id", sa.String(128), nullable=False, index=True),
    _owner(),
    sa.Column("cpu_percent", sa.Float(), nullable=True),
    sa.Column("memory_percent", sa.Float(), nullable=True),
    sa.Column("request_rate", sa.Float(), nullable=True),
    sa.Column("average_latency_ms", sa.Float(), nullable=True),
    sa.Column("error_rate", sa.Float(), nullable=True),
    sa.Column("connection_count", sa.Integer(), nullable=True),
    sa.Column("throughput_mbps", sa.Float(), nullable=True),
    sa.Column("recorded_at", UTCDateTime(), nullable=False),
    sa.Index("ix_proxy_instance_metrics_instance_id_recorded_at", "instance_id", "recorded_at"),
    sa.Index("ix_proxy_instance_metrics_recorded_at", "recorded_at"),  # retention (0007)
)

# --- notifications: the event log, webhook subscriptions, deliveries and attempts, audit ------

notification_log = sa.Table(
    "notification_log",
    metadata,
    sa.Column("seq", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(36), nullable=False, unique=True),
    sa.Column("proxy_id", sa.String(128), nullable=False, index=True),
    sa.Column("type", sa.String(64), nullable=False),
    sa.Column("epoch", sa.BigInteger(), nullable=False),
    sa.Column("occurred_at", UTCDateTime(), nullable=False, index=True),  # retention (0007)
    # The encoded webhook payload: stored once so every retry posts the very same bytes.
    sa.Column("body", sa.Text(), nullable=False),
)

webhook_subscriptions = sa.Table(
    "webhook_subscriptions",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("proxy_id", sa.String(128), nullable=False, index=True),
    _owner(),
    sa.Column("url", sa.String(2048), nullable=False),
    sa.Column("secret", sa.String(512), nullable=False),
    sa.Column("events", sa.JSON(), nullable=True),
    # Whether deliveries carry admin-only health detail (lastError, lastLatencyMs): only when an
    # admin created the subscription.
    sa.Column("include_health_detail", sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    # Soft delete: the delivery history of a removed subscription stays readable.
    sa.Column("deleted_at", UTCDateTime(), nullable=True),
)

webhook_deliveries = sa.Table(
    "webhook_deliveries",
    metadata,
    sa.Column("seq", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(36), nullable=False, unique=True),
    sa.Column(
        "subscription_id",
        sa.String(36),
        sa.ForeignKey("webhook_subscriptions.id"),
        nullable=False,
    ),
    sa.Column(
        "notification_id",
        sa.String(36),
        sa.ForeignKey("notification_log.id"),
        nullable=False,
        index=True,  # retention asks "does a delivery still refer to this entry?" (0008)
    ),
    sa.Column("proxy_id", sa.String(128), nullable=False, index=True),
    sa.Column("event_type", sa.String(64), nullable=False),
    sa.Column("status", sa.String(16), nullable=False, index=True),
    sa.Column("attempts", sa.Integer(), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False, index=True),  # retention (0009)
    sa.Column("next_attempt_at", UTCDateTime(), nullable=True),
    sa.Column("first_attempt_at", UTCDateTime(), nullable=True),
    sa.Column("last_attempt_at", UTCDateTime(), nullable=True),
    sa.Column("last_status_code", sa.Integer(), nullable=True),
    sa.Column("last_error", sa.Text(), nullable=True),
    sa.Column("delivered_at", UTCDateTime(), nullable=True),
    sa.Column("lease_owner", sa.String(64), nullable=True),
    sa.Column("lease_expires_at", UTCDateTime(), nullable=True),
    sa.Index(
        "ix_webhook_deliveries_subscription_id_status_seq", "subscription_id", "status", "seq"
    ),
)

webhook_delivery_attempts = sa.Table(
    "webhook_delivery_attempts",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("delivery_id", sa.String(36), sa.ForeignKey("webhook_deliveries.id"), nullable=False),
    sa.Column("attempt", sa.Integer(), nullable=False),
    sa.Column("attempted_at", UTCDateTime(), nullable=False),
    sa.Column("success", sa.Boolean(), nullable=False),
    sa.Column("status_code", sa.Integer(), nullable=True),
    sa.Column("error", sa.Text(), nullable=True),
    sa.Column("latency_ms", sa.Float(), nullable=False),
    sa.Index("ix_webhook_delivery_attempts_delivery_id_attempt", "delivery_id", "attempt"),
)

audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("occurred_at", UTCDateTime(), nullable=False, index=True),
    sa.Column("actor", sa.String(255), nullable=False, index=True),
    sa.Column("action", sa.String(128), nullable=False),
    sa.Column("proxy_id", sa.String(128), nullable=True, index=True),
    sa.Column("target", sa.String(255), nullable=True),
    sa.Column("result", sa.String(64), nullable=False),
    sa.Column("status_code", sa.Integer(), nullable=True),
    sa.Column("request_id", sa.String(64), nullable=True),
    sa.Column("details", sa.JSON(), nullable=True),
)


# --- leases (``store.leases``) ----------------------------------------------------------------

leases = sa.Table(
    "pfo_leases",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("holder", sa.String(255), nullable=False),
    # Fencing counter: grows whenever the lease starts a new term (another holder, or the same
    # one after it had expired or been released); never reset, so rows are never deleted.
    sa.Column("epoch", sa.BigInteger(), nullable=False),
    sa.Column("acquired_at", UTCDateTime(), nullable=False),
    sa.Column("expires_at", UTCDateTime(), nullable=False),
)
