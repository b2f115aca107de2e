"""core.envoy: the ClusterLoadAssignment of a desired state, its priorities and its version."""

from __future__ import annotations

from typing import Any

from proxy_failover.core.dataplane import desired_state
from proxy_failover.core.envoy import (
    EDS_TYPE_URL,
    cluster_load_assignment,
    discovery_response,
    priorities,
)
from proxy_failover.core.model import AdminState, HealthStatus
from tests.helpers.factories import PROXY, inst


def _hosts(assignment: dict[str, Any]) -> dict[int, list[tuple[str, int, int]]]:
    """priority -> [(address, port, weight)] in the order sent."""
    found: dict[int, list[tuple[str, int, int]]] = {}
    for group in assignment["endpoints"]:
        for lb in group["lb_endpoints"]:
            socket = lb["endpoint"]["address"]["socket_address"]
            found.setdefault(group["priority"], []).append(
                (socket["address"], socket["port_value"], lb["load_balancing_weight"])
            )
    return found


def _three() -> list[Any]:
    return [
        inst("c", priority=3, endpoint="10.0.0.3:1935", weight=50),
        inst("a", priority=1, endpoint="http://10.0.0.1:8080/health"),
        inst("b", priority=2, endpoint="http://b/health", traffic_address="10.0.0.2:1935"),
    ]


def test_active_at_priority_0_the_other_eligible_ones_at_priority_1_in_preference_order() -> None:
    state = desired_state(PROXY, _three(), "b", 4, load_balanced=False)
    assignment = cluster_load_assignment(state)
    assert assignment["@type"] == EDS_TYPE_URL
    assert assignment["cluster_name"] == PROXY
    assert _hosts(assignment) == {
        0: [("10.0.0.2", 1935, 100)],
        1: [("10.0.0.1", 8080, 100), ("10.0.0.3", 1935, 50)],
    }
    first = assignment["endpoints"][0]["lb_endpoints"][0]
    assert first["endpoint"]["hostname"] == "b"
    assert first["metadata"]["filter_metadata"]["proxy_failover"] == {
        "instance_id": "b",
        "name": "b",
    }


def test_ineligible_and_addressless_instances_are_left_out_of_priority_1() -> None:
    instances = [
        inst("a", priority=1, endpoint="10.0.0.1:1"),
        inst("b", priority=2, endpoint="10.0.0.2:2", health=HealthStatus.UNHEALTHY),
        inst("c", priority=3, endpoint="10.0.0.3:3", admin=AdminState.MAINTENANCE),
        inst("d", priority=4),  # no endpoint, no traffic address: nowhere to send traffic
        inst("e", priority=5, endpoint="10.0.0.5:5", health=HealthStatus.UNKNOWN),
    ]
    state = desired_state(PROXY, instances, "a", 1, load_balanced=False)
    first, second = priorities(state)
    assert [t.name for t in first] == ["a"]
    assert [t.name for t in second] == []
    assert [g["priority"] for g in cluster_load_assignment(state)["endpoints"]] == [0]


def test_an_unhealthy_active_keeps_priority_0_until_the_control_plane_moves_it() -> None:
    instances = [
        inst("a", priority=1, endpoint="10.0.0.1:1", health=HealthStatus.UNHEALTHY),
        inst("b", priority=2, endpoint="10.0.0.2:2"),
    ]
    state = desired_state(PROXY, instances, "a", 2, load_balanced=False)
    assert _hosts(cluster_load_assignment(state)) == {
        0: [("10.0.0.1", 1, 100)],
        1: [("10.0.0.2", 2, 100)],
    }


def test_no_active_instance_leaves_priority_0_empty_and_envoy_spills_to_priority_1() -> None:
    state = desired_state(PROXY, _three(), None, 0, load_balanced=False)
    assignment = cluster_load_assignment(state)
    assert assignment["endpoints"][0] == {"priority": 0, "lb_endpoints": []}
    assert [h[0] for h in _hosts(assignment)[1]] == ["10.0.0.1", "10.0.0.2", "10.0.0.3"]


def test_load_balancing_puts_every_serving_instance_at_priority_0_at_its_weight() -> None:
    instances = [
        inst("a", priority=1, endpoint="10.0.0.1:1", weight=300),
        inst("b", priority=2, endpoint="10.0.0.2:2", weight=0),  # eligible, weight 0
        inst("c", priority=3, endpoint="10.0.0.3:3", weight=100),
    ]
    state = desired_state(PROXY, instances, "a", 3, load_balanced=True)
    # Envoy refuses weight 0: the weight-0 instance waits at priority 1 (weight 1 there).
    assert _hosts(cluster_load_assignment(state)) == {
        0: [("10.0.0.1", 1, 300), ("10.0.0.3", 3, 100)],
        1: [("10.0.0.2", 2, 1)],
    }


def test_an_unchanged_state_answers_the_same_version_and_any_change_a_new_one() -> None:
    base = discovery_response([desired_state(PROXY, _three(), "b", 4, load_balanced=False)])
    again = discovery_response([desired_state(PROXY, _three(), "b", 4, load_balanced=False)])
    assert base == again
    assert base["type_url"] == EDS_TYPE_URL
    assert base["version_info"].startswith("4-")
    assert base["control_plane"] == {"identifier": "proxy-failover"}

    moved = discovery_response([desired_state(PROXY, _three(), "a", 5, load_balanced=False)])
    reweighted_instances = _three()
    reweighted_instances[0] = inst("c", priority=3, endpoint="10.0.0.3:1935", weight=60)
    reweighted = discovery_response(
        [desired_state(PROXY, reweighted_instances, "b", 4, load_balanced=False)]
    )
    versions = {base["version_info"], moved["version_info"], reweighted["version_info"]}
    assert len(versions) == 3
    assert reweighted["version_info"].startswith("4-")  # same epoch, other content


def test_several_clusters_answer_in_the_order_named_with_every_epoch_in_the_version() -> None:
    one = desired_state("one", _three(), "a", 2, load_balanced=False)
    two = desired_state("two", _three(), "c", 9, load_balanced=False)
    response = discovery_response([two, one])
    assert [r["cluster_name"] for r in response["resources"]] == ["two", "one"]
    assert response["version_info"].startswith("9.2-")
