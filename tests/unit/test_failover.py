"""Failover decisions (SPEC §5): evaluate's reason codes, execute's checks, the engine's decide."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy_failover.core.errors import Conflict, ErrorCode, FailoverError, NotFound
from proxy_failover.core.failover import (
    DeletionPlan,
    check_execute,
    decide,
    decision_holds,
    evaluate,
    explain,
    plan_deletion,
)
from proxy_failover.core.model import (
    AdminState,
    Decision,
    DecisionAction,
    EventStatus,
    EventType,
    FailoverEvent,
    FailoverStrategy,
    HealthStatus,
    Instance,
    NotificationType,
    ProxySnapshot,
    ReasonCode,
)
from proxy_failover.core.strategies import is_eligible
from proxy_failover.engine.coordinator import NO_DECISION_NOTIFICATIONS
from tests.helpers.clock import T0
from tests.helpers.factories import PROXY, USER, inst, snapshot

H, U, K = HealthStatus.HEALTHY, HealthStatus.UNHEALTHY, HealthStatus.UNKNOWN
NOW = T0 + timedelta(hours=1)
OPEN_EVENT = FailoverEvent(
    id="ev-1",
    proxy_id=PROXY,
    user_id=USER,
    event_type=EventType.SWITCHOVER,
    source_instance_id="a",
    target_instance_id="b",
    reason="Manual failover",
    status=EventStatus.IN_PROGRESS,
    triggered_by=USER,
    epoch=1,
    created_at=T0,
)


def a_b_c(
    a: HealthStatus = H, a_admin: AdminState = AdminState.ENABLED, **kw: object
) -> tuple[Instance, ...]:
    return (
        inst("a", priority=1, health=a, admin=a_admin, consecutive_failures=3 if a is U else 0),
        inst("b", priority=2, **kw),  # type: ignore[arg-type]
        inst("c", priority=3),
    )


@pytest.mark.parametrize(
    ("snap", "code", "should", "source", "target", "reason"),
    [
        (snapshot(), ReasonCode.NO_INSTANCES, False, None, None, "No instances registered"),
        (snapshot(*a_b_c()), ReasonCode.NO_ACTIVE_INSTANCE, True, None, "a", "activate a"),
        (
            snapshot(inst("a", health=U), inst("b", health=K)),
            ReasonCode.NO_HEALTHY_TARGET,
            False,
            None,
            None,
            "no eligible instance to activate",
        ),
        (
            snapshot(*a_b_c(U), active="a"),
            ReasonCode.ACTIVE_UNHEALTHY,
            True,
            "a",
            "b",
            "Active instance a unhealthy (3 failures)",
        ),
        (
            snapshot(*a_b_c(a_admin=AdminState.DRAIN), active="a"),
            ReasonCode.ACTIVE_UNAVAILABLE,
            True,
            "a",
            "b",
            "Active instance a draining",
        ),
        (
            snapshot(*a_b_c(K, AdminState.MAINTENANCE), active="a"),
            ReasonCode.ACTIVE_UNAVAILABLE,
            True,
            "a",
            "b",
            "Active instance a in maintenance",
        ),
        (
            snapshot(*a_b_c(K), active="a"),
            ReasonCode.ACTIVE_UNKNOWN,
            False,
            "a",
            None,
            "health unknown",
        ),
        (
            snapshot(*a_b_c(), active="a"),
            ReasonCode.ACTIVE_HEALTHY,
            False,
            "a",
            None,
            "Active instance a healthy",
        ),
        (
            snapshot(inst("a", health=U, consecutive_failures=4), inst("b", health=U), active="a"),
            ReasonCode.NO_HEALTHY_TARGET,
            False,
            "a",
            None,
            "Active instance a unhealthy (4 failures), but no other instance is eligible",
        ),
        # the strategy decides the target: round robin goes to the next after the source
        (
            snapshot(*a_b_c(health=U), active="a", failover_strategy=FailoverStrategy.ROUND_ROBIN),
            ReasonCode.ACTIVE_HEALTHY,
            False,
            "a",
            None,
            "healthy",
        ),
        (
            snapshot(
                inst("a", priority=1, health=U),
                inst("b", priority=2, active_connections=5),
                inst("c", priority=3, active_connections=1),
                active="a",
                failover_strategy=FailoverStrategy.LEAST_CONNECTIONS,
            ),
            ReasonCode.ACTIVE_UNHEALTHY,
            True,
            "a",
            "c",
            "unhealthy",
        ),
        # a pointer to an instance that no longer exists reads as no active instance
        (
            snapshot(*a_b_c(), active="deleted"),
            ReasonCode.NO_ACTIVE_INSTANCE,
            True,
            None,
            "a",
            "No active",
        ),
    ],
)
def test_evaluate_reason_codes(
    snap: ProxySnapshot,
    code: ReasonCode,
    should: bool,
    source: str | None,
    target: str | None,
    reason: str,
) -> None:
    result = evaluate(snap, NOW)
    assert result.reason_code is code
    assert result.should_failover is should
    assert result.source_instance_id == source
    assert result.target_instance_id == target
    assert reason in result.reason
    assert result.proxy_id == PROXY
    assert result.evaluated_at == NOW
    assert result.strategy is snap.config.failover_strategy
    assert result.active_instance_id == source


def failback_snapshot(healthy_since: timedelta | None, **config: object) -> ProxySnapshot:
    changed = None if healthy_since is None else NOW - healthy_since
    return snapshot(
        inst("a", priority=1, status_changed_at=changed),
        inst("b", priority=2),
        active="b",
        **{"enable_auto_failback": True, "failback_delay_seconds": 60.0, **config},  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    ("healthy_since", "config", "code"),
    [
        (timedelta(seconds=60), {}, ReasonCode.FAILBACK),
        (timedelta(seconds=600), {}, ReasonCode.FAILBACK),
        (timedelta(seconds=59.9), {}, ReasonCode.ACTIVE_HEALTHY),
        (None, {}, ReasonCode.ACTIVE_HEALTHY),
        (timedelta(seconds=600), {"enable_auto_failback": False}, ReasonCode.ACTIVE_HEALTHY),
        (timedelta(0), {"failback_delay_seconds": 0.0}, ReasonCode.FAILBACK),
    ],
)
def test_failback_waits_for_the_delay(
    healthy_since: timedelta | None, config: dict[str, object], code: ReasonCode
) -> None:
    result = evaluate(failback_snapshot(healthy_since, **config), NOW)
    assert result.reason_code is code
    if code is ReasonCode.FAILBACK:
        assert result.should_failover
        assert (result.source_instance_id, result.target_instance_id) == ("b", "a")
        assert result.event_type is EventType.FAILBACK
        assert "fail back from b" in result.reason
    else:
        assert not result.should_failover
        assert result.event_type is EventType.FAILOVER


def test_failback_only_to_the_first_instance_when_it_is_eligible() -> None:
    long_ago = NOW - timedelta(days=1)
    snap = snapshot(
        inst("a", priority=1, admin=AdminState.DRAIN, status_changed_at=long_ago),
        inst("b", priority=2, status_changed_at=long_ago),
        inst("c", priority=3),
        active="c",
        enable_auto_failback=True,
    )
    assert evaluate(snap, NOW).reason_code is ReasonCode.ACTIVE_HEALTHY
    # the first instance already active: nothing to fail back to
    snap = snapshot(
        inst("a", priority=1, status_changed_at=long_ago), active="a", enable_auto_failback=True
    )
    assert evaluate(snap, NOW).reason_code is ReasonCode.ACTIVE_HEALTHY


def test_evaluate_answers_the_same_with_auto_failover_off() -> None:
    on = evaluate(snapshot(*a_b_c(U), active="a"), NOW)
    off = evaluate(snapshot(*a_b_c(U), active="a", enable_auto_failover=False), NOW)
    assert on.should_failover
    assert off.should_failover
    assert (on.target_instance_id, on.reason_code) == (off.target_instance_id, off.reason_code)
    assert on.auto_failover_enabled
    assert not off.auto_failover_enabled


# --- check_execute -------------------------------------------------------------------------


def assert_raises_code(
    kind: type[FailoverError], code: ErrorCode, snap: ProxySnapshot, source: str | None, target: str
) -> FailoverError:
    with pytest.raises(kind) as caught:
        check_execute(snap, source, target)
    assert caught.value.code is code
    assert caught.value.message
    return caught.value


@pytest.mark.parametrize(
    ("snap", "source", "target", "kind", "code", "field"),
    [
        (
            snapshot(*a_b_c(), active="a"),
            "a",
            "nope",
            NotFound,
            ErrorCode.INSTANCE_NOT_FOUND,
            "targetInstanceId",
        ),
        (
            snapshot(*a_b_c(health=U), active="a"),
            "a",
            "b",
            Conflict,
            ErrorCode.TARGET_NOT_ELIGIBLE,
            "targetInstanceId",
        ),
        (
            snapshot(*a_b_c(admin=AdminState.DRAIN), active="a"),
            "a",
            "b",
            Conflict,
            ErrorCode.TARGET_NOT_ELIGIBLE,
            "targetInstanceId",
        ),
        (
            snapshot(*a_b_c(), active="a"),
            "a",
            "a",
            Conflict,
            ErrorCode.TARGET_NOT_ELIGIBLE,
            "targetInstanceId",
        ),
        (
            snapshot(*a_b_c(), active="a"),
            "c",
            "b",
            Conflict,
            ErrorCode.SOURCE_NOT_ACTIVE,
            "sourceInstanceId",
        ),
        (
            snapshot(*a_b_c(), active="a"),
            None,
            "b",
            Conflict,
            ErrorCode.SOURCE_NOT_ACTIVE,
            "sourceInstanceId",
        ),
        (snapshot(*a_b_c()), "a", "b", Conflict, ErrorCode.SOURCE_NOT_ACTIVE, "sourceInstanceId"),
    ],
)
def test_check_execute_errors(
    snap: ProxySnapshot,
    source: str | None,
    target: str,
    kind: type[FailoverError],
    code: ErrorCode,
    field: str,
) -> None:
    error = assert_raises_code(kind, code, snap, source, target)
    assert error.details["field"] == field


def test_check_execute_reports_why_a_target_is_ineligible() -> None:
    error = assert_raises_code(
        Conflict, ErrorCode.TARGET_NOT_ELIGIBLE, snapshot(*a_b_c(health=K), active="a"), "a", "b"
    )
    assert error.details["reason"] == "its health is unknown"
    error = assert_raises_code(
        Conflict,
        ErrorCode.TARGET_NOT_ELIGIBLE,
        snapshot(*a_b_c(admin=AdminState.MAINTENANCE), active="a"),
        "a",
        "b",
    )
    assert error.details["reason"] == "its admin state is maintenance"


def test_check_execute_reports_an_open_event_last() -> None:
    snap = snapshot(*a_b_c(), active="a", open_event=OPEN_EVENT)
    error = assert_raises_code(Conflict, ErrorCode.FAILOVER_IN_PROGRESS, snap, "a", "b")
    assert error.details == {"eventId": "ev-1"}
    # the order is 004, 011, 010, 009: earlier checks win over an open event
    assert_raises_code(NotFound, ErrorCode.INSTANCE_NOT_FOUND, snap, "x", "nope")
    assert_raises_code(Conflict, ErrorCode.TARGET_NOT_ELIGIBLE, snap, "b", "b")
    assert_raises_code(Conflict, ErrorCode.SOURCE_NOT_ACTIVE, snap, "c", "b")


def test_check_execute_target_of_another_proxy_is_not_eligible() -> None:
    snap = snapshot(*a_b_c(), active="a")
    with pytest.raises(Conflict) as caught:
        check_execute(snap, "a", "elsewhere", target_proxy_id="other-proxy")
    assert caught.value.code is ErrorCode.TARGET_NOT_ELIGIBLE
    assert caught.value.details["reason"] == "other proxy"
    # a target that is in this proxy is judged on its own merits whatever the hint says
    assert check_execute(snap, "a", "b", target_proxy_id="other-proxy") is EventType.SWITCHOVER


def test_check_execute_ineligible_target_wins_over_wrong_source() -> None:
    assert_raises_code(
        Conflict, ErrorCode.TARGET_NOT_ELIGIBLE, snapshot(*a_b_c(health=U), active="a"), "c", "b"
    )


@pytest.mark.parametrize(
    ("snap", "source", "event_type"),
    [
        (snapshot(*a_b_c()), None, EventType.FAILOVER),  # activation
        (snapshot(*a_b_c(U), active="a"), "a", EventType.FAILOVER),
        (snapshot(*a_b_c(K), active="a"), "a", EventType.FAILOVER),
        (snapshot(*a_b_c(a_admin=AdminState.DRAIN), active="a"), "a", EventType.FAILOVER),
        (snapshot(*a_b_c(), active="a"), "a", EventType.SWITCHOVER),
    ],
)
def test_check_execute_event_type(
    snap: ProxySnapshot, source: str | None, event_type: EventType
) -> None:
    assert check_execute(snap, source, "b") is event_type


# --- decide ---------------------------------------------------------------------------------


def test_decide_fails_over_with_a_sentence() -> None:
    decision = decide(snapshot(*a_b_c(U), active="a"), NOW)
    assert decision.action is DecisionAction.FAILOVER
    assert decision.reason == "active a unhealthy (3 failures): failing over to b"
    assert (decision.source_instance_id, decision.target_instance_id) == ("a", "b")
    assert decision.event_type is EventType.FAILOVER


def test_decide_moves_away_from_a_drained_active_even_with_an_open_manual_event() -> None:
    snap = snapshot(*a_b_c(a_admin=AdminState.DRAIN), active="a", open_event=OPEN_EVENT)
    decision = decide(snap, NOW)
    assert decision.action is DecisionAction.FAILOVER
    assert decision.reason_code is ReasonCode.ACTIVE_UNAVAILABLE
    assert decision.reason == "active a draining: failing over to b"


@pytest.mark.parametrize(
    ("snap", "code", "reason"),
    [
        (snapshot(*a_b_c(), active="a"), ReasonCode.ACTIVE_HEALTHY, "Active instance a healthy"),
        (snapshot(*a_b_c(K), active="a"), ReasonCode.ACTIVE_UNKNOWN, "health unknown"),
        (snapshot(), ReasonCode.NO_INSTANCES, "No instances"),
        (
            snapshot(inst("a", health=U), active="a"),
            ReasonCode.NO_HEALTHY_TARGET,
            "no other instance",
        ),
        (
            snapshot(*a_b_c(U), active="a", enable_auto_failover=False),
            ReasonCode.ACTIVE_UNHEALTHY,
            "auto failover is off: Active instance a unhealthy",
        ),
    ],
)
def test_decide_does_nothing(snap: ProxySnapshot, code: ReasonCode, reason: str) -> None:
    decision = decide(snap, NOW)
    assert decision.action is DecisionAction.NONE
    assert decision.reason_code is code
    assert reason in decision.reason
    assert decision.target_instance_id is None


def probed(
    name: str, priority: int, health: HealthStatus, *, checked: bool, **kw: object
) -> Instance:
    return inst(
        name,
        priority=priority,
        health=health,
        endpoint=f"{name}:8080",
        last_health_check=NOW if checked else None,
        **kw,  # type: ignore[arg-type]
    )


def test_activation_waits_for_every_first_probe() -> None:
    # b answered first, but a (preferred) has not been probed yet: wait rather than pick b
    snap = snapshot(
        probed("a", 1, K, checked=False, created_at=NOW),
        probed("b", 2, H, checked=True, created_at=NOW),
    )
    decision = decide(snap, NOW + timedelta(seconds=29))
    assert decision.action is DecisionAction.NONE
    assert decision.reason_code is ReasonCode.NO_ACTIVE_INSTANCE
    assert (
        decision.reason == "no active instance: waiting for the first probe of a before activating"
    )
    # ... until one interval since the first registration has passed
    decision = decide(snap, NOW + timedelta(seconds=30))
    assert decision.action is DecisionAction.ACTIVATE
    assert (decision.source_instance_id, decision.target_instance_id) == (None, "b")
    assert decision.reason == "no active instance: activating b"


@pytest.mark.parametrize(
    ("probing_for", "waits"),
    [
        (None, False),  # registered long ago, never probed by anyone: the interval rule lets go
        (0.0, True),  # the engine has just started probing a: its first answer may still come
        (34.9, True),  # within interval (30 s) + timeout (5 s) of the first probe's start
        (35.0, False),  # its first probe had all the time it could take
    ],
)
def test_activation_after_an_engine_restart_waits_for_probes_it_just_started(
    probing_for: float | None, waits: bool
) -> None:
    snap = snapshot(
        probed("a", 1, K, checked=False, created_at=NOW),
        probed("b", 2, H, checked=True, created_at=NOW),
        health_check_interval_seconds=30,
        health_check_timeout_seconds=5,
    )
    now = NOW + timedelta(days=1)
    since = {} if probing_for is None else {"a": now - timedelta(seconds=probing_for)}
    decision = decide(snap, now, since)
    if waits:
        assert decision.action is DecisionAction.NONE
        assert decision.reason == (
            "no active instance: waiting for the first probe of a before activating"
        )
    else:
        assert decision.action is DecisionAction.ACTIVATE
        assert decision.target_instance_id == "b"


def test_activation_goes_ahead_once_all_enabled_endpoints_were_probed() -> None:
    snap = snapshot(
        probed("a", 1, U, checked=True),
        probed("b", 2, H, checked=True),
        probed("m", 0, K, checked=False, admin=AdminState.MAINTENANCE),  # not probed: ignored
        inst("push", priority=5),  # no endpoint: health comes by reports only
        health_check_interval_seconds=3600,
    )
    decision = decide(snap, NOW)
    assert decision.action is DecisionAction.ACTIVATE
    assert decision.target_instance_id == "b"


def test_activation_without_registration_times_waits_for_probes() -> None:
    snap = snapshot(
        probed("a", 1, K, checked=False, created_at=None),
        probed("b", 2, H, checked=True, created_at=None),
    )
    assert decide(snap, NOW + timedelta(days=1)).action is DecisionAction.NONE


def test_decide_fails_back_after_the_delay_unless_a_switch_is_open() -> None:
    decision = decide(failback_snapshot(timedelta(seconds=61)), NOW)
    assert decision.action is DecisionAction.FAILBACK
    assert decision.event_type is EventType.FAILBACK
    assert decision.reason == "preferred a healthy for 60s: failing back from b"
    assert (decision.source_instance_id, decision.target_instance_id) == ("b", "a")
    assert decide(failback_snapshot(timedelta(seconds=59)), NOW).action is DecisionAction.NONE
    snap = failback_snapshot(timedelta(seconds=61))
    blocked = ProxySnapshot(snap.config, snap.instances, snap.redundancy, OPEN_EVENT)
    decision = decide(blocked, NOW)
    assert decision.action is DecisionAction.NONE
    assert decision.reason == "failback to a waits: a switch event is in progress"


fleets = st.lists(
    st.tuples(
        st.sampled_from([H, U, K]),
        st.sampled_from(list(AdminState)),
        st.integers(0, 3),
        st.booleans(),
        st.integers(0, 120),
    ),
    max_size=6,
).map(
    lambda rows: tuple(
        inst(
            f"i{n}",
            health=h,
            admin=a,
            priority=p,
            endpoint="h:1" if has_endpoint else None,
            last_health_check=NOW if has_endpoint and n % 2 else None,
            status_changed_at=NOW - timedelta(seconds=s),
            order=n,
        )
        for n, (h, a, p, has_endpoint, s) in enumerate(rows)
    )
)


@settings(max_examples=200, deadline=None)
@given(
    instances=fleets,
    data=st.data(),
    strategy=st.sampled_from(list(FailoverStrategy)),
    auto_failback=st.booleans(),
    auto_failover=st.booleans(),
)
def test_decisions_never_target_an_ineligible_instance(
    instances: tuple[Instance, ...],
    data: st.DataObject,
    strategy: FailoverStrategy,
    auto_failback: bool,
    auto_failover: bool,
) -> None:
    active = data.draw(st.sampled_from([None, *(i.id for i in instances)]))
    snap = snapshot(
        *instances,
        active=active,
        failover_strategy=strategy,
        enable_auto_failback=auto_failback,
        enable_auto_failover=auto_failover,
    )
    result = evaluate(snap, NOW)
    decision = decide(snap, NOW)
    assert result.should_failover == (result.target_instance_id is not None)
    for target_id in (result.target_instance_id, decision.target_instance_id):
        if target_id is not None:
            target = next(i for i in instances if i.id == target_id)
            assert is_eligible(target, active)
    if decision.action is not DecisionAction.NONE:
        assert auto_failover
        assert decision.target_instance_id == result.target_instance_id
        # what the engine does, a manual execute of the same move would accept
        assert check_execute(snap, active, decision.target_instance_id or "") in EventType
    assert decision.reason
    explanation = explain(snap, NOW)
    assert [e.preference_rank for e in explanation.instances] == list(range(1, len(instances) + 1))
    assert sum(e.is_active for e in explanation.instances) == (1 if snap.active else 0)


@settings(max_examples=300, deadline=None)
@given(
    instances=fleets,
    data=st.data(),
    strategy=st.sampled_from(list(FailoverStrategy)),
    auto_failback=st.booleans(),
    auto_failover=st.booleans(),
    later=st.integers(0, 600),
)
def test_no_decision_follows_the_state_a_manual_execute_commits(
    instances: tuple[Instance, ...],
    data: st.DataObject,
    strategy: FailoverStrategy,
    auto_failback: bool,
    auto_failover: bool,
    later: int,
) -> None:
    # Why the engine is not woken by a commit that only notified failover.started (only execute
    # does): on whatever state an accepted execute commits, core's decide answers NONE, now and
    # at any later time, whatever the probes' start times.
    # The target is made eligible by construction (execute refuses any other, tested above):
    # one of the fleet's instances, or one more, turned healthy and enabled; filtering the
    # fleets for one instead discarded most of them (Hypothesis' filter_too_much health check).
    n = data.draw(st.integers(0, len(instances)), label="target")
    drawn = instances[n] if n < len(instances) else inst(f"i{n}", order=n)
    chosen = dataclasses.replace(drawn, health_status=H, admin_state=AdminState.ENABLED)
    instances = (*instances[:n], chosen, *instances[n + 1 :])
    target = chosen.id
    active = data.draw(st.sampled_from([None, *(i.id for i in instances if i.id != target)]))
    assert is_eligible(chosen, active)
    before = snapshot(
        *instances,
        active=active,
        failover_strategy=strategy,
        enable_auto_failback=auto_failback,
        enable_auto_failover=auto_failover,
    )
    try:
        event_type = check_execute(before, active, target)
    except FailoverError:
        return  # refused: nothing committed
    opened = dataclasses.replace(
        OPEN_EVENT, event_type=event_type, source_instance_id=active, target_instance_id=target
    )
    after = dataclasses.replace(
        before,
        redundancy=dataclasses.replace(before.redundancy, active_instance_id=target, epoch=1),
        open_switch_event=opened,
    )
    probing_since = {i.id: NOW - timedelta(seconds=later % 7) for i in instances}
    when = NOW + timedelta(seconds=later)
    assert decide(after, when, probing_since).action is DecisionAction.NONE
    assert {NotificationType.FAILOVER_STARTED.value} == NO_DECISION_NOTIFICATIONS


# --- explain --------------------------------------------------------------------------------


def test_explain_says_why_each_instance_stands_where_it_does() -> None:
    snap = snapshot(
        inst("a", priority=1, consecutive_successes=4),
        inst("b", priority=2, consecutive_successes=2, consecutive_failures=0),
        inst("c", priority=3, health=U, consecutive_failures=5, consecutive_successes=1),
        inst("d", priority=4, health=K, admin=AdminState.MAINTENANCE),
        inst("e", priority=5, consecutive_failures=1, consecutive_successes=0),
        inst("f", priority=6, health=U, consecutive_failures=3),
        inst("g", priority=7, admin=AdminState.DRAIN),
        active="a",
    )
    explanation = explain(snap, NOW)
    reasons = {e.instance_id: e.reasons for e in explanation.instances}
    assert explanation.active_instance_id == "a"
    assert explanation.summary == (
        "a is active. Active instance a healthy. "
        "Pending: c recovering (1 of 2 successes); e failing (1 of 3 failures)"
    )
    assert (explanation.unhealthy_threshold, explanation.healthy_threshold) == (3, 2)
    assert explanation.evaluation.reason_code is ReasonCode.ACTIVE_HEALTHY
    assert reasons["a"] == ("active", "healthy (4 consecutive successes)")
    assert reasons["b"] == (
        "healthy (2 consecutive successes)",
        "eligible backup (rank 1)",
        "next failover target (priority strategy)",
    )
    assert reasons["c"] == (
        "unhealthy (5 consecutive failures, threshold 3)",
        "recovering (1 of 2 consecutive successes)",
        "not eligible",
    )
    assert reasons["d"] == (
        "health unknown (no check result yet)",
        "in maintenance",
        "not eligible",
    )
    assert reasons["e"] == (
        "healthy (0 consecutive successes)",
        "failing (1 of 3 failures before unhealthy)",
        "eligible backup (rank 2)",
    )
    assert reasons["f"] == ("unhealthy (3 consecutive failures, threshold 3)", "not eligible")
    assert reasons["g"] == ("healthy (0 consecutive successes)", "draining", "not eligible")
    by_id = {e.instance_id: e for e in explanation.instances}
    assert by_id["a"].is_active
    assert by_id["a"].is_eligible
    assert not by_id["g"].is_eligible
    assert by_id["c"].consecutive_failures == 5


def test_explain_summary_says_when_the_active_instance_is_failing_first() -> None:
    snap = snapshot(
        inst("a", priority=1, consecutive_failures=0),
        inst("b", priority=2, consecutive_failures=2),
        inst("c", priority=3, consecutive_failures=1),
        active="c",
    )
    assert explain(snap, NOW).summary == (
        "c is active. Active instance c healthy. "
        "Pending: c failing (1 of 3 failures); b failing (2 of 3 failures)"
    )
    quiet = snapshot(inst("a", consecutive_successes=3), active="a")
    assert "Pending" not in explain(quiet, NOW).summary


def test_explain_without_active_and_without_auto_recovery() -> None:
    snap = snapshot(inst("a", health=U, consecutive_failures=3), enable_auto_recovery=False)
    explanation = explain(snap, NOW)
    assert explanation.active_instance_id is None
    assert explanation.summary.startswith("No active instance and no eligible instance")
    assert explanation.instances[0].reasons == (
        "unhealthy (3 consecutive failures, threshold 3)",
        "auto recovery off: only a reported healthy status brings it back",
        "not eligible",
    )


def _decision(action: DecisionAction, source: str | None, target: str | None) -> Decision:
    return Decision(action, ReasonCode.ACTIVE_UNHEALTHY, "because", source, target)


FAILOVER_A_B = _decision(DecisionAction.FAILOVER, "a", "b")
FAILBACK_B_A = _decision(DecisionAction.FAILBACK, "b", "a")
ACTIVATE_A = _decision(DecisionAction.ACTIVATE, None, "a")


@pytest.mark.parametrize(
    ("snap", "decision", "holds"),
    [
        # the state the decision was made on: it holds
        (snapshot(*a_b_c(U), active="a"), FAILOVER_A_B, True),
        (snapshot(*a_b_c(a_admin=AdminState.DRAIN), active="a"), FAILOVER_A_B, True),
        (snapshot(*a_b_c(), active=None), ACTIVATE_A, True),
        (snapshot(*a_b_c(), active="b", enable_auto_failback=True), FAILBACK_B_A, True),
        # nothing to do, or nowhere to go
        (snapshot(*a_b_c(U), active="a"), _decision(DecisionAction.NONE, "a", None), False),
        (snapshot(*a_b_c(U), active="a"), _decision(DecisionAction.FAILOVER, "a", None), False),
        # automatic failover switched off meanwhile
        (snapshot(*a_b_c(U), active="a", enable_auto_failover=False), FAILOVER_A_B, False),
        # someone moved the active role meanwhile
        (snapshot(*a_b_c(U), active="c"), FAILOVER_A_B, False),
        (snapshot(*a_b_c(), active="a"), ACTIVATE_A, False),
        # the target went away or stopped being eligible
        (snapshot(*a_b_c(U)[:1], active="a"), FAILOVER_A_B, False),
        (snapshot(*a_b_c(U, health=U), active="a"), FAILOVER_A_B, False),
        (snapshot(*a_b_c(U, admin=AdminState.DRAIN), active="a"), FAILOVER_A_B, False),
        # the active instance recovered (and is enabled): no failover away from it
        (snapshot(*a_b_c(), active="a"), FAILOVER_A_B, False),
        # failback: switched off meanwhile, or a manual switch opened
        (snapshot(*a_b_c(), active="b"), FAILBACK_B_A, False),
        (
            snapshot(*a_b_c(), active="b", enable_auto_failback=True, open_event=OPEN_EVENT),
            FAILBACK_B_A,
            False,
        ),
    ],
)
def test_decision_holds_only_on_the_state_it_was_made_for(
    snap: ProxySnapshot, decision: Decision, holds: bool
) -> None:
    assert decision_holds(snap, decision) is holds


def test_decision_for_a_vanished_active_instance_still_holds_as_a_failover() -> None:
    """The pointer names an instance no longer in the snapshot: nothing is active any more."""
    snap = snapshot(*a_b_c()[1:], active="a")
    assert decision_holds(snap, _decision(DecisionAction.FAILOVER, None, "b"))


@pytest.mark.parametrize(
    ("snap", "instance", "plan"),
    [
        # a backup is simply removed, even while a switch is open
        (snapshot(*a_b_c(), active="a"), "b", DeletionPlan(hands_over=False)),
        (snapshot(*a_b_c(), active="a", open_event=OPEN_EVENT), "c", DeletionPlan(False)),
        (snapshot(*a_b_c(), active=None), "a", DeletionPlan(hands_over=False)),
        # the active one hands its role to the strategy's choice
        (
            snapshot(*a_b_c(), active="a"),
            "a",
            DeletionPlan(True, "b", "Active instance a deleted"),
        ),
        # the last instance hands it to nobody (decommissioning)
        (
            snapshot(*a_b_c()[:1], active="a"),
            "a",
            DeletionPlan(
                True, None, "Active instance a deleted (last instance: no active instance left)"
            ),
        ),
    ],
)
def test_plan_deletion(snap: ProxySnapshot, instance: str, plan: DeletionPlan) -> None:
    found = next(i for i in snap.instances if i.id == instance)
    assert plan_deletion(snap, found) == plan


@pytest.mark.parametrize(
    ("snap", "code"),
    [
        (snapshot(*a_b_c(), active="a", open_event=OPEN_EVENT), ErrorCode.FAILOVER_IN_PROGRESS),
        (
            snapshot(
                inst("a", priority=1),
                inst("b", priority=2, health=U),
                inst("c", priority=3, admin=AdminState.MAINTENANCE),
                active="a",
            ),
            ErrorCode.NO_ELIGIBLE_TARGET,
        ),
    ],
)
def test_plan_deletion_refuses_to_strand_or_race_the_active_role(
    snap: ProxySnapshot, code: ErrorCode
) -> None:
    with pytest.raises(Conflict) as raised:
        plan_deletion(snap, snap.instances[0])
    assert raised.value.code is code
