"""core.dataplane: who takes traffic, at what weight, where it goes, when connections are cut."""

from __future__ import annotations

import pytest

from proxy_failover.core.dataplane import (
    SwitchPolicy,
    connections_to_cut,
    desired_state,
    format_address,
    is_newer_or_same,
    is_planned_move,
    leaving_policy,
    moved_by_event,
    split_host_port,
    stopped_serving,
    told_by_event,
    traffic_address,
    traffic_weights,
    with_health,
)
from proxy_failover.core.model import AdminState, HealthStatus, LoadBalancingAlgorithm
from tests.helpers.factories import PROXY, inst


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("relay:1935", ("relay", 1935)),
        ("10.0.0.1:80", ("10.0.0.1", 80)),
        ("[::1]:8080", ("::1", 8080)),
        ("::1:8080", None),  # IPv6 needs brackets
        ("[]:80", None),
        ("relay", None),
        ("relay:0", None),
        ("relay:65536", None),
        ("relay:http", None),
        (":80", None),
    ],
)
def test_split_host_port(text: str, expected: tuple[str, int] | None) -> None:
    assert split_host_port(text) == expected


@pytest.mark.parametrize(
    ("endpoint", "expected"),
    [
        (None, None),
        ("relay:1935", ("relay", 1935)),
        ("http://relay:8080/health", ("relay", 8080)),
        ("http://relay/health", ("relay", 80)),
        ("https://relay", ("relay", 443)),
        ("https://[::1]:8443/", ("::1", 8443)),
        ("ftp://relay", None),  # no known default port
        ("http://relay:99999/", None),  # a port urllib refuses
        ("http:///nohost", None),
    ],
)
def test_traffic_address_defaults_to_the_endpoints_host_and_port(
    endpoint: str | None, expected: tuple[str, int] | None
) -> None:
    assert traffic_address(inst("a", endpoint=endpoint)) == expected


def test_an_explicit_traffic_address_wins_over_the_endpoint() -> None:
    instance = inst("a", endpoint="http://10.0.0.1:8080/health", traffic_address="[fd00::1]:1935")
    assert traffic_address(instance) == ("fd00::1", 1935)
    assert format_address(traffic_address(instance)) == "[fd00::1]:1935"
    assert format_address(("relay", 1935)) == "relay:1935"
    assert format_address(None) is None


def test_traffic_weights_count_zero_weights_as_one_only_when_all_are_zero() -> None:
    assert traffic_weights([inst("a", weight=0), inst("b", weight=5)]) == {"a": 0, "b": 5}
    assert traffic_weights([inst("a", weight=0), inst("b", weight=0)]) == {"a": 1, "b": 1}
    assert traffic_weights([]) == {}


def test_only_the_active_instance_serves_without_load_balancing() -> None:
    instances = [
        inst("b", priority=2, endpoint="b:2"),
        inst("a", priority=1, endpoint="a:1"),
        inst("c", priority=3, health=HealthStatus.UNHEALTHY, endpoint="c:3"),
    ]
    state = desired_state(PROXY, instances, "b", 7, load_balanced=False)
    assert [t.name for t in state.targets] == ["a", "b", "c"]  # preference order
    assert [t.name for t in state.serving] == ["b"]
    assert (state.epoch, state.active_instance_id) == (7, "b")
    c = state.target("c")
    assert c is not None
    assert (c.healthy, c.eligible, c.address) == (False, False, ("c", 3))
    assert state.target("missing") is None
    assert [i.id for i in state.instances] == ["a", "b", "c"]


def test_an_unhealthy_active_instance_still_serves_until_the_control_plane_moves_it() -> None:
    instances = [inst("a", health=HealthStatus.UNHEALTHY)]
    state = desired_state(PROXY, instances, "a", 1, load_balanced=False)
    assert [t.name for t in state.serving] == ["a"]


def test_load_balancing_serves_every_eligible_instance_with_a_weight() -> None:
    instances = [
        inst("a", weight=300),
        inst("b", weight=0),
        inst("c", admin=AdminState.DRAIN),
        inst("d", health=HealthStatus.UNKNOWN),
    ]
    state = desired_state(
        PROXY, instances, "a", 1, load_balanced=True, algorithm=LoadBalancingAlgorithm.WEIGHTED
    )
    assert [t.name for t in state.serving] == ["a"]
    assert {t.name: t.weight for t in state.targets} == {"a": 300, "b": 0, "c": 100, "d": 100}
    assert state.algorithm is LoadBalancingAlgorithm.WEIGHTED
    zeros = desired_state(
        PROXY, [inst("a", weight=0), inst("b", weight=0)], None, 1, load_balanced=True
    )
    assert [t.name for t in zeros.serving] == ["a", "b"]


@pytest.mark.parametrize(
    ("epoch", "applied", "expected"),
    [(5, None, True), (5, 5, True), (6, 5, True), (4, 5, False)],
)
def test_fencing_applies_only_states_not_older_than_the_applied_one(
    epoch: int, applied: int | None, expected: bool
) -> None:
    assert is_newer_or_same(epoch, applied) is expected


def test_moving_away_from_a_healthy_instance_is_planned_and_drains_by_default() -> None:
    state = desired_state(
        PROXY,
        [
            inst("a"),
            inst("b", health=HealthStatus.UNHEALTHY),
            inst("c", health=HealthStatus.UNKNOWN),
        ],
        "a",
        1,
        load_balanced=False,
    )
    healthy, unhealthy, unknown = (state.target(n) for n in "abc")
    assert [is_planned_move(t) for t in (healthy, unhealthy, unknown, None)] == [
        True,
        False,
        False,
        False,
    ]
    assert leaving_policy(healthy) is SwitchPolicy.DRAIN
    assert leaving_policy(unhealthy) is SwitchPolicy.CUT
    assert leaving_policy(None) is SwitchPolicy.CUT  # removed
    assert leaving_policy(healthy, planned=SwitchPolicy.CUT) is SwitchPolicy.CUT


def test_stopped_serving_lists_instances_that_left_the_traffic_or_the_proxy() -> None:
    instances = [inst("a"), inst("b"), inst("c")]
    before = desired_state(PROXY, instances, "a", 1, load_balanced=False)
    assert stopped_serving(None, before) == []
    assert stopped_serving(before, before) == []
    moved = desired_state(PROXY, instances, "b", 2, load_balanced=False)
    assert stopped_serving(before, moved) == [("a", moved.target("a"))]
    removed = desired_state(PROXY, instances[1:], "b", 2, load_balanced=False)
    assert stopped_serving(before, removed) == [("a", None)]


def test_a_switch_announced_by_an_event_moves_the_traffic_without_a_read() -> None:
    before = desired_state(PROXY, [inst("a"), inst("b")], "a", 3, load_balanced=False)
    after = moved_by_event(before, "b", 4)
    assert after is not None
    assert (after.epoch, after.active_instance_id) == (4, "b")
    assert [t.name for t in after.serving] == ["b"]
    assert moved_by_event(before, "b", 2) is None  # older than what is applied
    assert moved_by_event(before, "zz", 4) is None  # unknown target: read the state instead
    assert moved_by_event(before, None, 4) is None
    balanced = desired_state(PROXY, [inst("a"), inst("b")], "a", 3, load_balanced=True)
    assert moved_by_event(balanced, "b", 4) is None


def test_a_health_event_is_folded_in_so_the_move_that_follows_cuts() -> None:
    before = desired_state(PROXY, [inst("a"), inst("b"), inst("c")], "a", 3, load_balanced=False)
    sick = with_health(before, "a", "unhealthy")
    assert sick is not None
    a = sick.target("a")
    assert a is not None
    assert (a.healthy, a.eligible, a.serving) == (False, False, True)  # still active until moved
    moved = moved_by_event(sick, "b", 4)
    assert moved is not None
    assert leaving_policy(moved.target("a")) is SwitchPolicy.CUT
    assert with_health(sick, "a", "unhealthy") is None  # nothing new
    assert with_health(before, "zz", "unhealthy") is None
    assert with_health(before, "a", "unknown") is None
    assert with_health(before, "a", None) is None
    balanced = desired_state(PROXY, [inst("a"), inst("b")], None, 3, load_balanced=True)
    pool = with_health(balanced, "b", "unhealthy")
    assert pool is not None
    assert [t.name for t in pool.serving] == ["a"]
    back = with_health(pool, "b", "healthy")
    assert back is not None
    assert [t.name for t in back.serving] == ["a", "b"]


_MOVE = {"eventType": "failover", "targetInstanceId": "b"}
_SICK = {"instanceId": "a", "status": "unhealthy"}


@pytest.mark.parametrize(
    ("notification", "data", "epoch", "active", "a_healthy"),
    [
        ("failover.started", _MOVE, 4, "b", True),
        ("failover.completed", _MOVE, 4, "b", True),
        ("failover.completed", {**_MOVE, "eventType": "failback"}, 4, "b", True),
        ("failover.completed", {**_MOVE, "eventType": "switchover"}, 4, "b", True),
        ("failover.completed", {**_MOVE, "eventType": "recovery"}, 4, None, None),
        ("failover.completed", _MOVE, None, None, None),  # no epoch: read the state
        ("failover.failed", _MOVE, 4, None, None),
        ("instance.unhealthy", _SICK, 3, "a", False),
        ("instance.healthy", {**_SICK, "status": "healthy"}, 3, None, None),  # nothing new
        ("instance.unhealthy", _MOVE, 3, None, None),
        ("redundancy.degraded", _MOVE, 4, None, None),
        ("instance.recovery_failed", _SICK, 3, None, None),
    ],
)
def test_what_a_stream_notification_tells_at_once(
    notification: str,
    data: dict[str, object],
    epoch: int | None,
    active: str | None,
    a_healthy: bool | None,
) -> None:
    """A switching event that started or completed moves the role, a health transition changes
    one instance; anything else (or what cannot be applied alone) waits for the full read."""
    before = desired_state(PROXY, [inst("a"), inst("b")], "a", 3, load_balanced=False)
    told = told_by_event(before, notification, data, epoch)
    if active is None:
        assert told is None
        return
    assert told is not None
    a = told.target("a")
    assert a is not None
    assert (told.active_instance_id, told.epoch, a.healthy) == (active, epoch, a_healthy)


def test_connections_are_cut_on_instances_that_serve_nothing_and_are_not_healthy() -> None:
    instances = [inst("a"), inst("b"), inst("c", health=HealthStatus.UNHEALTHY)]
    state = desired_state(PROXY, instances, "a", 1, load_balanced=False)
    # a serves; b was drained and is healthy (kept); c is unhealthy; d was removed.
    assert connections_to_cut(state, ["a", "b", "c", "d"]) == ["c", "d"]
