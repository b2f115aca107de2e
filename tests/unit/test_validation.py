"""Input validation at the domain boundary: codes, fields, defaults and partial updates."""

from __future__ import annotations

import dataclasses
import math
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy_failover.core.errors import ErrorCode, InvalidInput
from proxy_failover.core.model import (
    AdminState,
    CheckResult,
    FailoverConfig,
    FailoverStrategy,
    HealthCheckSpec,
    HealthCheckType,
    HealthStatus,
    LoadBalancingAlgorithm,
    MetricSample,
    RedundancyLevel,
    RedundancyStatus,
)
from proxy_failover.core.validation import (
    apply_instance_patch,
    build_config,
    build_instance,
    parse_check_result,
    parse_expected_status,
    parse_health_status,
    parse_metric_sample,
    status_matches,
    validate_proxy_id,
    validate_redundancy_override,
)
from tests.helpers.clock import T0
from tests.helpers.factories import PROXY, USER, inst

LATER = T0 + timedelta(minutes=5)
INVALID = ErrorCode.INVALID_INPUT


def raises(code: ErrorCode, field: str | None = None) -> Any:
    """Context manager asserting an InvalidInput with ``code`` (and ``details['field']``)."""

    class _Check:
        def __enter__(self) -> None:
            return None

        def __exit__(
            self, kind: type[BaseException] | None, error: BaseException | None, tb: object
        ) -> bool:
            assert isinstance(error, InvalidInput), f"expected InvalidInput, got {error!r}"
            assert error.code is code, error
            assert error.status_code == 400
            assert error.message
            if field is not None:
                assert error.details.get("field") == field, error.details
            return True

    return _Check()


# --- proxy id ---------------------------------------------------------------------------------


@pytest.mark.parametrize("proxy_id", ["p", "proxy-123", "a.b_c:d-E9", "x" * 128, "Failover"])
def test_valid_proxy_ids(proxy_id: str) -> None:
    assert validate_proxy_id(proxy_id) == proxy_id


@pytest.mark.parametrize(
    "proxy_id",
    ["", "x" * 129, "has space", "slash/no", "ümlaut", "failover", "instances", 5, None, "a\n"],
)
def test_invalid_proxy_ids(proxy_id: object) -> None:
    with raises(INVALID, "proxyId"):
        validate_proxy_id(proxy_id)


# --- configuration ----------------------------------------------------------------------------


def test_new_config_gets_spec_defaults() -> None:
    config = build_config(PROXY, USER, {}, None, T0)
    assert config == FailoverConfig(proxy_id=PROXY, user_id=USER, created_at=T0, updated_at=T0)
    assert config.health_check == HealthCheckSpec(HealthCheckType.HTTP, "/health", "200-399")
    assert config.health_check_timeout_seconds == 5.0


def test_seed_camel_case_and_snake_case_keys_are_both_accepted() -> None:
    camel = build_config(
        PROXY,
        USER,
        {
            "failoverStrategy": "round_robin",
            "healthCheckIntervalSeconds": 10,
            "unhealthyThreshold": 5,
            "enableAutoFailover": False,
        },
        None,
        T0,
    )
    snake = build_config(
        PROXY,
        USER,
        {
            "failover_strategy": "round_robin",
            "health_check_interval_seconds": 10,
            "unhealthy_threshold": 5,
            "enable_auto_failover": False,
        },
        None,
        T0,
    )
    assert camel == snake
    assert camel.failover_strategy is FailoverStrategy.ROUND_ROBIN
    assert camel.health_check_interval_seconds == 10.0
    assert camel.unhealthy_threshold == 5
    assert camel.enable_auto_failover is False


def test_every_field_can_be_set() -> None:
    config = build_config(
        PROXY,
        USER,
        {
            "failoverStrategy": "least_connections",
            "healthCheckIntervalSeconds": 0.5,
            "healthCheckTimeoutSeconds": 0.25,
            "fastIntervalSeconds": 0.1,
            "downIntervalSeconds": 3600,
            "unhealthyThreshold": 1,
            "healthyThreshold": 100,
            "enableAutoFailover": True,
            "enableAutoRecovery": False,
            "maxRecoveryAttempts": 0,
            "recoveryBackoffSeconds": 0,
            "enableAutoFailback": True,
            "failbackDelaySeconds": 86400,
            "enableLoadBalancing": True,
            "loadBalancingAlgorithm": "weighted",
            "healthCheck": {"type": "tcp", "path": "/ready", "expectedStatus": 204},
        },
        None,
        T0,
    )
    assert config.failover_strategy is FailoverStrategy.LEAST_CONNECTIONS
    assert (config.health_check_interval_seconds, config.health_check_timeout_seconds) == (
        0.5,
        0.25,
    )
    assert (config.fast_interval_seconds, config.down_interval_seconds) == (0.1, 3600.0)
    assert (config.unhealthy_threshold, config.healthy_threshold, config.max_recovery_attempts) == (
        1,
        100,
        0,
    )
    assert config.enable_auto_recovery is False
    assert config.enable_auto_failback is True
    assert config.enable_load_balancing is True
    assert config.load_balancing_algorithm is LoadBalancingAlgorithm.WEIGHTED
    assert (config.recovery_backoff_seconds, config.failback_delay_seconds) == (0.0, 86400.0)
    assert config.health_check == HealthCheckSpec(HealthCheckType.TCP, "/ready", "204")


@pytest.mark.parametrize(
    ("data", "code", "field"),
    [
        ({"failoverStrategy": "random"}, ErrorCode.INVALID_STRATEGY, "failoverStrategy"),
        ({"failoverStrategy": 1}, ErrorCode.INVALID_STRATEGY, "failoverStrategy"),
        ({"loadBalancingAlgorithm": "random"}, INVALID, "loadBalancingAlgorithm"),
        ({"surprise": 1}, INVALID, "surprise"),
        ({"healthCheckIntervalSeconds": 0.09}, INVALID, "healthCheckIntervalSeconds"),
        ({"healthCheckIntervalSeconds": 3601}, INVALID, "healthCheckIntervalSeconds"),
        ({"healthCheckIntervalSeconds": True}, INVALID, "healthCheckIntervalSeconds"),
        ({"healthCheckIntervalSeconds": "30"}, INVALID, "healthCheckIntervalSeconds"),
        ({"healthCheckIntervalSeconds": math.nan}, INVALID, "healthCheckIntervalSeconds"),
        ({"healthCheckIntervalSeconds": math.inf}, INVALID, "healthCheckIntervalSeconds"),
        ({"healthCheckIntervalSeconds": 10**400}, INVALID, "healthCheckIntervalSeconds"),
        ({"healthCheckTimeoutSeconds": 0.01}, INVALID, "healthCheckTimeoutSeconds"),
        ({"healthCheckTimeoutSeconds": 31}, INVALID, "healthCheckTimeoutSeconds"),
        (
            {"healthCheckIntervalSeconds": 2, "healthCheckTimeoutSeconds": 3},
            INVALID,
            "healthCheckTimeoutSeconds",
        ),
        ({"fastIntervalSeconds": 0}, INVALID, "fastIntervalSeconds"),
        ({"downIntervalSeconds": "1"}, INVALID, "downIntervalSeconds"),
        ({"unhealthyThreshold": 0}, INVALID, "unhealthyThreshold"),
        ({"unhealthyThreshold": 101}, INVALID, "unhealthyThreshold"),
        ({"unhealthyThreshold": 3.0}, INVALID, "unhealthyThreshold"),
        ({"healthyThreshold": True}, INVALID, "healthyThreshold"),
        ({"healthyThreshold": 10**400}, INVALID, "healthyThreshold"),
        ({"maxRecoveryAttempts": -1}, INVALID, "maxRecoveryAttempts"),
        ({"recoveryBackoffSeconds": -0.5}, INVALID, "recoveryBackoffSeconds"),
        ({"failbackDelaySeconds": 86401}, INVALID, "failbackDelaySeconds"),
        ({"enableAutoFailover": 1}, INVALID, "enableAutoFailover"),
        ({"enableLoadBalancing": "true"}, INVALID, "enableLoadBalancing"),
        ({"enableAutoFailover": True, "enable_auto_failover": True}, INVALID, "enableAutoFailover"),
        ({"healthCheck": "http"}, INVALID, "healthCheck"),
        ({"healthCheck": {"kind": "http"}}, INVALID, "kind"),
        ({"healthCheck": {"type": "udp"}}, INVALID, "healthCheck.type"),
        ({"healthCheck": {"path": "health"}}, INVALID, "healthCheck.path"),
        ({"healthCheck": {"path": "/a b"}}, INVALID, "healthCheck.path"),
        ({"healthCheck": {"path": 5}}, INVALID, "healthCheck.path"),
        ({"healthCheck": {"expectedStatus": "600"}}, INVALID, "healthCheck.expectedStatus"),
        ({"healthCheck": {"expectedStatus": True}}, INVALID, "healthCheck.expectedStatus"),
        ({"healthCheck": {"expectedStatus": ["200"]}}, INVALID, "healthCheck.expectedStatus"),
    ],
)
def test_invalid_config_values(data: dict[str, Any], code: ErrorCode, field: str) -> None:
    with raises(code, field):
        build_config(PROXY, USER, data, None, T0)


@pytest.mark.parametrize("data", [None, [], "config"])
def test_config_must_be_an_object(data: Any) -> None:
    with raises(INVALID, "config"):
        build_config(PROXY, USER, data, None, T0)


def test_non_string_keys_are_unknown_fields() -> None:
    with raises(INVALID, "1"):
        build_config(PROXY, USER, {1: 2}, None, T0)  # type: ignore[dict-item]


EXISTING = FailoverConfig(
    proxy_id=PROXY,
    user_id="owner",
    id="cfg-1",
    failover_strategy=FailoverStrategy.ROUND_ROBIN,
    health_check_interval_seconds=20.0,
    health_check_timeout_seconds=4.0,
    unhealthy_threshold=5,
    health_check=HealthCheckSpec(HealthCheckType.HTTPS, "/status", "200"),
    created_at=T0,
    updated_at=T0,
)


def test_partial_update_changes_only_given_fields() -> None:
    updated = build_config(
        PROXY,
        "someone-else",
        {"unhealthyThreshold": 7, "healthCheck": {"path": "/live"}},
        EXISTING,
        LATER,
    )
    assert updated == dataclasses.replace(
        EXISTING,
        unhealthy_threshold=7,
        health_check=HealthCheckSpec(HealthCheckType.HTTPS, "/live", "200"),
        updated_at=LATER,
    )
    assert updated.user_id == "owner"
    assert updated.created_at == T0


def test_lowering_the_interval_below_a_stored_timeout_resets_the_timeout() -> None:
    updated = build_config(PROXY, USER, {"healthCheckIntervalSeconds": 2}, EXISTING, LATER)
    assert (updated.health_check_interval_seconds, updated.health_check_timeout_seconds) == (
        2.0,
        2.0,
    )
    kept = build_config(PROXY, USER, {"healthCheckIntervalSeconds": 10}, EXISTING, LATER)
    assert kept.health_check_timeout_seconds == 4.0
    with raises(INVALID, "healthCheckTimeoutSeconds"):
        build_config(
            PROXY,
            USER,
            {"healthCheckIntervalSeconds": 2, "healthCheckTimeoutSeconds": 3},
            EXISTING,
            LATER,
        )
    with raises(INVALID, "healthCheckTimeoutSeconds"):
        build_config(PROXY, USER, {"healthCheckTimeoutSeconds": 25}, EXISTING, LATER)


def test_new_config_timeout_defaults_to_min_of_five_and_interval() -> None:
    assert (
        build_config(
            PROXY, USER, {"healthCheckIntervalSeconds": 1}, None, T0
        ).health_check_timeout_seconds
        == 1.0
    )
    assert (
        build_config(
            PROXY, USER, {"healthCheckIntervalSeconds": 60}, None, T0
        ).health_check_timeout_seconds
        == 5.0
    )


def test_null_fast_interval_means_the_interval() -> None:
    base = dataclasses.replace(EXISTING, fast_interval_seconds=1.0)
    assert (
        build_config(PROXY, USER, {"fastIntervalSeconds": None}, base, LATER).fast_interval_seconds
        is None
    )


# --- instances --------------------------------------------------------------------------------


def test_build_instance_with_defaults() -> None:
    instance = build_instance(PROXY, USER, "id-1", {"instanceName": "proxy-instance-1"}, T0)
    assert instance.id == "id-1"
    assert (instance.proxy_id, instance.user_id, instance.instance_name) == (
        PROXY,
        USER,
        "proxy-instance-1",
    )
    assert (instance.instance_type, instance.priority, instance.weight) == ("standard", 100, 100)
    assert instance.admin_state is AdminState.ENABLED
    assert instance.health_status is HealthStatus.UNKNOWN
    assert (instance.created_at, instance.updated_at, instance.status_changed_at) == (T0, T0, T0)
    assert instance.endpoint is None
    assert instance.metadata == {}


def test_build_instance_with_every_field() -> None:
    metadata = {"region": "eu", "tags": ["a"], "nested": {"n": 1.5}}
    instance = build_instance(
        PROXY,
        USER,
        "id-1",
        {
            "instanceName": "edge-a",
            "instance_type": "rtmp",
            "endpoint": "http://10.0.0.1:8080/base",
            "recoveryUrl": "https://ops.example/recover",
            "priority": -1_000_000,
            "weight": 0,
            "adminState": "drain",
            "metadata": metadata,
        },
        T0,
    )
    assert instance.instance_type == "rtmp"
    assert instance.endpoint == "http://10.0.0.1:8080/base"
    assert instance.recovery_url == "https://ops.example/recover"
    assert (instance.priority, instance.weight) == (-1_000_000, 0)
    assert instance.admin_state is AdminState.DRAIN
    assert instance.metadata == metadata
    metadata["nested"]["n"] = 2  # type: ignore[index]
    assert instance.metadata["nested"] == {"n": 1.5}  # a copy, not the caller's object


@pytest.mark.parametrize(
    "endpoint",
    ["edge-a:1935", "10.0.0.1:65535", "[::1]:8080", "https://edge.example", "http://[::1]:80/x"],
)
def test_valid_endpoints(endpoint: str) -> None:
    assert (
        build_instance(PROXY, USER, "i", {"instanceName": "n", "endpoint": endpoint}, T0).endpoint
        == endpoint
    )


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({}, "instanceName"),
        ({"instanceName": ""}, "instanceName"),
        ({"instanceName": "   "}, "instanceName"),
        ({"instanceName": "x" * 129}, "instanceName"),
        ({"instanceName": "tab\there"}, "instanceName"),
        ({"instanceName": 5}, "instanceName"),
        ({"instanceName": "n", "instanceType": ""}, "instanceType"),
        ({"instanceName": "n", "priority": 1_000_001}, "priority"),
        ({"instanceName": "n", "priority": "1"}, "priority"),
        ({"instanceName": "n", "weight": -1}, "weight"),
        ({"instanceName": "n", "weight": 1001}, "weight"),
        ({"instanceName": "n", "weight": 1.5}, "weight"),
        ({"instanceName": "n", "adminState": "off"}, "adminState"),
        ({"instanceName": "n", "metadata": []}, "metadata"),
        ({"instanceName": "n", "metadata": {"x": math.nan}}, "metadata"),
        ({"instanceName": "n", "metadata": {"x": object()}}, "metadata"),
        ({"instanceName": "n", "healthStatus": "healthy"}, "healthStatus"),
        ({"instanceName": "n", "endpoint": "no-port"}, "endpoint"),
        ({"instanceName": "n", "endpoint": "host:0"}, "endpoint"),
        ({"instanceName": "n", "endpoint": "host:70000"}, "endpoint"),
        ({"instanceName": "n", "endpoint": "host:http"}, "endpoint"),
        ({"instanceName": "n", "endpoint": ":80"}, "endpoint"),
        ({"instanceName": "n", "endpoint": "bad host:80"}, "endpoint"),
        ({"instanceName": "n", "endpoint": "[]:80"}, "endpoint"),
        ({"instanceName": "n", "endpoint": "ftp://host:21"}, "endpoint"),
        ({"instanceName": "n", "endpoint": "http://:80"}, "endpoint"),
        ({"instanceName": "n", "endpoint": "http://host:99999"}, "endpoint"),
        ({"instanceName": "n", "endpoint": "http://host:0/"}, "endpoint"),
        ({"instanceName": "n", "endpoint": "http://host/a b"}, "endpoint"),
        ({"instanceName": "n", "endpoint": 8080}, "endpoint"),
        ({"instanceName": "n", "recoveryUrl": "host:80"}, "recoveryUrl"),
        ({"instanceName": "n", "recoveryUrl": "http://[::1"}, "recoveryUrl"),
    ],
)
def test_invalid_instance_data(data: dict[str, Any], field: str) -> None:
    with raises(INVALID, field):
        build_instance(PROXY, USER, "i", data, T0)


@pytest.mark.parametrize(
    ("address", "valid"),
    [
        ("relay:1935", True),
        ("10.0.0.1:65535", True),
        ("[::1]:8080", True),
        ("relay", False),
        ("relay:0", False),
        ("http://relay:80", False),  # where traffic goes is host:port, never a URL
        ("x" * 262, False),
    ],
)
def test_traffic_address_is_host_and_port(address: str, valid: bool) -> None:
    data = {"instanceName": "n", "trafficAddress": address}
    if valid:
        assert build_instance(PROXY, USER, "i", data, T0).traffic_address == address
        patched = apply_instance_patch(inst("a"), {"traffic_address": address}, LATER)
        assert patched.traffic_address == address
    else:
        with raises(INVALID, "trafficAddress"):
            build_instance(PROXY, USER, "i", data, T0)


def test_patch_changes_only_given_fields() -> None:
    instance = inst("a", endpoint="a:1", recovery_url="http://r/x", metadata={"k": 1})
    patched = apply_instance_patch(
        instance, {"priority": 5, "endpoint": None, "recovery_url": None, "metadata": {}}, LATER
    )
    assert patched == dataclasses.replace(
        instance, priority=5, endpoint=None, recovery_url=None, metadata={}, updated_at=LATER
    )
    assert apply_instance_patch(instance, {}, LATER) is instance


def test_patch_rejects_fields_it_does_not_own() -> None:
    with raises(INVALID, "instanceName"):
        apply_instance_patch(inst("a"), {"instanceName": "b"}, LATER)
    with raises(INVALID, "weight"):
        apply_instance_patch(inst("a"), {"weight": 2000}, LATER)


def test_entering_maintenance_makes_health_unknown() -> None:
    instance = inst(
        "a", health=HealthStatus.UNHEALTHY, consecutive_failures=4, status_changed_at=T0
    )
    patched = apply_instance_patch(instance, {"adminState": "maintenance"}, LATER)
    assert patched.admin_state is AdminState.MAINTENANCE
    assert (patched.health_status, patched.consecutive_failures, patched.consecutive_successes) == (
        HealthStatus.UNKNOWN,
        0,
        0,
    )
    assert patched.status_changed_at == LATER
    # already unknown: the status did not change, so neither does its timestamp
    unknown = inst("b", health=HealthStatus.UNKNOWN, status_changed_at=T0)
    assert (
        apply_instance_patch(unknown, {"adminState": "maintenance"}, LATER).status_changed_at == T0
    )
    # staying in maintenance or draining keeps the health as it is
    again = apply_instance_patch(patched, {"adminState": "maintenance", "weight": 3}, LATER)
    assert again.weight == 3
    drained = apply_instance_patch(instance, {"adminState": "drain"}, LATER)
    assert drained.health_status is HealthStatus.UNHEALTHY


# --- health, metrics, checks ------------------------------------------------------------------


@pytest.mark.parametrize("value", list(HealthStatus))
def test_parse_health_status(value: HealthStatus) -> None:
    assert parse_health_status(value.value) is value


@pytest.mark.parametrize("value", ["Healthy", "down", "", None, 1, True])
def test_invalid_health_status(value: object) -> None:
    with raises(ErrorCode.INVALID_HEALTH_STATUS, "healthStatus"):
        parse_health_status(value)


def test_metric_sample_accepts_both_key_styles() -> None:
    sample = parse_metric_sample(
        {
            "cpuPercent": 85,
            "memory_percent": 90.5,
            "requestRate": 10,
            "averageLatencyMs": 12.5,
            "errorRate": 1,
            "connection_count": 7,
            "throughputMbps": 0,
        },
        require_one=True,
    )
    assert sample == MetricSample(85.0, 90.5, 10.0, 12.5, 1.0, 7, 0.0)


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"cpuPercent": 100.1}, "cpuPercent"),
        ({"memoryPercent": -1}, "memoryPercent"),
        ({"errorRate": 1.01}, "errorRate"),
        ({"connectionCount": 1.5}, "connectionCount"),
        ({"connectionCount": -1}, "connectionCount"),
        ({"requestRate": True}, "requestRate"),
        ({"throughputMbps": math.inf}, "throughputMbps"),
        ({"averageLatencyMs": "5"}, "averageLatencyMs"),
        ({"gpuPercent": 5}, "gpuPercent"),
        ([1], "metrics"),
    ],
)
def test_invalid_metrics(data: Any, field: str) -> None:
    with raises(ErrorCode.INVALID_METRICS, field):
        parse_metric_sample(data, require_one=False)


def test_empty_metrics_are_none_unless_one_is_required() -> None:
    assert parse_metric_sample(None, require_one=False) is None
    assert parse_metric_sample({}, require_one=False) is None
    assert parse_metric_sample({"cpuPercent": None}, require_one=False) is None
    assert parse_metric_sample(
        {"cpuPercent": None, "errorRate": 0.5}, require_one=True
    ) == MetricSample(error_rate=0.5)
    for empty in (None, {}, {"cpuPercent": None}):
        with raises(ErrorCode.INVALID_METRICS, "metrics"):
            parse_metric_sample(empty, require_one=True)


def test_parse_check_result() -> None:
    assert parse_check_result({"success": True}) == CheckResult(True)
    assert parse_check_result(
        {"success": False, "latencyMs": 12, "error": "refused"}
    ) == CheckResult(False, 12.0, "refused")
    assert parse_check_result({"success": False, "latency_ms": None, "error": None}) == CheckResult(
        False
    )


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({}, "success"),
        ({"success": 1}, "success"),
        ({"success": "true"}, "success"),
        ({"success": True, "latencyMs": -1}, "latencyMs"),
        ({"success": True, "error": 5}, "error"),
        ({"success": True, "error": "x" * 1001}, "error"),
        ({"success": True, "status": 200}, "status"),
    ],
)
def test_invalid_check_results(data: dict[str, Any], field: str) -> None:
    with raises(INVALID, field):
        parse_check_result(data)


# --- redundancy override ----------------------------------------------------------------------

CURRENT = RedundancyStatus(
    proxy_id=PROXY,
    total_instances=3,
    healthy_instances=2,
    unhealthy_instances=0,
    active_instance_id="a",
    backup_instance_ids=("b",),
    redundancy_level=RedundancyLevel.MULTI,
    is_degraded=True,
    epoch=7,
)


def test_seed_override_is_stored_and_marked() -> None:
    body = {
        "totalInstances": 2,
        "healthyInstances": 2,
        "activeInstanceId": "a",
        "redundancyLevel": "dual",
        "isDegraded": False,
    }
    result = validate_redundancy_override(body, CURRENT, LATER)
    assert result == dataclasses.replace(
        CURRENT,
        total_instances=2,
        healthy_instances=2,
        unhealthy_instances=0,
        redundancy_level=RedundancyLevel.DUAL,
        is_degraded=False,
        overridden=True,
        updated_at=LATER,
    )


def test_override_derives_omitted_values() -> None:
    # unhealthy omitted = total - healthy; level derived from the total
    result = validate_redundancy_override(
        {"totalInstances": 4, "healthyInstances": 1}, CURRENT, LATER
    )
    assert (result.total_instances, result.healthy_instances, result.unhealthy_instances) == (
        4,
        1,
        3,
    )
    assert result.redundancy_level is RedundancyLevel.MULTI
    assert result.is_degraded is True
    # no count given: counts stay as they are
    result = validate_redundancy_override({"isDegraded": False}, CURRENT, LATER)
    assert (result.total_instances, result.healthy_instances, result.unhealthy_instances) == (
        3,
        2,
        0,
    )
    assert result.overridden
    assert result.epoch == 7
    assert result.backup_instance_ids == ("b",)
    result = validate_redundancy_override({"unhealthy_instances": 1}, CURRENT, LATER)
    assert (result.total_instances, result.healthy_instances, result.unhealthy_instances) == (
        3,
        2,
        1,
    )


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({}, "body"),
        ({"totalInstances": -1}, "totalInstances"),
        ({"totalInstances": 1.0}, "totalInstances"),
        ({"healthyInstances": True}, "healthyInstances"),
        ({"totalInstances": 1, "healthyInstances": 2}, "healthyInstances"),
        ({"totalInstances": 2, "healthyInstances": 1, "unhealthyInstances": 2}, "healthyInstances"),
        ({"totalInstances": 2, "redundancyLevel": "multi"}, "redundancyLevel"),
        ({"redundancyLevel": "dual"}, "redundancyLevel"),
        ({"redundancyLevel": "triple"}, "redundancyLevel"),
        ({"isDegraded": "no"}, "isDegraded"),
        ({"activeInstanceId": "b"}, "activeInstanceId"),
        ({"activeInstanceId": None}, "activeInstanceId"),
        ({"lastFailoverAt": "now"}, "lastFailoverAt"),
        ({"updatedAt": 5}, "updatedAt"),
        ({"overridden": "yes"}, "overridden"),
        ({"proxyId": "other"}, "proxyId"),
        ({"epoch": 6}, "epoch"),
        ({"epoch": 8}, "epoch"),
        ({"totalInstances": 2**31}, "totalInstances"),
        ({"lastFailoverReason": "x" * 1001}, "lastFailoverReason"),
        ({"lastFailoverReason": 5}, "lastFailoverReason"),
        ({"backupInstanceIds": "b"}, "backupInstanceIds"),
        ({"backupInstanceIds": ["b", "b"]}, "backupInstanceIds"),
        ({"backupInstanceIds": ["a"]}, "backupInstanceIds"),
        ({"backupInstanceIds": ["zz"]}, "backupInstanceIds"),
        ({"backupInstanceIds": [7]}, "backupInstanceIds"),
        ({"backupInstanceIds": ["c"] * 1001}, "backupInstanceIds"),
        ({"somethingElse": 1}, "somethingElse"),
    ],
)
def test_invalid_redundancy_overrides(data: dict[str, Any], field: str) -> None:
    with raises(ErrorCode.INVALID_REDUNDANCY, field):
        validate_redundancy_override(data, CURRENT, LATER, INSTANCE_IDS)


INSTANCE_IDS = frozenset({"a", "b", "c"})


def as_get_returns(status: RedundancyStatus) -> dict[str, Any]:
    """The body of GET /proxy/{id}/redundancy for ``status`` (camelCase, times as text)."""
    return {
        "proxyId": status.proxy_id,
        "totalInstances": status.total_instances,
        "healthyInstances": status.healthy_instances,
        "unhealthyInstances": status.unhealthy_instances,
        "activeInstanceId": status.active_instance_id,
        "backupInstanceIds": list(status.backup_instance_ids),
        "lastFailoverAt": "2026-01-01T00:00:00.000Z",
        "lastFailoverReason": status.last_failover_reason,
        "redundancyLevel": status.redundancy_level.value,
        "isDegraded": status.is_degraded,
        "epoch": status.epoch,
        "overridden": status.overridden,
        "updatedAt": None,
    }


def test_get_then_change_one_count_then_put_is_accepted() -> None:
    body = as_get_returns(CURRENT) | {"healthyInstances": 3}
    result = validate_redundancy_override(body, CURRENT, LATER, INSTANCE_IDS)
    assert result == dataclasses.replace(
        CURRENT, healthy_instances=3, overridden=True, updated_at=LATER
    )


def test_override_stores_backups_and_reason_and_ignores_server_fields() -> None:
    body = {
        "backupInstanceIds": ["c", "b"],
        "lastFailoverReason": "operator note",
        "lastFailoverAt": "2020-01-01T00:00:00Z",
        "updatedAt": "2020-01-01T00:00:00Z",
        "overridden": False,
        "epoch": 7,
        "proxyId": PROXY,
    }
    result = validate_redundancy_override(body, CURRENT, LATER, INSTANCE_IDS)
    assert result.backup_instance_ids == ("c", "b")
    assert result.last_failover_reason == "operator note"
    assert (result.last_failover_at, result.updated_at) == (CURRENT.last_failover_at, LATER)
    assert result.overridden is True
    assert (result.epoch, result.active_instance_id) == (7, "a")
    # null clears the reason; leaving it out keeps the current one
    noted = dataclasses.replace(CURRENT, last_failover_reason="kept")
    assert (
        validate_redundancy_override(
            {"lastFailoverReason": None}, noted, LATER
        ).last_failover_reason
        is None
    )
    assert (
        validate_redundancy_override({"isDegraded": True}, noted, LATER).last_failover_reason
        == "kept"
    )
    assert (
        validate_redundancy_override({"backupInstanceIds": []}, CURRENT, LATER).backup_instance_ids
        == ()
    )


def test_override_accepts_the_current_active_including_none() -> None:
    none_active = dataclasses.replace(CURRENT, active_instance_id=None)
    assert (
        validate_redundancy_override(
            {"activeInstanceId": None}, none_active, LATER
        ).active_instance_id
        is None
    )
    assert (
        validate_redundancy_override(
            {"activeInstanceId": "a", "redundancyLevel": "multi"}, CURRENT, LATER
        ).active_instance_id
        == "a"
    )


# --- expected status --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "ranges"),
    [
        ("200", ((200, 200),)),
        ("200-399", ((200, 399),)),
        ("200,204,300-399", ((200, 200), (204, 204), (300, 399))),
        (" 100 , 599 ", ((100, 100), (599, 599))),
    ],
)
def test_parse_expected_status(text: str, ranges: tuple[tuple[int, int], ...]) -> None:
    assert parse_expected_status(text) == ranges


@pytest.mark.parametrize(
    "text", ["", " ", "2000", "99", "600", "399-200", "200-", "abc", "200,,204", "200;204", 200]
)
def test_invalid_expected_status(text: Any) -> None:
    with raises(INVALID, "healthCheck.expectedStatus"):
        parse_expected_status(text)


@settings(max_examples=150, deadline=None)
@given(low=st.integers(100, 599), span=st.integers(0, 100), status=st.integers(0, 999))
def test_status_matches_exactly_the_inclusive_range(low: int, span: int, status: int) -> None:
    high = min(low + span, 599)
    ranges = parse_expected_status(f"{low}-{high}")
    assert status_matches(ranges, status) is (low <= status <= high)


@settings(max_examples=150, deadline=None)
@given(
    ranges=st.lists(
        st.tuples(st.integers(100, 599), st.integers(0, 50)).map(lambda p: (p[0], p[0] + p[1])),
        max_size=5,
    ),
    status=st.integers(0, 999),
)
def test_status_matches_any_of_several_ranges(ranges: list[tuple[int, int]], status: int) -> None:
    # several ranges ("200,301-302"), and none: a match in any one of them, never otherwise
    expected = any(low <= status <= high for low, high in ranges)
    assert status_matches(tuple(ranges), status) is expected


def _metric_is_valid(key: str, value: object) -> bool:
    if value is None:
        return True
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    if key == "connectionCount" and not isinstance(value, int):
        return False
    limit = {"cpuPercent": 100, "errorRate": 1}.get(key, math.inf)
    return math.isfinite(value) and 0 <= value <= limit


@settings(max_examples=150, deadline=None)
@given(
    data=st.dictionaries(
        st.sampled_from(["cpuPercent", "errorRate", "connectionCount", "requestRate"]),
        st.one_of(st.integers(-5, 200), st.floats(allow_nan=True), st.booleans(), st.none()),
    )
)
def test_metric_samples_are_valid_or_rejected_with_007(data: dict[str, Any]) -> None:
    if not all(_metric_is_valid(k, v) for k, v in data.items()):
        with raises(ErrorCode.INVALID_METRICS):
            parse_metric_sample(data, require_one=False)
        return
    sample = parse_metric_sample(data, require_one=False)
    present = {k: v for k, v in data.items() if v is not None}
    if not present:
        assert sample is None
        return
    assert sample is not None
    assert sample.cpu_percent == present.get("cpuPercent")
    assert sample.error_rate == present.get("errorRate")
    assert sample.connection_count == present.get("connectionCount")
    assert sample.request_rate == present.get("requestRate")
