"""The engine's schedule uses the config's effective intervals: fastinter while a change is
pending (2 s by default with the 30 s default interval), downinter while unhealthy."""

from __future__ import annotations

import random

from proxy_failover.core.model import FailoverConfig, HealthStatus
from proxy_failover.engine.schedule import Probed, ProbeSchedule, interval_for
from proxy_failover.engine.settings import EngineSettings

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


def test_a_confirming_probe_is_never_late_while_routine_probes_spread_both_ways() -> None:
    """SPEC §4's ±10 % jitter spreads routine probes; a probe confirming a pending change only
    ever comes early (down to -10 %), so it never delays a failover (docs/engine.md)."""
    config = FailoverConfig(
        proxy_id="p", user_id="u", health_check_interval_seconds=1.0, fast_interval_seconds=0.5
    )
    schedule = ProbeSchedule(None, EngineSettings(), random.Random(7))  # type: ignore[arg-type]

    def gaps(status: HealthStatus, failures: int, successes: int) -> list[float]:
        probed = Probed("i", "p", None, None, config, status, failures, successes, due=0.0)
        return [schedule.jittered(probed) for _ in range(2000)]

    routine = gaps(H, 0, 3)
    assert 0.9 <= min(routine) < 0.92
    assert 1.08 < max(routine) <= 1.1
    for confirming in (gaps(H, 1, 0), gaps(U, 0, 1)):  # a failure pending; a recovery pending
        assert 0.45 <= min(confirming) < 0.46
        assert 0.49 < max(confirming) <= 0.5
    down = gaps(U, 3, 0)  # unhealthy, nothing pending: downinter (= interval), both ways
    assert min(down) < 0.92
    assert max(down) > 1.08
