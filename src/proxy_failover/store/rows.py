"""Ids, and table rows <-> the frozen dataclasses of ``core.model``, for every store table the
units of work read and write (configurations, instances, events, redundancy, metric samples).
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from proxy_failover.core.model import (
    AdminState,
    EventStatus,
    EventType,
    FailoverConfig,
    FailoverEvent,
    FailoverStrategy,
    HealthCheckSpec,
    HealthCheckType,
    HealthStatus,
    Instance,
    LoadBalancingAlgorithm,
    MetricSample,
    RedundancyLevel,
    RedundancyStatus,
    StoredMetricSample,
)


def is_uuid(value: object) -> bool:
    """Ids are server-made UUID strings; anything else simply finds nothing."""
    if not isinstance(value, str) or len(value) != 36:
        return False
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def new_id() -> str:
    return str(uuid.uuid4())


def config_values(config: FailoverConfig) -> dict[str, Any]:
    return {
        "id": config.id,
        "proxy_id": config.proxy_id,
        "user_id": config.user_id,
        "failover_strategy": config.failover_strategy.value,
        "health_check_interval_seconds": config.health_check_interval_seconds,
        "health_check_timeout_seconds": config.health_check_timeout_seconds,
        "fast_interval_seconds": config.fast_interval_seconds,
        "down_interval_seconds": config.down_interval_seconds,
        "unhealthy_threshold": config.unhealthy_threshold,
        "healthy_threshold": config.healthy_threshold,
        "enable_auto_failover": config.enable_auto_failover,
        "enable_auto_recovery": config.enable_auto_recovery,
        "max_recovery_attempts": config.max_recovery_attempts,
        "recovery_backoff_seconds": config.recovery_backoff_seconds,
        "enable_auto_failback": config.enable_auto_failback,
        "failback_delay_seconds": config.failback_delay_seconds,
        "enable_load_balancing": config.enable_load_balancing,
        "load_balancing_algorithm": config.load_balancing_algorithm.value,
        "health_report_ttl_seconds": config.health_report_ttl_seconds,
        "health_check": {
            "type": config.health_check.type.value,
            "path": config.health_check.path,
            "expected_status": config.health_check.expected_status,
        },
        "created_at": config.created_at,
        "updated_at": config.updated_at,
    }


def config_from(row: Mapping[Any, Any]) -> FailoverConfig:
    check = dict(row["health_check"] or {})
    return FailoverConfig(
        id=row["id"],
        proxy_id=row["proxy_id"],
        user_id=row["user_id"],
        failover_strategy=FailoverStrategy(row["failover_strategy"]),
        health_check_interval_seconds=row["health_check_interval_seconds"],
        health_check_timeout_seconds=row["health_check_timeout_seconds"],
        fast_interval_seconds=row["fast_interval_seconds"],
        down_interval_seconds=row["down_interval_seconds"],
        unhealthy_threshold=row["unhealthy_threshold"],
        healthy_threshold=row["healthy_threshold"],
        enable_auto_failover=row["enable_auto_failover"],
        enable_auto_recovery=row["enable_auto_recovery"],
        max_recovery_attempts=row["max_recovery_attempts"],
        recovery_backoff_seconds=row["recovery_backoff_seconds"],
        enable_auto_failback=row["enable_auto_failback"],
        failback_delay_seconds=row["failback_delay_seconds"],
        enable_load_balancing=row["enable_load_balancing"],
        load_balancing_algorithm=LoadBalancingAlgorithm(row["load_balancing_algorithm"]),
        health_report_ttl_seconds=row["health_report_ttl_seconds"],
        health_check=HealthCheckSpec(
            type=HealthCheckType(check.get("type", HealthCheckType.HTTP.value)),
            path=check.get("path", "/health"),
            expected_status=check.get("expected_status", "200-399"),
        ),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


INSTANCE_FIELDS = tuple(f.name for f in dataclasses.fields(Instance))


def instance_values(instance: Instance) -> dict[str, Any]:
    values = {name: getattr(instance, name) for name in INSTANCE_FIELDS}
    values["admin_state"] = instance.admin_state.value
    values["health_status"] = instance.health_status.value
    values["metadata"] = dict(instance.metadata)
    return values


def instance_from(row: Mapping[Any, Any]) -> Instance:
    values = {name: row[name] for name in INSTANCE_FIELDS}
    values["admin_state"] = AdminState(row["admin_state"])
    values["health_status"] = HealthStatus(row["health_status"])
    values["metadata"] = dict(row["metadata"] or {})
    return Instance(**values)


EVENT_FIELDS = tuple(f.name for f in dataclasses.fields(FailoverEvent))


def event_values(event: FailoverEvent) -> dict[str, Any]:
    values = {name: getattr(event, name) for name in EVENT_FIELDS}
    values["event_type"] = event.event_type.value
    values["status"] = event.status.value
    return values


def event_from(row: Mapping[Any, Any]) -> FailoverEvent:
    values = {name: row[name] for name in EVENT_FIELDS}
    values["event_type"] = EventType(row["event_type"])
    values["status"] = EventStatus(row["status"])
    return FailoverEvent(**values)


def redundancy_values(status: RedundancyStatus) -> dict[str, Any]:
    return {
        "proxy_id": status.proxy_id,
        "total_instances": status.total_instances,
        "healthy_instances": status.healthy_instances,
        "unhealthy_instances": status.unhealthy_instances,
        "active_instance_id": status.active_instance_id,
        "backup_instance_ids": list(status.backup_instance_ids),
        "last_failover_at": status.last_failover_at,
        "last_failover_reason": status.last_failover_reason,
        "redundancy_level": status.redundancy_level.value,
        "is_degraded": status.is_degraded,
        "epoch": status.epoch,
        "overridden": status.overridden,
        "updated_at": status.updated_at,
    }


def redundancy_from(row: Mapping[Any, Any]) -> RedundancyStatus:
    return RedundancyStatus(
        proxy_id=row["proxy_id"],
        total_instances=row["total_instances"],
        healthy_instances=row["healthy_instances"],
        unhealthy_instances=row["unhealthy_instances"],
        active_instance_id=row["active_instance_id"],
        backup_instance_ids=tuple(row["backup_instance_ids"] or ()),
        last_failover_at=row["last_failover_at"],
        last_failover_reason=row["last_failover_reason"],
        redundancy_level=RedundancyLevel(row["redundancy_level"]),
        is_degraded=row["is_degraded"],
        epoch=row["epoch"],
        overridden=row["overridden"],
        updated_at=row["updated_at"],
    )


SAMPLE_FIELDS = tuple(f.name for f in dataclasses.fields(MetricSample))


def metric_from(row: sa.RowMapping) -> StoredMetricSample:
    return StoredMetricSample(
        id=row["id"],
        instance_id=row["instance_id"],
        proxy_id=row["proxy_id"],
        user_id=row["user_id"],
        sample=MetricSample(**{name: row[name] for name in SAMPLE_FIELDS}),
        recorded_at=row["recorded_at"],
    )


def metric_values(sample: StoredMetricSample) -> dict[str, Any]:
    values: dict[str, Any] = {name: getattr(sample.sample, name) for name in SAMPLE_FIELDS}
    return {
        "id": sample.id,
        "instance_id": sample.instance_id,
        "proxy_id": sample.proxy_id,
        "user_id": sample.user_id,
        "recorded_at": sample.recorded_at,
        **values,
    }
