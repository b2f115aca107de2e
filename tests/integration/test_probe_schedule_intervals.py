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


def test_every_probe_comes_up_to_ten_percent_early_and_never_late() -> None:
    """SPEC §4's 10 % jitter, only ever earlier: routine, confirming and down-interval probes
    spread over [0.9, 1.0] of their interval, so none waits longer than configured
    (docs/engine.md, "Scheduling")."""
    config = FailoverConfig(
        proxy_id="p",
        user_id="u",
        health_check_interval_seconds=1.0,
        fast_interval_seconds=0.5,
        down_interval_seconds=2.0,
    )
    schedule = ProbeSchedule(None, EngineSettings(), random.Random(7))  # type: ignore[arg-type]

    def gaps(status: HealthStatus, failures: int, successes: int) -> list[float]:
        probed = Probed("i", "p", None, None, config, status, failures, successes, due=0.0)
        return [schedule.jittered(probed) for _ in range(2000)]

    cases = {
        "routine": (gaps(H, 0, 3), 1.0),
        "failure pending": (gaps(H, 1, 0), 0.5),
        "recovery pending": (gaps(U, 0, 1), 0.5),
        "down": (gaps(U, 3, 0), 2.0),
    }
    for name, (spread, interval) in cases.items():
        assert 0.9 * interval <= min(spread) < 0.91 * interval, name
        assert 0.99 * interval < max(spread) <= interval, name


def test_rescheduling_keeps_the_due_grid_and_never_starts_before_now() -> None:
    """The next start is the previous due time plus the jittered interval (no drift from a
    probe's own duration), and never in the past."""
    config = FailoverConfig(proxy_id="p", user_id="u", health_check_interval_seconds=1.0)
    schedule = ProbeSchedule(None, EngineSettings(), random.Random(3))  # type: ignore[arg-type]
    probed = Probed("i", "p", None, None, config, H, 0, 3, due=10.0)
    schedule.reschedule(probed, due=10.0, now=10.3)
    assert 10.9 <= probed.due <= 11.0
    schedule.reschedule(probed, due=probed.due, now=20.0)
    assert probed.due == 20.0
