"""The rise/fall health state machine of SPEC §4 (HAProxy's rise/fall, per instance).

Pure functions over ``HealthState``: the engine, the checks endpoint and the health report all move
an instance's status through here, so the thresholds are applied in exactly one place. The request
counters a check moves (``count_check``) and what makes a success routine
(``is_routine_success``) live here too: the store's bulk update of routine successes takes its
values from these functions instead of computing them in SQL.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import NamedTuple

from proxy_failover.core.model import AdminState, HealthRules, HealthState, HealthStatus, Instance

#: ``lastError`` of an instance whose reported status expired (SPEC §3 ``healthReportTtlSeconds``).
REPORT_EXPIRED = "report expired"


class CheckCounters(NamedTuple):
    """An instance's request counters: checks made, how many succeeded and failed, their
    running mean latency (ms, None until a check measured one) and failure share (None until
    the first check or metric sample)."""

    total_requests: int = 0
    successful_requests: int = 0
    failed_requests: int = 0
    average_latency_ms: float | None = None
    error_rate: float | None = None


def count_check(counters: CheckCounters, success: bool, latency_ms: float | None) -> CheckCounters:
    """The counters after one check: one more request, succeeded or failed; the mean latency
    moves by the new sample (a check with no latency leaves it); ``error_rate`` is failed/total."""
    # The bulk probe path calls this once per result: the fields by position (a named tuple's
    # attribute reads take the slow path) and ``tuple.__new__`` (no generated ``__new__`` frame).
    total, successful, failed, average, _ = counters
    total += 1
    if success:
        successful += 1
    else:
        failed += 1
    if latency_ms is not None:
        average = latency_ms if average is None else average + (latency_ms - average) / total
    return tuple.__new__(CheckCounters, (total, successful, failed, average, failed / total))


def is_routine_success(
    state: HealthState, success: bool, *, in_maintenance: bool = False, overridden: bool = False
) -> bool:
    """A success that moves nothing but counters and timestamps: the instance is healthy with no
    failure counted, not in maintenance (whose results are ignored), and its proxy's redundancy
    row is not overridden (which the next health change recomputes). Such a success changes no
    status, redundancy, event or notification, so it may be recorded in bulk; its health after
    is ``count(state, True)`` whatever the rules."""
    return (
        success
        and state.status is HealthStatus.HEALTHY
        and state.consecutive_failures == 0
        and not in_maintenance
        and not overridden
    )


def count(state: HealthState, success: bool) -> HealthState:
    """The consecutive counters after one result, status unchanged: a success counts a success
    and clears the failures, a failure the reverse."""
    if success:
        return HealthState(state.status, 0, state.consecutive_successes + 1)
    return HealthState(state.status, state.consecutive_failures + 1, 0)


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
    counted = count(state, success)
    status = state.status
    if success:
        if status is HealthStatus.UNKNOWN or (
            status is HealthStatus.UNHEALTHY
            and rules.auto_recovery
            and counted.consecutive_successes >= rules.healthy_threshold
        ):
            status = HealthStatus.HEALTHY
    elif (
        status is not HealthStatus.UNHEALTHY
        and counted.consecutive_failures >= rules.unhealthy_threshold
    ):
        status = HealthStatus.UNHEALTHY
    return HealthState(status, counted.consecutive_failures, counted.consecutive_successes)


def report(state: HealthState, status: HealthStatus) -> HealthState:
    """Apply an authoritative reported status: it holds at once; counters move as SPEC §4 says.

    unhealthy counts as one failure, healthy as one success, unknown resets both counters.
    """
    if status is HealthStatus.UNKNOWN:
        return HealthState(HealthStatus.UNKNOWN, 0, 0)
    counted = count(state, status is HealthStatus.HEALTHY)
    return HealthState(status, counted.consecutive_failures, counted.consecutive_successes)


def is_report_expired(instance: Instance, ttl_seconds: float | None, now: datetime) -> bool:
    """Whether ``instance``'s reported status has expired (Consul's TTL checks).

    Only a status set by a report counts: the instance has no endpoint (nothing probes it), the
    last report is newer than any check result (``lastHealthCheck`` after ``lastReportAt`` means
    a check spoke last), and it is not in maintenance (no status then). An unhealthy instance
    has nothing left to expire. The TTL runs from the last report, so a restart forgets nothing.
    """
    reported_at = instance.last_report_at
    if ttl_seconds is None or reported_at is None:
        return False
    if instance.endpoint is not None or instance.admin_state is AdminState.MAINTENANCE:
        return False
    if instance.health_status is HealthStatus.UNHEALTHY:
        return False
    checked_at = instance.last_health_check
    if checked_at is not None and checked_at > reported_at:
        return False
    return now - reported_at >= timedelta(seconds=ttl_seconds)
