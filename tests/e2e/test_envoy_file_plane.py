"""``EnvoyFileDataPlane`` on real files: one DiscoveryResponse per proxy, renamed into place,
left alone when it already holds the state, and a failure the agent retries when it cannot write.
Envoy reading these files is in test_dataplane_envoy.py."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from proxy_failover.adapters.dataplanes.agent import DataPlaneError
from proxy_failover.adapters.dataplanes.envoy import EnvoyFileDataPlane, eds_path, render
from proxy_failover.adapters.dataplanes.metrics import AgentMetrics
from proxy_failover.core.dataplane import DesiredState, desired_state
from proxy_failover.core.envoy import discovery_response
from tests.helpers.factories import PROXY, inst


def _state(active: str, epoch: int) -> DesiredState:
    instances = [
        inst("a", priority=1, endpoint="10.0.0.1:1935"),
        inst("b", priority=2, endpoint="10.0.0.2:1935"),
    ]
    return desired_state(PROXY, instances, active, epoch, load_balanced=False)


def _apply(plane: EnvoyFileDataPlane, state: DesiredState) -> None:
    asyncio.run(plane.apply(state))


def test_the_file_is_the_discovery_response_renamed_into_place(tmp_path: Path) -> None:
    plane = EnvoyFileDataPlane(tmp_path, AgentMetrics("envoy"))
    first = _state("a", 1)
    _apply(plane, first)
    path = eds_path(tmp_path, PROXY)
    assert json.loads(path.read_text()) == discovery_response([first])
    assert path.read_bytes() == render(first)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary left
    written = path.stat()

    _apply(plane, _state("a", 1))  # the same state: Envoy has nothing to reload
    assert (path.stat().st_ino, path.stat().st_mtime_ns) == (written.st_ino, written.st_mtime_ns)

    moved = _state("b", 2)
    _apply(plane, moved)
    assert path.stat().st_ino != written.st_ino  # a new file renamed over the old one
    assert (
        json.loads(path.read_text())["resources"][0]["endpoints"][0]["lb_endpoints"][0]["endpoint"][
            "hostname"
        ]
        == "b"
    )


def test_a_directory_that_cannot_be_written_is_a_data_plane_error(tmp_path: Path) -> None:
    plane = EnvoyFileDataPlane(tmp_path / "missing", AgentMetrics("envoy"))
    with pytest.raises(DataPlaneError, match="cannot write"):
        _apply(plane, _state("a", 1))


def test_an_event_compares_with_what_was_written_a_full_apply_with_the_file(
    tmp_path: Path,
) -> None:
    plane = EnvoyFileDataPlane(tmp_path, AgentMetrics("envoy"))
    path = eds_path(tmp_path, PROXY)
    asyncio.run(plane.apply_from_event(_state("a", 1)))  # nothing written yet: reads, writes
    assert path.read_bytes() == render(_state("a", 1))
    path.write_text("{}")  # changed behind the agent's back
    asyncio.run(plane.apply_from_event(_state("a", 1)))  # the switch's path reads nothing
    assert path.read_text() == "{}"
    _apply(plane, _state("a", 1))  # a reconcile reads the file and heals it
    assert path.read_bytes() == render(_state("a", 1))
    asyncio.run(plane.apply_from_event(_state("b", 2)))
    assert path.read_bytes() == render(_state("b", 2))
