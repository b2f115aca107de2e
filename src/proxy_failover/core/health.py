"""The rise/fall health state machine of SPEC §4 (HAProxy's rise/fall, per instance)."""

from __future__ import annotations

from proxy_failover.core.model import HealthRules, HealthState, HealthStatus


def observe(state: HealthState, success: bool, rules: HealthRules) -> HealthState:
    """Apply one probe/check result; the status flips exactly at the Nth consecutive result.

    failure: failures += 1, successes = 0; not-unhealthy -> unhealthy once failures >= fall.
    success: successes += 1, failures = 0; unhealthy -> healthy once successes >= rise (only when
    ``rules.auto_recovery``); unknown -> healthy on the first success.
    """
    raise NotImplementedError


def report(state: HealthState, status: HealthStatus) -> HealthState:
    """Apply an authoritative reported status: it holds at once; counters move as SPEC §4 says.

    unhealthy counts as one failure, healthy as one success, unknown resets both counters.
    """
    raise NotImplementedError
