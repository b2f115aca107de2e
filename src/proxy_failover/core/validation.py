"""Validation of input data at the domain boundary: configs, instances, health, metrics, overrides.

Accepts the seed's camelCase keys and snake_case alike, applies SPEC §3 defaults and ranges, and
raises ``InvalidInput`` with the SPEC code before anything is written. Every error names the
offending field (camelCase, as the API speaks) in ``details["field"]``.

Ranges, lengths and patterns come from ``core.limits`` (the table the API schema is generated
from); the strict type rules live in ``core.fields``. ``null`` is accepted only where a field is
optional.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from proxy_failover.core import fields, limits
from proxy_failover.core.errors import ErrorCode, InvalidInput
from proxy_failover.core.model import (
    AdminState,
    CheckResult,
    FailoverConfig,
    FailoverStrategy,
    HealthCheckSpec,
    HealthCheckType,
    HealthStatus,
    Instance,
    LoadBalancingAlgorithm,
    MetricSample,
    RedundancyLevel,
    RedundancyStatus,
)
from proxy_failover.core.redundancy import level_for

_RESERVED_PROXY_IDS = frozenset({"failover", "instances"})


def _valid_port(port_text: str) -> bool:
    return port_text.isdigit() and 1 <= int(port_text) <= 65535


def _http_url(value: object, field: str) -> str:
    """An absolute http(s) URL with a host and a valid port, without whitespace."""
    text = fields.text(value, field, limits.URL)
    if any(c.isspace() for c in text):
        raise fields.fail(f"{field} must not contain whitespace", field)
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise fields.fail(f"{field} is not a valid URL", field) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise fields.fail(f"{field} must be an http:// or https:// URL with a host", field)
    if port == 0:
        raise fields.fail(f"{field} has an invalid port", field)
    return text


def _is_host_port(text: str) -> bool:
    """``host:port`` with a DNS name or IPv4 host, or ``[v6]:port``; port 1-65535."""
    host, sep, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host_ok = len(host) > 2 and ":" in host
    else:
        host_ok = bool(host) and re.fullmatch(r"[A-Za-z0-9._-]+", host) is not None
    return bool(sep) and host_ok and _valid_port(port)


def _endpoint(value: object, field: str) -> str:
    """``host:port`` (IPv6 hosts in brackets) or an http(s) URL."""
    text = fields.text(value, field, limits.URL)
    if "://" in text:
        return _http_url(text, field)
    if not _is_host_port(text):
        raise fields.fail(
            f"{field} must be host:port (port 1-65535) or an http(s) URL (got {text!r})", field
        )
    return text


def _traffic_address(value: object, field: str) -> str:
    """``host:port`` (IPv6 hosts in brackets): where a data plane sends the instance's traffic."""
    text = fields.text(value, field, limits.ADDRESS)
    if not _is_host_port(text):
        raise fields.fail(f"{field} must be host:port (port 1-65535) (got {text!r})", field)
    return text


def _metadata(value: object, field: str) -> dict[str, Any]:
    """A JSON object of JSON values (finite numbers), deep-copied so callers cannot mutate it."""
    if not isinstance(value, dict):
        raise fields.fail(f"{field} must be a JSON object", field)
    if (problem := fields.unstorable_reason(value)) is not None:
        raise fields.fail(f"{field} {problem}", field)
    try:
        return dict(json.loads(json.dumps(value, allow_nan=False)))
    except (TypeError, ValueError):
        raise fields.fail(f"{field} must contain only JSON values", field) from None


def validate_proxy_id(proxy_id: object) -> str:
    """1-128 chars of [A-Za-z0-9._:-], not 'failover' or 'instances' (001)."""
    text = fields.string(proxy_id, "proxyId", limits.PROXY_ID)
    if text in _RESERVED_PROXY_IDS:
        raise fields.fail(f"proxyId {text!r} is a reserved word", "proxyId")
    return text


# --- configuration ----------------------------------------------------------------------------

_CONFIG_FIELDS = (
    "failover_strategy",
    "health_check_interval_seconds",
    "health_check_timeout_seconds",
    "fast_interval_seconds",
    "down_interval_seconds",
    "unhealthy_threshold",
    "healthy_threshold",
    "enable_auto_failover",
    "enable_auto_recovery",
    "max_recovery_attempts",
    "recovery_backoff_seconds",
    "enable_auto_failback",
    "failback_delay_seconds",
    "enable_load_balancing",
    "load_balancing_algorithm",
    "health_report_ttl_seconds",
    "health_check",
)
_HEALTH_CHECK_FIELDS = ("type", "path", "expected_status")
_BOOLEAN_FIELDS = frozenset(
    {
        "enable_auto_failover",
        "enable_auto_recovery",
        "enable_auto_failback",
        "enable_load_balancing",
    }
)
_INTEGER_FIELDS = frozenset({"unhealthy_threshold", "healthy_threshold", "max_recovery_attempts"})
_NULLABLE_FIELDS = frozenset(
    {"fast_interval_seconds", "down_interval_seconds", "health_report_ttl_seconds"}
)


def default_timeout(interval_seconds: float) -> float:
    """SPEC §3: the probe timeout when none is given is min(5 s, interval)."""
    return min(5.0, interval_seconds)


def _health_check(value: object, base: HealthCheckSpec) -> HealthCheckSpec:
    """Merge a partial ``healthCheck`` object into ``base`` (only the given fields change)."""
    given = fields.normalise(value, _HEALTH_CHECK_FIELDS, ErrorCode.INVALID_INPUT, "healthCheck")
    changes: dict[str, Any] = {}
    if "type" in given:
        changes["type"] = fields.choice(given["type"], HealthCheckType, "healthCheck.type")
    if "path" in given:
        changes["path"] = fields.text(given["path"], "healthCheck.path", limits.HEALTH_CHECK_PATH)
    if "expected_status" in given:
        expected = given["expected_status"]
        if isinstance(expected, int) and not isinstance(expected, bool):
            expected = str(expected)  # 200 is as clear as "200"
        if not isinstance(expected, str):
            raise fields.fail(
                "healthCheck.expectedStatus must be a string like '200-399'",
                "healthCheck.expectedStatus",
            )
        parse_expected_status(expected)
        changes["expected_status"] = expected.replace(" ", "")
    return dataclasses.replace(base, **changes)


def build_config(
    proxy_id: str,
    user_id: str,
    data: Mapping[str, Any],
    existing: FailoverConfig | None,
    now: datetime,
) -> FailoverConfig:
    """New config with defaults, or ``existing`` with only the given fields changed (003/001).

    The owner (``user_id``), ``id`` and ``created_at`` of an existing config never change. The
    probe timeout must not exceed the interval: an explicit timeout above the (new) interval is
    001; when a partial update lowers the interval below the stored timeout and gives no timeout,
    the timeout is reset to the default min(5 s, interval) rather than refusing the update.
    """
    given = fields.normalise(data, _CONFIG_FIELDS, ErrorCode.INVALID_INPUT, "config")
    changes: dict[str, Any] = {}
    for name, value in given.items():
        field = fields.camel(name)
        if name == "failover_strategy":
            changes[name] = fields.choice(
                value, FailoverStrategy, field, ErrorCode.INVALID_STRATEGY
            )
        elif name == "load_balancing_algorithm":
            changes[name] = fields.choice(value, LoadBalancingAlgorithm, field)
        elif name in _BOOLEAN_FIELDS:
            changes[name] = fields.boolean(value, field)
        elif name in _INTEGER_FIELDS:
            changes[name] = fields.integer(value, field, limits.FIELDS[field])
        elif name == "health_check":
            base = existing.health_check if existing is not None else HealthCheckSpec()
            changes[name] = _health_check(value, base)
        elif value is None and name in _NULLABLE_FIELDS:
            changes[name] = None
        else:  # the numbers
            changes[name] = fields.number(value, field, limits.FIELDS[field])

    if existing is None:
        interval = changes.get("health_check_interval_seconds", 30.0)
        changes.setdefault("health_check_timeout_seconds", default_timeout(interval))
        config = FailoverConfig(
            proxy_id=proxy_id, user_id=user_id, created_at=now, updated_at=now, **changes
        )
    else:
        interval = changes.get(
            "health_check_interval_seconds", existing.health_check_interval_seconds
        )
        if (
            "health_check_timeout_seconds" not in changes
            and existing.health_check_timeout_seconds > interval
        ):
            changes["health_check_timeout_seconds"] = default_timeout(interval)
        config = dataclasses.replace(existing, updated_at=now, **changes)
    if config.health_check_timeout_seconds > config.health_check_interval_seconds:
        raise fields.fail(
            f"healthCheckTimeoutSeconds ({config.health_check_timeout_seconds:g}) must not exceed "
            f"healthCheckIntervalSeconds ({config.health_check_interval_seconds:g})",
            "healthCheckTimeoutSeconds",
        )
    return config


# --- instances --------------------------------------------------------------------------------

#: What a client may change of an instance in place (PATCH; ``apply`` compares these).
INSTANCE_PATCH_FIELDS = (
    "priority",
    "weight",
    "endpoint",
    "traffic_address",
    "recovery_url",
    "admin_state",
    "metadata",
)
_INSTANCE_FIELDS = ("instance_name", "instance_type", *INSTANCE_PATCH_FIELDS)


def _instance_changes(given: Mapping[str, Any]) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    for name, value in given.items():
        field = fields.camel(name)
        if name == "instance_name":
            changes[name] = fields.text(value, field, limits.INSTANCE_NAME)
        elif name == "instance_type":
            changes[name] = fields.text(value, field, limits.INSTANCE_TYPE)
        elif name == "priority":
            changes[name] = fields.integer(value, field, limits.PRIORITY)
        elif name == "weight":
            changes[name] = fields.integer(value, field, limits.WEIGHT)
        elif name == "endpoint":
            changes[name] = None if value is None else _endpoint(value, field)
        elif name == "traffic_address":
            changes[name] = None if value is None else _traffic_address(value, field)
        elif name == "recovery_url":
            changes[name] = None if value is None else _http_url(value, field)
        elif name == "admin_state":
            changes[name] = fields.choice(value, AdminState, field)
        else:  # metadata
            changes[name] = _metadata(value, field)
    return changes


def build_instance(
    proxy_id: str, user_id: str, instance_id: str, data: Mapping[str, Any], now: datetime
) -> Instance:
    """A newly registered instance from the seed's instanceData (001).

    ``instanceName`` is required; health starts ``unknown`` with ``status_changed_at = now``.
    """
    changes = _instance_changes(
        fields.normalise(data, _INSTANCE_FIELDS, ErrorCode.INVALID_INPUT, "instanceData")
    )
    if "instance_name" not in changes:
        raise fields.fail("instanceName is required", "instanceName")
    return Instance(
        id=instance_id,
        proxy_id=proxy_id,
        user_id=user_id,
        status_changed_at=now,
        created_at=now,
        updated_at=now,
        **changes,
    )


def apply_instance_patch(instance: Instance, data: Mapping[str, Any], now: datetime) -> Instance:
    """PATCH fields: priority, weight, endpoint, trafficAddress, recoveryUrl, adminState, metadata
    (001).

    ``null`` clears ``endpoint``/``trafficAddress``/``recoveryUrl``; ``metadata`` replaces the
    whole object. Entering maintenance makes the health read ``unknown`` (counters reset), as
    SPEC §3 says; the instance stays unknown after leaving maintenance until its next check. An
    empty patch changes nothing.
    """
    changes = _instance_changes(
        fields.normalise(data, INSTANCE_PATCH_FIELDS, ErrorCode.INVALID_INPUT, "instance")
    )
    if not changes:
        return instance
    if (
        changes.get("admin_state") is AdminState.MAINTENANCE
        and instance.admin_state is not AdminState.MAINTENANCE
    ):
        changes.update(
            health_status=HealthStatus.UNKNOWN, consecutive_failures=0, consecutive_successes=0
        )
        if instance.health_status is not HealthStatus.UNKNOWN:
            changes["status_changed_at"] = now
    return dataclasses.replace(instance, updated_at=now, **changes)


# --- health, metrics, checks ------------------------------------------------------------------


def parse_health_status(value: object) -> HealthStatus:
    """'healthy', 'unhealthy' or 'unknown' (006 for anything else)."""
    return fields.choice(value, HealthStatus, "healthStatus", ErrorCode.INVALID_HEALTH_STATUS)


_METRIC_FIELDS = (
    "cpu_percent",
    "memory_percent",
    "request_rate",
    "average_latency_ms",
    "error_rate",
    "connection_count",
    "throughput_mbps",
)


def parse_metric_sample(
    data: Mapping[str, Any] | None, *, require_one: bool
) -> MetricSample | None:
    """None when empty and not required; 007 for bad values or unknown keys.

    A ``null`` value counts as absent; ``require_one`` needs at least one non-null metric.
    """
    code = ErrorCode.INVALID_METRICS
    given = {} if data is None else fields.normalise(data, _METRIC_FIELDS, code, "metrics")
    values: dict[str, Any] = {}
    for name, value in given.items():
        if value is None:
            continue
        field = fields.camel(name)
        if name == "connection_count":
            values[name] = fields.integer(value, field, limits.COUNT, code)
        else:
            values[name] = fields.number(value, field, limits.FIELDS[field], code)
    if not values:
        if require_one:
            raise InvalidInput(
                "metrics must contain at least one of "
                + ", ".join(map(fields.camel, _METRIC_FIELDS)),
                code,
                {"field": "metrics"},
            )
        return None
    return MetricSample(**values)


def parse_check_result(data: Mapping[str, Any]) -> CheckResult:
    """``{success: bool, latencyMs?: number >= 0, error?: string <= 1000 chars}`` (001)."""
    given = fields.normalise(
        data, ("success", "latency_ms", "error"), ErrorCode.INVALID_INPUT, "check"
    )
    if "success" not in given:
        raise fields.fail("success is required", "success")
    latency = given.get("latency_ms")
    error = given.get("error")
    return CheckResult(
        success=fields.boolean(given["success"], "success"),
        latency_ms=None
        if latency is None
        else fields.number(latency, "latencyMs", limits.NON_NEGATIVE),
        error=None if error is None else fields.string(error, "error", limits.TEXT),
    )


# --- redundancy override ----------------------------------------------------------------------

_COUNT_FIELDS = ("total_instances", "healthy_instances", "unhealthy_instances")
#: What GET returns and PUT therefore accepts (SPEC §3 "Redundancy status").
_REDUNDANCY_FIELDS = (
    "proxy_id",
    *_COUNT_FIELDS,
    "active_instance_id",
    "backup_instance_ids",
    "last_failover_at",
    "last_failover_reason",
    "redundancy_level",
    "is_degraded",
    "epoch",
    "overridden",
    "updated_at",
)


def _must_equal(given: Mapping[str, Any], name: str, current: object) -> None:
    """A field the override never changes: when given it must equal the current value (014)."""
    if name in given and given[name] != current:
        field = fields.camel(name)
        raise InvalidInput(
            f"{field} must equal the current value ({current if current is not None else 'none'})"
            + ("; use execute to switch" if name == "active_instance_id" else ""),
            ErrorCode.INVALID_REDUNDANCY,
            {"field": field, field: current},
        )


def _backups(value: object, instance_ids: frozenset[str], active_id: str | None) -> tuple[str, ...]:
    """Distinct instances of this proxy other than the active one, in the order given (014)."""
    code = ErrorCode.INVALID_REDUNDANCY
    backups = tuple(fields.strings(value, "backupInstanceIds", limits.ID_LIST, code))
    if len(set(backups)) != len(backups):
        raise fields.fail("backupInstanceIds must not repeat an id", "backupInstanceIds", code)
    strangers = [b for b in backups if b not in instance_ids or b == active_id]
    if strangers:
        raise InvalidInput(
            "backupInstanceIds must name instances of this proxy other than the active one",
            code,
            {"field": "backupInstanceIds", "instanceIds": strangers},
        )
    return backups


def _counts(given: Mapping[str, Any], current: RedundancyStatus) -> tuple[int, int, int]:
    """total, healthy, unhealthy: given or current; omitted unhealthy = total - healthy (014)."""
    code = ErrorCode.INVALID_REDUNDANCY
    counts = {
        name: fields.integer(given[name], fields.camel(name), limits.COUNT, code)
        for name in _COUNT_FIELDS
        if name in given
    }
    total = counts.get("total_instances", current.total_instances)
    healthy = counts.get("healthy_instances", current.healthy_instances)
    if "unhealthy_instances" in counts:
        unhealthy = counts["unhealthy_instances"]
    elif counts:
        unhealthy = max(total - healthy, 0)
    else:
        unhealthy = current.unhealthy_instances
    if healthy + unhealthy > total:
        raise InvalidInput(
            f"healthyInstances ({healthy}) + unhealthyInstances ({unhealthy}) exceeds "
            f"totalInstances ({total})",
            code,
            {"field": "healthyInstances"},
        )
    return total, healthy, unhealthy


def validate_redundancy_override(
    data: Mapping[str, Any],
    current: RedundancyStatus,
    now: datetime,
    instance_ids: frozenset[str] = frozenset(),
) -> RedundancyStatus:
    """The seed's PUT redundancy body checked per SPEC §7 (014), marked ``overridden``.

    Every field GET returns is accepted, so a client can GET, change one count and PUT it back:

    - counts are integers >= 0 and healthy + unhealthy <= total; when any count is given an
      omitted ``unhealthyInstances`` is total - healthy, omitted counts keep their values;
    - ``redundancyLevel``, when given, must match the total (when omitted it is derived);
    - ``isDegraded``, ``lastFailoverReason`` and ``backupInstanceIds`` (distinct ``instance_ids``
      other than the active one) are stored as given;
    - ``proxyId``, ``activeInstanceId`` and ``epoch`` must equal the current values: the pointer
      and its fencing token never move here (execute's job);
    - ``lastFailoverAt``, ``overridden`` and ``updatedAt`` are what the server records: checked
      for type and otherwise ignored (the result is ``overridden``, updated ``now``).
    """
    code = ErrorCode.INVALID_REDUNDANCY
    given = fields.normalise(data, _REDUNDANCY_FIELDS, code, "redundancy status")
    if not given:
        raise InvalidInput("redundancy status data must not be empty", code, {"field": "body"})
    total, healthy, unhealthy = _counts(given, current)
    expected_level = level_for(total)
    if "redundancy_level" in given:
        level = fields.choice(given["redundancy_level"], RedundancyLevel, "redundancyLevel", code)
        if level is not expected_level:
            raise InvalidInput(
                f"redundancyLevel {level.value!r} does not match totalInstances {total} "
                f"(expected {expected_level.value!r})",
                code,
                {"field": "redundancyLevel"},
            )
    for name in ("proxy_id", "active_instance_id", "epoch"):
        _must_equal(given, name, getattr(current, name))
    changes: dict[str, Any] = {}
    if "is_degraded" in given:
        changes["is_degraded"] = fields.boolean(given["is_degraded"], "isDegraded", code)
    if "backup_instance_ids" in given:
        changes["backup_instance_ids"] = _backups(
            given["backup_instance_ids"], instance_ids, current.active_instance_id
        )
    if given.get("last_failover_reason") is not None:
        changes["last_failover_reason"] = fields.string(
            given["last_failover_reason"], "lastFailoverReason", limits.TEXT, code
        )
    elif "last_failover_reason" in given:
        changes["last_failover_reason"] = None
    for name in ("last_failover_at", "updated_at"):
        if given.get(name) is not None:
            fields.timestamp(given[name], fields.camel(name), limits.TIMESTAMP_TEXT, code)
    if "overridden" in given:
        fields.boolean(given["overridden"], "overridden", code)
    return dataclasses.replace(
        current,
        total_instances=total,
        healthy_instances=healthy,
        unhealthy_instances=unhealthy,
        redundancy_level=expected_level,
        overridden=True,
        updated_at=now,
        **changes,
    )


# --- expected status --------------------------------------------------------------------------


def parse_expected_status(expected: str) -> tuple[tuple[int, int], ...]:
    """'200', '200-399' or '200,204,300-399' -> inclusive ranges (001 when malformed).

    Codes must lie in 100-599 and each range must run low to high; spaces around parts are fine.
    """
    field = "healthCheck.expectedStatus"
    fields.string(expected, field, limits.EXPECTED_STATUS)
    ranges: list[tuple[int, int]] = []
    for part in expected.split(","):
        low_text, _, high_text = part.strip().partition("-")
        low = int(low_text)
        high = int(high_text or low_text)
        if not 100 <= low <= high <= 599:
            raise fields.fail(
                f"healthCheck.expectedStatus: {part.strip()!r} must lie in 100-599, low to high",
                field,
            )
        ranges.append((low, high))
    return tuple(ranges)


def status_matches(ranges: tuple[tuple[int, int], ...], status: int) -> bool:
    """True when ``status`` falls in any inclusive range. A plain loop: it runs once per probe
    (10,000 a second), and ``any`` over a generator cost a frame and a generator each time."""
    for low, high in ranges:  # noqa: SIM110 (the docstring says why)
        if low <= status <= high:
            return True
    return False
