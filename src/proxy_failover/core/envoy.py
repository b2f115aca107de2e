"""Envoy EDS (SPEC §9): the ``ClusterLoadAssignment`` of a proxy's desired state, and the
``DiscoveryResponse`` that carries it, for REST-JSON xDS and for Envoy's file subscription alike.

The cluster is named by the proxy id. The active instance sits at priority 0; the other eligible
instances, in preference order, at priority 1, so an Envoy whose own health checking or outlier
detection ejects the active one fails over locally before the control plane reacts. With load
balancing on, every serving instance is at priority 0 at its weight. ``version_info`` is derived
from the epochs and the content: an unchanged state answers the same version.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from proxy_failover.core.dataplane import DesiredState, TrafficTarget

EDS_TYPE_URL = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
#: Who answered (``DiscoveryResponse.control_plane.identifier``).
CONTROL_PLANE_ID = "proxy-failover"
#: Envoy refuses ``load_balancing_weight`` 0 (its range starts at 1).
MIN_ENVOY_WEIGHT = 1


def _lb_endpoint(target: TrafficTarget) -> dict[str, Any]:
    assert target.address is not None
    host, port = target.address
    return {
        "endpoint": {
            "address": {"socket_address": {"address": host, "port_value": port}},
            "hostname": target.name,
        },
        "metadata": {
            "filter_metadata": {
                "proxy_failover": {"instance_id": target.instance_id, "name": target.name}
            }
        },
        "load_balancing_weight": max(MIN_ENVOY_WEIGHT, target.weight),
    }


def priorities(state: DesiredState) -> tuple[list[TrafficTarget], list[TrafficTarget]]:
    """(priority 0, priority 1), both in preference order, only targets with an address: the
    serving ones first; then the other eligible ones. An ineligible instance that still serves
    (an unhealthy active the control plane has not moved yet) keeps priority 0: Envoy follows,
    it does not decide."""
    first = [t for t in state.targets if t.serving and t.address is not None]
    second = [t for t in state.targets if not t.serving and t.eligible and t.address is not None]
    return first, second


def cluster_load_assignment(state: DesiredState) -> dict[str, Any]:
    """The proxy's ``ClusterLoadAssignment`` as proto3 JSON (field names as in the .proto)."""
    first, second = priorities(state)
    endpoints: list[dict[str, Any]] = [
        {"priority": 0, "lb_endpoints": [_lb_endpoint(t) for t in first]}
    ]
    if second:
        endpoints.append({"priority": 1, "lb_endpoints": [_lb_endpoint(t) for t in second]})
    return {"@type": EDS_TYPE_URL, "cluster_name": state.proxy_id, "endpoints": endpoints}


def eds_version(states: Sequence[DesiredState], resources: Sequence[dict[str, Any]]) -> str:
    """``<epoch>[.<epoch>...]-<digest>``: the epochs say when the active role last moved, the
    digest (of the canonical JSON of the resources) everything else (health, weights, addresses),
    so equal states give equal versions and any change a new one."""
    epochs = ".".join(str(s.epoch) for s in states)
    canonical = json.dumps(resources, sort_keys=True, separators=(",", ":"))
    return f"{epochs}-{hashlib.sha256(canonical.encode()).hexdigest()[:16]}"


def discovery_response(states: Sequence[DesiredState]) -> dict[str, Any]:
    """The ``DiscoveryResponse`` for ``states`` in the order named (one resource each).

    Per Envoy's REST semantics the answer is always the current state: a request's
    ``version_info`` only says what Envoy holds, and an answer of the same version changes nothing.
    """
    resources = [cluster_load_assignment(s) for s in states]
    return {
        "version_info": eds_version(states, resources),
        "resources": resources,
        "type_url": EDS_TYPE_URL,
        "control_plane": {"identifier": CONTROL_PLANE_ID},
    }
