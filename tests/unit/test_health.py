"""The rise/fall state machine of SPEC §4: thresholds flip exactly at the Nth consecutive result."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy_failover.core.health import (
    CheckCounters,
    count,
    count_check,
    is_out_of_date,
    is_routine_success,
    observe,
    report,
)
from proxy_failover.core.model import HealthRules, HealthState, HealthStatus

H, U, K = HealthStatus.HEALTHY, HealthStatus.UNHEALTHY, HealthStatus.UNKNOWN


@pytest.mark.parametrize(
    ("start", "success", "rules", "expected"),
    [
        # first success of an unknown instance makes it healthy at once
        (HealthState(K), True, HealthRules(3, 2), HealthState(H, 0, 1)),
        # failures below the threshold keep the status, counting
        (HealthState(H, 1, 0), False, HealthRules(3, 2), HealthState(H, 2, 0)),
        (HealthState(H, 2, 0), False, HealthRules(3, 2), HealthState(U, 3, 0)),
        (HealthState(K, 2, 0), False, HealthRules(3, 2), HealthState(U, 3, 0)),
        (HealthState(U, 3, 0), False, HealthRules(3, 2), HealthState(U, 4, 0)),
        # a success resets failures; an unhealthy one rises only at the healthy threshold
        (HealthState(H, 2, 0), True, HealthRules(3, 2), HealthState(H, 0, 1)),
        (HealthState(U, 5, 0), True, HealthRules(3, 2), HealthState(U, 0, 1)),
        (HealthState(U, 0, 1), True, HealthRules(3, 2), HealthState(H, 0, 2)),
        # without auto recovery, probes never bring an unhealthy instance back
        (HealthState(U, 0, 9), True, HealthRules(3, 2, False), HealthState(U, 0, 10)),
        # a healthy instance with a success just counts
        (HealthState(H, 0, 4), True, HealthRules(3, 2), HealthState(H, 0, 5)),
        # threshold 1 flips at the first failure
        (HealthState(H), False, HealthRules(1, 1), HealthState(U, 1, 0)),
    ],
)
def test_observe_table(
    start: HealthState, success: bool, rules: HealthRules, expected: HealthState
) -> None:
    assert observe(start, success, rules) == expected


@pytest.mark.parametrize(
    ("start", "status", "expected"),
    [
        (HealthState(H, 0, 4), U, HealthState(U, 1, 0)),
        (HealthState(U, 2, 0), U, HealthState(U, 3, 0)),
        (HealthState(U, 7, 0), H, HealthState(H, 0, 1)),
        (HealthState(H, 0, 3), H, HealthState(H, 0, 4)),
        (HealthState(U, 7, 0), K, HealthState(K, 0, 0)),
        (HealthState(H, 0, 7), K, HealthState(K, 0, 0)),
    ],
)
def test_report_sets_status_at_once(
    start: HealthState, status: HealthStatus, expected: HealthState
) -> None:
    assert report(start, status) == expected


@settings(max_examples=150, deadline=None)
@given(
    fall=st.integers(1, 10),
    rise=st.integers(1, 10),
    start=st.sampled_from([H, K]),
)
def test_flips_to_unhealthy_exactly_at_nth_failure_and_back_at_nth_success(
    fall: int, rise: int, start: HealthStatus
) -> None:
    rules = HealthRules(fall, rise, True)
    state = HealthState(start)
    for n in range(1, fall + 1):
        state = observe(state, False, rules)
        assert state.status is (U if n == fall else start)
    for n in range(1, rise + 1):
        state = observe(state, True, rules)
        assert state.status is (H if n == rise else U)


@settings(max_examples=150, deadline=None)
@given(results=st.lists(st.booleans(), max_size=40), fall=st.integers(1, 5), rise=st.integers(1, 5))
def test_counters_are_never_both_nonzero_and_track_the_run(
    results: list[bool], fall: int, rise: int
) -> None:
    state = HealthState()
    for result in results:
        before = state
        state = observe(state, result, HealthRules(fall, rise))
        assert state.consecutive_failures == 0 or state.consecutive_successes == 0
        if result:
            assert state.consecutive_successes == before.consecutive_successes + 1
        else:
            assert state.consecutive_failures == before.consecutive_failures + 1


def test_a_check_made_before_the_last_status_change_is_out_of_date() -> None:
    from datetime import UTC, datetime, timedelta

    changed = datetime(2026, 1, 1, tzinfo=UTC)
    assert is_out_of_date(changed - timedelta(microseconds=1), changed)
    assert not is_out_of_date(changed, changed)
    assert not is_out_of_date(changed + timedelta(seconds=1), changed)
    assert not is_out_of_date(None, changed)  # a check without a time is current
    assert not is_out_of_date(changed, None)  # a status that never changed


@pytest.mark.parametrize(
    ("start", "success", "expected"),
    [
        (HealthState(H, 0, 4), True, HealthState(H, 0, 5)),
        (HealthState(U, 3, 0), True, HealthState(U, 0, 1)),
        (HealthState(H, 0, 4), False, HealthState(H, 1, 0)),
        (HealthState(K, 2, 0), False, HealthState(K, 3, 0)),
    ],
)
def test_count_moves_the_run_and_never_the_status(
    start: HealthState, success: bool, expected: HealthState
) -> None:
    assert count(start, success) == expected


@pytest.mark.parametrize(
    ("start", "success", "latency", "expected"),
    [
        # the first latency measured is the mean
        (CheckCounters(), True, 10.0, CheckCounters(1, 1, 0, 10.0, 0.0)),
        # a running mean over the requests counted so far
        (CheckCounters(3, 3, 0, 10.0, 0.0), True, 30.0, CheckCounters(4, 4, 0, 15.0, 0.0)),
        # a check without a latency leaves the mean as it was (and None stays None)
        (CheckCounters(1, 1, 0, 10.0, 0.0), False, None, CheckCounters(2, 1, 1, 10.0, 0.5)),
        (CheckCounters(), False, None, CheckCounters(1, 0, 1, None, 1.0)),
        # an error rate set by a metric sample is replaced by failed / total
        (CheckCounters(9, 9, 0, 5.0, 0.7), True, 5.0, CheckCounters(10, 10, 0, 5.0, 0.0)),
    ],
)
def test_count_check_moves_the_request_counters(
    start: CheckCounters, success: bool, latency: float | None, expected: CheckCounters
) -> None:
    assert count_check(start, success, latency) == expected


@pytest.mark.parametrize(
    ("state", "success", "maintenance", "overridden", "routine"),
    [
        (HealthState(H, 0, 5), True, False, False, True),
        (HealthState(H, 0, 0), True, False, False, True),
        # a failure is never routine: it may move the status
        (HealthState(H, 0, 5), False, False, False, False),
        # a failure counted: the success resets it (a recorded change of the run)
        (HealthState(H, 1, 0), True, False, False, False),
        # not healthy: a success may flip the status
        (HealthState(U, 0, 1), True, False, False, False),
        (HealthState(K), True, False, False, False),
        # maintenance ignores results; an overridden row is recomputed by the next change
        (HealthState(H, 0, 5), True, True, False, False),
        (HealthState(H, 0, 5), True, False, True, False),
    ],
)
def test_routine_success_table(
    state: HealthState, success: bool, maintenance: bool, overridden: bool, routine: bool
) -> None:
    assert (
        is_routine_success(state, success, in_maintenance=maintenance, overridden=overridden)
        is routine
    )


@settings(max_examples=150, deadline=None)
@given(
    status=st.sampled_from([H, U, K]),
    failures=st.integers(0, 5),
    successes=st.integers(0, 5),
    fall=st.integers(1, 5),
    rise=st.integers(1, 5),
    auto_recovery=st.booleans(),
)
def test_a_routine_success_is_what_the_state_machine_does_whatever_the_rules(
    status: HealthStatus,
    failures: int,
    successes: int,
    fall: int,
    rise: int,
    auto_recovery: bool,
) -> None:
    """Why the bulk path may skip loading the config: for a routine success no rule applies."""
    state = HealthState(status, failures, successes)
    if is_routine_success(state, True):
        assert observe(state, True, HealthRules(fall, rise, auto_recovery)) == count(state, True)
