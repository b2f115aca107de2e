"""Target selection (SPEC §5) and load-balanced routing: order, eligibility, fairness."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy_failover.core.model import (
    AdminState,
    FailoverStrategy,
    HealthStatus,
    Instance,
    LoadBalancingAlgorithm,
)
from proxy_failover.core.strategies import (
    RouteCursor,
    in_preference_order,
    is_eligible,
    pick_route,
    preference_key,
    select_target,
)
from tests.helpers.factories import inst

H, U, K = HealthStatus.HEALTHY, HealthStatus.UNHEALTHY, HealthStatus.UNKNOWN
PRIO, RR, LC = (
    FailoverStrategy.PRIORITY,
    FailoverStrategy.ROUND_ROBIN,
    FailoverStrategy.LEAST_CONNECTIONS,
)


def ids(instances: tuple[Instance, ...]) -> list[str]:
    return [i.id for i in instances]


def test_preference_order_priority_then_weight_then_registration_then_id() -> None:
    instances = [
        inst("z-undated", priority=1, created_at=None),
        inst("b", priority=1, order=5),
        inst("a", priority=1, order=5),
        inst("early", priority=1, order=1),
        inst("heavy", priority=1, weight=900, order=9),
        inst("first", priority=0, weight=1, order=99),
    ]
    assert ids(in_preference_order(instances)) == ["first", "heavy", "early", "a", "b", "z-undated"]
    assert preference_key(inst("x", created_at=None))[2] == float("inf")
    dated = inst("x", created_at=datetime(2026, 1, 1, tzinfo=UTC))
    assert preference_key(dated) == (100, -100, dated.created_at.timestamp(), "x")  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("instance", "source", "eligible"),
    [
        (inst("a"), None, True),
        (inst("a"), "a", False),
        (inst("a"), "b", True),
        (inst("a", health=U), None, False),
        (inst("a", health=K), None, False),
        (inst("a", admin=AdminState.DRAIN), None, False),
        (inst("a", admin=AdminState.MAINTENANCE), None, False),
    ],
)
def test_is_eligible(instance: Instance, source: str | None, eligible: bool) -> None:
    assert is_eligible(instance, source) is eligible


FLEET = [
    inst("a", priority=1, active_connections=9),
    inst("b", priority=2, health=U, active_connections=0),
    inst("c", priority=3, active_connections=None),
    inst("d", priority=4, active_connections=0),
    inst("e", priority=5, admin=AdminState.DRAIN, active_connections=0),
]


@pytest.mark.parametrize(
    ("strategy", "source", "expected"),
    [
        (PRIO, None, "a"),
        (PRIO, "a", "c"),
        (PRIO, "c", "a"),
        (RR, "a", "c"),  # skips unhealthy b
        (RR, "c", "d"),
        (RR, "d", "a"),  # wraps around, skipping drained e
        (RR, "e", "a"),  # after an ineligible source, still in order
        (RR, "b", "c"),
        (RR, None, "a"),
        (RR, "unknown-id", "a"),
        (LC, None, "c"),  # None counts as 0; tie with d broken by preference
        (LC, "c", "d"),
        (LC, "d", "c"),
    ],
)
def test_select_target_table(strategy: FailoverStrategy, source: str | None, expected: str) -> None:
    target = select_target(list(reversed(FLEET)), strategy, source)
    assert target is not None
    assert target.id == expected


@pytest.mark.parametrize("strategy", list(FailoverStrategy))
def test_select_target_none_when_nothing_eligible(strategy: FailoverStrategy) -> None:
    assert select_target([inst("a", health=U), inst("b")], strategy, "b") is None
    assert select_target([], strategy, None) is None


instance_lists = st.lists(
    st.tuples(
        st.sampled_from([H, H, U, K]),
        st.sampled_from(
            [AdminState.ENABLED, AdminState.ENABLED, AdminState.DRAIN, AdminState.MAINTENANCE]
        ),
        st.integers(0, 3),
        st.integers(0, 5),
        st.one_of(st.none(), st.integers(0, 5)),
    ),
    max_size=8,
).map(
    lambda rows: [
        inst(f"i{n}", health=h, admin=a, priority=p, weight=w, active_connections=c, order=n)
        for n, (h, a, p, w, c) in enumerate(rows)
    ]
)


@settings(max_examples=150, deadline=None)
@given(instances=instance_lists, strategy=st.sampled_from(list(FailoverStrategy)), data=st.data())
def test_never_an_ineligible_target(
    instances: list[Instance], strategy: FailoverStrategy, data: st.DataObject
) -> None:
    source = data.draw(st.sampled_from([None, "missing", *(i.id for i in instances)]))
    target = select_target(instances, strategy, source)
    eligible = [i for i in instances if is_eligible(i, source)]
    if target is None:
        assert eligible == []
    else:
        assert is_eligible(target, source)
        assert target.id != source


@settings(max_examples=150, deadline=None)
@given(instances=instance_lists)
def test_round_robin_failover_visits_every_eligible_before_repeating(
    instances: list[Instance],
) -> None:
    eligible = {i.id for i in instances if is_eligible(i)}
    if len(eligible) < 2:
        return
    source: str | None = None
    seen: list[str] = []
    for _ in range(len(eligible)):
        target = select_target(instances, RR, source)
        assert target is not None
        seen.append(target.id)
        source = target.id
    assert set(seen) == eligible


@settings(max_examples=150, deadline=None)
@given(instances=instance_lists, algorithm=st.sampled_from(list(LoadBalancingAlgorithm)))
def test_pick_route_only_picks_eligible(
    instances: list[Instance], algorithm: LoadBalancingAlgorithm
) -> None:
    cursor = RouteCursor()
    for _ in range(6):
        pick, cursor = pick_route(instances, algorithm, cursor)
        if pick is None:
            assert not any(is_eligible(i) for i in instances)
            assert cursor == RouteCursor()
            return
        assert is_eligible(pick)
        assert cursor.last_instance_id == pick.id


@settings(max_examples=150, deadline=None)
@given(instances=instance_lists)
def test_round_robin_route_visits_every_eligible_before_repeating(
    instances: list[Instance],
) -> None:
    eligible = {i.id for i in instances if is_eligible(i)}
    cursor = RouteCursor()
    picks: list[str] = []
    for _ in range(2 * len(eligible)):
        pick, cursor = pick_route(instances, LoadBalancingAlgorithm.ROUND_ROBIN, cursor)
        assert pick is not None
        picks.append(pick.id)
    n = len(eligible)
    assert set(picks[:n]) == eligible
    assert picks[n:] == picks[:n]


def test_round_robin_route_continues_after_a_pick_that_left_the_pool() -> None:
    fleet = [inst("a", priority=1), inst("b", priority=2, health=U), inst("c", priority=3)]
    pick, _ = pick_route(fleet, LoadBalancingAlgorithm.ROUND_ROBIN, RouteCursor("b"))
    assert pick is not None
    assert pick.id == "c"
    only = [inst("a")]
    pick, _ = pick_route(only, LoadBalancingAlgorithm.ROUND_ROBIN, RouteCursor("a"))
    assert pick is not None
    assert pick.id == "a"


def test_least_connections_route() -> None:
    pick, cursor = pick_route(FLEET, LoadBalancingAlgorithm.LEAST_CONNECTIONS, RouteCursor())
    assert pick is not None
    assert pick.id == "c"
    assert cursor.last_instance_id == "c"


def test_smooth_weighted_matches_nginx_sequence() -> None:
    # nginx's documented example: weights 5, 1, 1 -> a a b a c a a
    fleet = [
        inst("a", weight=5, order=0),
        inst("b", weight=1, order=1),
        inst("c", weight=1, order=2),
    ]
    cursor = RouteCursor()
    picks = []
    for _ in range(7):
        pick, cursor = pick_route(fleet, LoadBalancingAlgorithm.WEIGHTED, cursor)
        assert pick is not None
        picks.append(pick.id)
    assert picks == ["a", "a", "b", "a", "c", "a", "a"]
    assert dict(cursor.current_weights) == {"a": 0, "b": 0, "c": 0}


def test_weighted_skips_weight_zero_unless_all_are_zero() -> None:
    fleet = [inst("zero", weight=0, priority=1), inst("one", weight=1, priority=2)]
    cursor = RouteCursor()
    for _ in range(4):
        pick, cursor = pick_route(fleet, LoadBalancingAlgorithm.WEIGHTED, cursor)
        assert pick is not None
        assert pick.id == "one"
    zeros = [inst("x", weight=0, order=0), inst("y", weight=0, order=1)]
    cursor = RouteCursor()
    picks = []
    for _ in range(4):
        pick, cursor = pick_route(zeros, LoadBalancingAlgorithm.WEIGHTED, cursor)
        assert pick is not None
        picks.append(pick.id)
    assert picks == ["x", "y", "x", "y"]


def test_weighted_drops_state_of_instances_that_left() -> None:
    fleet = [inst("a", weight=2)]
    pick, cursor = pick_route(
        fleet, LoadBalancingAlgorithm.WEIGHTED, RouteCursor("gone", {"gone": 7})
    )
    assert pick is not None
    assert pick.id == "a"
    assert dict(cursor.current_weights) == {"a": 0}


@settings(max_examples=100, deadline=None)
@given(weights=st.lists(st.integers(1, 20), min_size=1, max_size=6), data=st.data())
def test_smooth_weighted_is_proportional_over_a_full_cycle(
    weights: list[int], data: st.DataObject
) -> None:
    fleet = [inst(f"i{n}", weight=w, order=n) for n, w in enumerate(weights)]
    ineligible = data.draw(st.sampled_from([H, U]))
    fleet.append(inst("out", weight=50, health=ineligible, admin=AdminState.DRAIN))
    cursor = RouteCursor()
    counts: Counter[str] = Counter()
    for _ in range(sum(weights)):
        pick, cursor = pick_route(fleet, LoadBalancingAlgorithm.WEIGHTED, cursor)
        assert pick is not None
        counts[pick.id] += 1
    assert counts == {f"i{n}": w for n, w in enumerate(weights)}
