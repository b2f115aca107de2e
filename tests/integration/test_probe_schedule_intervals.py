"""The engine's schedule uses the config's effective intervals: fastinter while a change is
pending (2 s by default with the 30 s default interval), downinter while unhealthy."""

from __future__ import annotations

from proxy_failover.core.model import FailoverConfig, HealthStatus
from proxy_failover.engine.schedule import interval_for

H, U = HealthStatus.HEALTHY, HealthStatus.UNHEALTHY


def test_a_failing_instance_is_probed_at_the_default_fast_interval() -> None:
    default = FailoverConfig(proxy_id="p", user_id="u")
    assert interval_for(default, H, failures=0, successes=5) == 30.0
    assert interval_for(default, H, failures=1, successes=0) == 2.0
    assert interval_for(default, H, failures=2, successes=0) == 2.0
    assert interval_for(default, U, failures=3, successes=0) == 30.0  # downinter = interval
    assert interval_for(default, U, failures=0, successes=1) == 2.0  # recovery pending
    tuned = FailoverConfig(
        proxy_id="p", user_id="u", fast_interval_seconds=0.5, down_interval_seconds=10.0
    )
    assert interval_for(tuned, H, failures=1, successes=0) == 0.5
    assert interval_for(tuned, U, failures=4, successes=0) == 10.0
