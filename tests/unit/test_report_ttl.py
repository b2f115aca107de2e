"""``core.health.is_report_expired``: which reported statuses expire (SPEC §3
``healthReportTtlSeconds``, Consul's TTL checks), as a table."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from proxy_failover.core import limits
from proxy_failover.core.health import is_report_expired
from proxy_failover.core.model import AdminState, HealthStatus
from tests.helpers.clock import T0
from tests.helpers.factories import inst

TTL = 30.0
REPORTED = {"last_report_at": T0, "last_health_check": T0}
LATER = T0 + timedelta(seconds=TTL)
SOONER = T0 + timedelta(seconds=TTL - 0.001)


@pytest.mark.parametrize(
    ("fields", "ttl", "now", "expired"),
    [
        (REPORTED, TTL, LATER, True),  # exactly the TTL after the report
        (REPORTED, TTL, LATER + timedelta(days=3), True),  # a restart later: still expired
        (REPORTED, TTL, SOONER, False),  # refreshed in time
        (REPORTED, None, LATER + timedelta(days=3), False),  # off (the default)
        ({"last_report_at": T0, "last_health_check": None}, TTL, LATER, True),
        ({"last_report_at": None, "last_health_check": None}, TTL, LATER, False),  # never reported
        (REPORTED | {"health": HealthStatus.UNKNOWN}, TTL, LATER, True),  # a reported unknown too
        (REPORTED | {"health": HealthStatus.UNHEALTHY}, TTL, LATER, False),  # nothing to expire
        (REPORTED | {"endpoint": "10.0.0.1:80"}, TTL, LATER, False),  # probed: probes decide
        (REPORTED | {"admin": AdminState.MAINTENANCE}, TTL, LATER, False),  # no status then
        (REPORTED | {"admin": AdminState.DRAIN}, TTL, LATER, True),  # drained still counts
        # a check result came after the report: the checker spoke last, not the reporter
        (REPORTED | {"last_health_check": T0 + timedelta(seconds=1)}, TTL, LATER, False),
    ],
)
def test_which_reports_expire(
    fields: dict[str, Any], ttl: float | None, now: Any, expired: bool
) -> None:
    assert is_report_expired(inst("a", **fields), ttl, now) is expired


def test_the_ttl_limits_are_spec_s() -> None:
    limit = limits.FIELDS["healthReportTtlSeconds"]
    assert (limit.minimum, limit.maximum) == (1, 86400)
