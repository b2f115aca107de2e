"""The rise/fall health state machine of SPEC §4 (HAProxy's rise/fall, per instance).

Pure functions over ``HealthState``: the engine, the checks endpoint and the health report all move
an instance's status through here, so the thresholds are applied in exactly one place.
"""

from __future__ import annotations

from datetime import datetime

from proxy_failover.core.model import HealthRules, HealthState, HealthStatus


def is_out_of_date(observed_at: datetime | None, status_changed_at: datetime | None) -> bool:
    """A check made before the instance's status last changed describes the world before that
    change (say, a probe in flight when an operator reported the instance unhealthy): it must
    not count toward moving the status back. A check with no time is current."""
    if observed_at is None or status_changed_at is None:
        return False
    return observed_at < status_changed_at


def observe(state: HealthState, success: bool, rules: HealthRules) -> HealthState:
    """Apply one probe/check result; the status flips exactly at the Nth consecutive result.

    failure: failures += 1, successes = 0; not-unhealthy -> unhealthy once failures >= fall.
    success: successes += 1, failures = 0; unhealthy -> healthy once successes >= rise (only when
    ``rules.auto_recovery``); unknown -> healthy on the first success.
    """
    if success:
        successes = state.consecutive_successes + 1
        status = state.status
        if status is HealthStatus.UNKNOWN or (
            status is HealthStatus.UNHEALTHY
            and rules.auto_recovery
            and successes >= rules.healthy_threshold
        ):
            status = HealthStatus.HEALTHY
        return HealthState(status, 0, successes)
    failures = state.consecutive_failures + 1
    status = state.status
    if status is not HealthStatus.UNHEALTHY and failures >= rules.unhealthy_threshold:
        status = HealthStatus.UNHEALTHY
    return HealthState(status, failures, 0)


def report(state: HealthState, status: HealthStatus) -> HealthState:
    """Apply an authoritative reported status: it holds at once; counters move as SPEC §4 says.

    unhealthy counts as one failure, healthy as one success, unknown resets both counters.
    """
    if status is HealthStatus.UNHEALTHY:
        return HealthState(status, state.consecutive_failures + 1, 0)
    if status is HealthStatus.HEALTHY:
        return HealthState(status, 0, state.consecutive_successes + 1)
    return HealthState(HealthStatus.UNKNOWN, 0, 0)
