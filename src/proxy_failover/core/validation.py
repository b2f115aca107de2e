"""Validation of input data at the domain boundary: configs, instances, health, metrics, overrides.

Accepts the seed's camelCase keys and snake_case alike, applies SPEC §3 defaults and ranges, and
raises ``InvalidInput`` with the SPEC code before anything is written. Every error names the
offending field (camelCase, as the API speaks) in ``details["field"]``.

Type rules are strict on purpose, so that a client bug surfaces as a 400 rather than a surprise:
booleans must be real booleans (not 1 or "true"), numbers must be finite and never booleans,
integers must be ``int`` (not 3.0), and ``null`` is accepted only where a field is optional.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any, TypeVar
from urllib.parse import urlsplit

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

_E = TypeVar("_E", bound=enum.Enum)

_PROXY_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_RESERVED_PROXY_IDS = frozenset({"failover", "instances"})
_STATUS_PART = re.compile(r"(\d{3})(?:-(\d{3}))?")
_SURROGATE = re.compile("[\ud800-\udfff]")

PRIORITY_RANGE = (-1_000_000, 1_000_000)
WEIGHT_RANGE = (0, 1000)
MAX_NAME_LENGTH = 128
MAX_TYPE_LENGTH = 64
MAX_URL_LENGTH = 2048
MAX_ERROR_LENGTH = 1000
MAX_PATH_LENGTH = 1024
#: The event log's sequence (``Last-Event-ID``) is a 32-bit integer column on every database.
MAX_EVENT_SEQUENCE = 2**31 - 1


def _camel(snake: str) -> str:
    head, *rest = snake.split("_")
    return head + "".join(part.title() for part in rest)


def _fail(message: str, field: str, code: ErrorCode = ErrorCode.INVALID_INPUT) -> InvalidInput:
    return InvalidInput(message, code, {"field": field})


def _normalise(data: object, fields: tuple[str, ...], code: ErrorCode, what: str) -> dict[str, Any]:
    """Map camelCase or snake_case keys to snake_case field names; unknown or doubled keys fail.

    ``fields`` are snake_case names; the result holds only the keys that were given.
    """
    if not isinstance(data, Mapping):
        raise InvalidInput(f"{what} must be a JSON object", code, {"field": what})
    by_key = {_camel(f): f for f in fields} | {f: f for f in fields}
    result: dict[str, Any] = {}
    for key, value in data.items():
        name = by_key.get(key) if isinstance(key, str) else None
        if name is None:
            raise InvalidInput(f"Unknown field {key!r} in {what}", code, {"field": str(key)})
        if name in result:
            raise _fail(
                f"Field {_camel(name)} given twice (camelCase and snake_case)", _camel(name), code
            )
        result[name] = value
    return result


def _show(value: float) -> str:
    """A number for a message; str() of a huge integer is slow or raises, so it is summarised."""
    if isinstance(value, int) and abs(value) > 10**15:
        return "a very large number"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _number(
    value: object,
    field: str,
    low: float,
    high: float | None = None,
    code: ErrorCode = ErrorCode.INVALID_INPUT,
) -> float:
    """A finite real number (int or float, never bool) within [low, high]."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _fail(f"{field} must be a number", field, code)
    if isinstance(value, float) and not math.isfinite(value):
        raise _fail(f"{field} must be a finite number", field, code)
    if value < low or (high is not None and value > high):
        bounds = f"between {low:g} and {high:g}" if high is not None else f"at least {low:g}"
        raise _fail(f"{field} must be {bounds} (got {_show(value)})", field, code)
    return float(value)


def _integer(
    value: object, field: str, low: int, high: int | None, code: ErrorCode = ErrorCode.INVALID_INPUT
) -> int:
    """An ``int`` (never bool or float) within [low, high]."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(f"{field} must be an integer", field, code)
    if value < low or (high is not None and value > high):
        bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise _fail(f"{field} must be {bounds} (got {_show(value)})", field, code)
    return value


def _boolean(value: object, field: str, code: ErrorCode = ErrorCode.INVALID_INPUT) -> bool:
    if not isinstance(value, bool):
        raise _fail(f"{field} must be true or false", field, code)
    return value


def _choice(
    value: object, enum_type: type[_E], field: str, code: ErrorCode = ErrorCode.INVALID_INPUT
) -> _E:
    allowed = [member.value for member in enum_type]
    if not isinstance(value, str) or value not in allowed:
        raise _fail(f"{field} must be one of {', '.join(allowed)} (got {value!r})", field, code)
    return enum_type(value)


def unstorable_reason(value: object) -> str | None:
    """Why a string anywhere in ``value`` (keys too) could not be stored and served back, or None.

    A lone UTF-16 surrogate cannot be encoded as UTF-8, so a stored one fails every later read that
    carries it; PostgreSQL text refuses NUL. Checked here, after decoding, whatever path the value
    came by (HTTP body, library call), so no stored value can make a read fail."""
    stack: list[object] = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            if "\x00" in node:
                return "must not contain a NUL character (U+0000)"
            if _SURROGATE.search(node):
                return "must not contain a lone UTF-16 surrogate (not valid Unicode)"
        elif isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list | tuple):
            stack.extend(node)
    return None


def _text(value: object, field: str, max_length: int) -> str:
    """A non-blank string without control characters, at most ``max_length`` characters."""
    if not isinstance(value, str):
        raise _fail(f"{field} must be a string", field)
    if not value.strip():
        raise _fail(f"{field} must not be empty", field)
    if len(value) > max_length:
        raise _fail(f"{field} must be at most {max_length} characters", field)
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise _fail(f"{field} must not contain control characters", field)
    if _SURROGATE.search(value):
        raise _fail(f"{field} must not contain a lone UTF-16 surrogate", field)
    return value


def _valid_port(port_text: str) -> bool:
    return port_text.isdigit() and 1 <= int(port_text) <= 65535


def _http_url(value: object, field: str) -> str:
    """An absolute http(s) URL with a host and a valid port, without whitespace."""
    text = _text(value, field, MAX_URL_LENGTH)
    if any(c.isspace() for c in text):
        raise _fail(f"{field} must not contain whitespace", field)
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise _fail(f"{field} is not a valid URL", field) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _fail(f"{field} must be an http:// or https:// URL with a host", field)
    if port == 0:
        raise _fail(f"{field} has an invalid port", field)
    return text


def _endpoint(value: object, field: str) -> str:
    """``host:port`` (IPv6 hosts in brackets) or an http(s) URL."""
    text = _text(value, field, MAX_URL_LENGTH)
    if "://" in text:
        return _http_url(text, field)
    host, sep, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host_ok = len(host) > 2 and ":" in host
    else:
        host_ok = bool(host) and re.fullmatch(r"[A-Za-z0-9._-]+", host) is not None
    if not sep or not host_ok or not _valid_port(port):
        raise _fail(
            f"{field} must be host:port (port 1-65535) or an http(s) URL (got {text!r})", field
        )
    return text


def _metadata(value: object, field: str) -> dict[str, Any]:
    """A JSON object of JSON values (finite numbers), deep-copied so callers cannot mutate it."""
    if not isinstance(value, dict):
        raise _fail(f"{field} must be a JSON object", field)
    if (problem := unstorable_reason(value)) is not None:
        raise _fail(f"{field} {problem}", field)
    try:
        return dict(json.loads(json.dumps(value, allow_nan=False)))
    except (TypeError, ValueError):
        raise _fail(f"{field} must contain only JSON values", field) from None


def validate_proxy_id(proxy_id: object) -> str:
    """1-128 chars of [A-Za-z0-9._:-], not 'failover' or 'instances' (001)."""
    if not isinstance(proxy_id, str) or _PROXY_ID.fullmatch(proxy_id) is None:
        raise _fail(
            "proxyId must be 1-128 characters of A-Z, a-z, 0-9, '.', '_', ':', '-'", "proxyId"
        )
    if proxy_id in _RESERVED_PROXY_IDS:
        raise _fail(f"proxyId {proxy_id!r} is a reserved word", "proxyId")
    return proxy_id


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
    "health_check",
)
_HEALTH_CHECK_FIELDS = ("type", "path", "expected_status")
_INTERVAL_RANGE = (0.1, 3600.0)
_TIMEOUT_RANGE = (0.05, 300.0)
_BOOLEAN_FIELDS = frozenset(
    {
        "enable_auto_failover",
        "enable_auto_recovery",
        "enable_auto_failback",
        "enable_load_balancing",
    }
)
_INTEGER_FIELDS = {
    "unhealthy_threshold": (1, 100),
    "healthy_threshold": (1, 100),
    "max_recovery_attempts": (0, 100),
}
_NUMBER_FIELDS = {
    "health_check_interval_seconds": _INTERVAL_RANGE,
    "recovery_backoff_seconds": (0.0, 3600.0),
    "failback_delay_seconds": (0.0, 86400.0),
}


def default_timeout(interval_seconds: float) -> float:
    """SPEC §3: the probe timeout when none is given is min(5 s, interval)."""
    return min(5.0, interval_seconds)


def _health_check(value: object, base: HealthCheckSpec) -> HealthCheckSpec:
    """Merge a partial ``healthCheck`` object into ``base`` (only the given fields change)."""
    given = _normalise(value, _HEALTH_CHECK_FIELDS, ErrorCode.INVALID_INPUT, "healthCheck")
    changes: dict[str, Any] = {}
    if "type" in given:
        changes["type"] = _choice(given["type"], HealthCheckType, "healthCheck.type")
    if "path" in given:
        path = _text(given["path"], "healthCheck.path", MAX_PATH_LENGTH)
        if not path.startswith("/") or any(c.isspace() for c in path):
            raise _fail(
                "healthCheck.path must start with '/' and contain no spaces", "healthCheck.path"
            )
        changes["path"] = path
    if "expected_status" in given:
        expected = given["expected_status"]
        if isinstance(expected, int) and not isinstance(expected, bool):
            expected = str(expected)  # 200 is as clear as "200"
        if not isinstance(expected, str):
            raise _fail(
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
    given = _normalise(data, _CONFIG_FIELDS, ErrorCode.INVALID_INPUT, "config")
    changes: dict[str, Any] = {}
    for name, value in given.items():
        field = _camel(name)
        if name == "failover_strategy":
            changes[name] = _choice(value, FailoverStrategy, field, ErrorCode.INVALID_STRATEGY)
        elif name == "load_balancing_algorithm":
            changes[name] = _choice(value, LoadBalancingAlgorithm, field)
        elif name in _BOOLEAN_FIELDS:
            changes[name] = _boolean(value, field)
        elif name in _INTEGER_FIELDS:
            changes[name] = _integer(value, field, *_INTEGER_FIELDS[name])
        elif name in _NUMBER_FIELDS:
            changes[name] = _number(value, field, *_NUMBER_FIELDS[name])
        elif name in ("fast_interval_seconds", "down_interval_seconds"):
            changes[name] = None if value is None else _number(value, field, *_INTERVAL_RANGE)
        elif name == "health_check_timeout_seconds":
            changes[name] = _number(value, field, *_TIMEOUT_RANGE)
        else:  # health_check
            base = existing.health_check if existing is not None else HealthCheckSpec()
            changes[name] = _health_check(value, base)

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
        raise _fail(
            f"healthCheckTimeoutSeconds ({config.health_check_timeout_seconds:g}) must not exceed "
            f"healthCheckIntervalSeconds ({config.health_check_interval_seconds:g})",
            "healthCheckTimeoutSeconds",
        )
    return config


# --- instances --------------------------------------------------------------------------------

_PATCH_FIELDS = ("priority", "weight", "endpoint", "recovery_url", "admin_state", "metadata")
_INSTANCE_FIELDS = ("instance_name", "instance_type", *_PATCH_FIELDS)


def _instance_changes(given: Mapping[str, Any]) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    for name, value in given.items():
        field = _camel(name)
        if name == "instance_name":
            changes[name] = _text(value, field, MAX_NAME_LENGTH)
        elif name == "instance_type":
            changes[name] = _text(value, field, MAX_TYPE_LENGTH)
        elif name == "priority":
            changes[name] = _integer(value, field, *PRIORITY_RANGE)
        elif name == "weight":
            changes[name] = _integer(value, field, *WEIGHT_RANGE)
        elif name == "endpoint":
            changes[name] = None if value is None else _endpoint(value, field)
        elif name == "recovery_url":
            changes[name] = None if value is None else _http_url(value, field)
        elif name == "admin_state":
            changes[name] = _choice(value, AdminState, field)
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
        _normalise(data, _INSTANCE_FIELDS, ErrorCode.INVALID_INPUT, "instanceData")
    )
    if "instance_name" not in changes:
        raise _fail("instanceName is required", "instanceName")
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
    """PATCH fields: priority, weight, endpoint, recoveryUrl, adminState, metadata (001).

    ``null`` clears ``endpoint``/``recoveryUrl``; ``metadata`` replaces the whole object. Entering
    maintenance makes the health read ``unknown`` (counters reset), as SPEC §3 says; the instance
    stays unknown after leaving maintenance until its next check. An empty patch changes nothing.
    """
    changes = _instance_changes(
        _normalise(data, _PATCH_FIELDS, ErrorCode.INVALID_INPUT, "instance")
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
    return _choice(value, HealthStatus, "healthStatus", ErrorCode.INVALID_HEALTH_STATUS)


_METRIC_FIELDS = (
    "cpu_percent",
    "memory_percent",
    "request_rate",
    "average_latency_ms",
    "error_rate",
    "connection_count",
    "throughput_mbps",
)
_METRIC_MAXIMUM = {"cpu_percent": 100.0, "memory_percent": 100.0, "error_rate": 1.0}


def parse_metric_sample(
    data: Mapping[str, Any] | None, *, require_one: bool
) -> MetricSample | None:
    """None when empty and not required; 007 for bad values or unknown keys.

    A ``null`` value counts as absent; ``require_one`` needs at least one non-null metric.
    """
    code = ErrorCode.INVALID_METRICS
    given = {} if data is None else _normalise(data, _METRIC_FIELDS, code, "metrics")
    values: dict[str, Any] = {}
    for name, value in given.items():
        if value is None:
            continue
        field = _camel(name)
        if name == "connection_count":
            values[name] = _integer(value, field, 0, None, code)
        else:
            values[name] = _number(value, field, 0.0, _METRIC_MAXIMUM.get(name), code)
    if not values:
        if require_one:
            raise InvalidInput(
                "metrics must contain at least one of " + ", ".join(map(_camel, _METRIC_FIELDS)),
                code,
                {"field": "metrics"},
            )
        return None
    return MetricSample(**values)


def parse_check_result(data: Mapping[str, Any]) -> CheckResult:
    """``{success: bool, latencyMs?: number >= 0, error?: string <= 1000 chars}`` (001)."""
    given = _normalise(data, ("success", "latency_ms", "error"), ErrorCode.INVALID_INPUT, "check")
    if "success" not in given:
        raise _fail("success is required", "success")
    latency = given.get("latency_ms")
    error = given.get("error")
    if error is not None and (not isinstance(error, str) or len(error) > MAX_ERROR_LENGTH):
        raise _fail(f"error must be a string of at most {MAX_ERROR_LENGTH} characters", "error")
    if (problem := unstorable_reason(error)) is not None:
        raise _fail(f"error {problem}", "error")
    return CheckResult(
        success=_boolean(given["success"], "success"),
        latency_ms=None if latency is None else _number(latency, "latencyMs", 0.0),
        error=error,
    )


# --- redundancy override ----------------------------------------------------------------------

_REDUNDANCY_FIELDS = (
    "total_instances",
    "healthy_instances",
    "unhealthy_instances",
    "active_instance_id",
    "redundancy_level",
    "is_degraded",
)


def validate_redundancy_override(
    data: Mapping[str, Any], current: RedundancyStatus, now: datetime
) -> RedundancyStatus:
    """The seed's PUT redundancy body checked per SPEC §7 (014), marked ``overridden``.

    Counts are integers >= 0 and healthy + unhealthy <= total. When any count is given, an omitted
    ``unhealthyInstances`` is total - healthy and omitted counts keep their current values; with
    no count given the current counts stay. ``redundancyLevel``, when given, must match the total
    (when omitted it is derived from it). ``activeInstanceId``, when given, must equal the current
    active instance: the pointer never moves here. The epoch and backups never change.
    """
    code = ErrorCode.INVALID_REDUNDANCY
    given = _normalise(data, _REDUNDANCY_FIELDS, code, "redundancy status")
    if not given:
        raise InvalidInput("redundancy status data must not be empty", code, {"field": "body"})
    counts = {
        name: _integer(given[name], _camel(name), 0, None, code)
        for name in ("total_instances", "healthy_instances", "unhealthy_instances")
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
    expected_level = level_for(total)
    if "redundancy_level" in given:
        level = _choice(given["redundancy_level"], RedundancyLevel, "redundancyLevel", code)
        if level is not expected_level:
            raise InvalidInput(
                f"redundancyLevel {level.value!r} does not match totalInstances {total} "
                f"(expected {expected_level.value!r})",
                code,
                {"field": "redundancyLevel"},
            )
    is_degraded = current.is_degraded
    if "is_degraded" in given:
        is_degraded = _boolean(given["is_degraded"], "isDegraded", code)
    if "active_instance_id" in given and given["active_instance_id"] != current.active_instance_id:
        raise InvalidInput(
            "activeInstanceId must equal the current active instance "
            f"({current.active_instance_id or 'none'}); use execute to switch",
            code,
            {"field": "activeInstanceId", "activeInstanceId": current.active_instance_id},
        )
    return dataclasses.replace(
        current,
        total_instances=total,
        healthy_instances=healthy,
        unhealthy_instances=unhealthy,
        redundancy_level=expected_level,
        is_degraded=is_degraded,
        overridden=True,
        updated_at=now,
    )


# --- expected status --------------------------------------------------------------------------


def parse_expected_status(expected: str) -> tuple[tuple[int, int], ...]:
    """'200', '200-399' or '200,204,300-399' -> inclusive ranges (001 when malformed).

    Codes must lie in 100-599 and each range must run low to high; spaces around parts are fine.
    """
    field = "healthCheck.expectedStatus"
    if not isinstance(expected, str) or not expected.strip():
        raise _fail("healthCheck.expectedStatus must be like '200', '200-399' or '200,204'", field)
    ranges: list[tuple[int, int]] = []
    for part in expected.split(","):
        match = _STATUS_PART.fullmatch(part.strip())
        if match is None:
            raise _fail(
                f"healthCheck.expectedStatus: {part.strip()!r} is not a status or range", field
            )
        low = int(match.group(1))
        high = int(match.group(2) or low)
        if not 100 <= low <= high <= 599:
            raise _fail(
                f"healthCheck.expectedStatus: {part.strip()!r} must lie in 100-599, low to high",
                field,
            )
        ranges.append((low, high))
    return tuple(ranges)


def status_matches(ranges: tuple[tuple[int, int], ...], status: int) -> bool:
    """True when ``status`` falls in any inclusive range."""
    return any(low <= status <= high for low, high in ranges)
