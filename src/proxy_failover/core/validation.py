"""Validation of input data at the domain boundary: configs, instances, health, metrics, overrides.

Accepts the seed's camelCase keys and snake_case alike, applies SPEC §3 defaults and ranges, and
raises ``InvalidInput`` with the SPEC code before anything is written.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from proxy_failover.core.model import (
    CheckResult,
    FailoverConfig,
    HealthStatus,
    Instance,
    MetricSample,
    RedundancyStatus,
)


def validate_proxy_id(proxy_id: object) -> str:
    """1–128 chars of [A-Za-z0-9._:-], not 'failover' or 'instances' (001)."""
    raise NotImplementedError


def build_config(
    proxy_id: str,
    user_id: str,
    data: Mapping[str, Any],
    existing: FailoverConfig | None,
    now: datetime,
) -> FailoverConfig:
    """New config with defaults, or ``existing`` with only the given fields changed (003/001)."""
    raise NotImplementedError


def build_instance(
    proxy_id: str, user_id: str, instance_id: str, data: Mapping[str, Any], now: datetime
) -> Instance:
    """A newly registered instance from the seed's instanceData (001)."""
    raise NotImplementedError


def apply_instance_patch(instance: Instance, data: Mapping[str, Any], now: datetime) -> Instance:
    """PATCH fields: priority, weight, endpoint, recoveryUrl, adminState, metadata (001)."""
    raise NotImplementedError


def parse_health_status(value: object) -> HealthStatus:
    raise NotImplementedError


def parse_metric_sample(data: Mapping[str, Any] | None, *, require_one: bool) -> MetricSample | None:
    """None when empty and not required; 007 for bad values or unknown keys."""
    raise NotImplementedError


def parse_check_result(data: Mapping[str, Any]) -> CheckResult:
    raise NotImplementedError


def validate_redundancy_override(
    data: Mapping[str, Any], current: RedundancyStatus, now: datetime
) -> RedundancyStatus:
    """The seed's PUT redundancy body checked per SPEC §7 (014), marked ``overridden``."""
    raise NotImplementedError


def parse_expected_status(expected: str) -> tuple[tuple[int, int], ...]:
    """'200', '200-399' or '200,204,300-399' -> inclusive ranges (001 when malformed)."""
    raise NotImplementedError


def status_matches(ranges: tuple[tuple[int, int], ...], status: int) -> bool:
    raise NotImplementedError
