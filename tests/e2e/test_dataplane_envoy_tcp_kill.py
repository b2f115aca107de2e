"""Envoy ``tcp_proxy`` through a kill -9 of the active relay, on the walkthrough's bootstrap of
docs/dataplanes.md as written (its ``rtmp`` listener on the file EDS of ``agent envoy``), a
client making a new TCP connection every 5 ms.

``tcp_proxy`` has no retry policy across priorities: the ejection of the dead host at its first
failed connect is its way to priority 1, ``update_merge_window: 0s`` brings that ejection to the
worker at once, and the connect back-off makes the next attempt after it (docs/dataplanes.md, "A
kill -9 under tcp_proxy"). Beside it, an Envoy whose cluster keeps the default merge window
shows what the window costs right after a move of the active role.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers.dataplanes import poll_until, stop
from tests.helpers.envoy import (
    CONNECT_BACKOFF,
    EJECT_AT_FIRST_CONNECT_FAILURE,
    NO_MERGE_WINDOW,
    Envoy,
    docs_bootstrap,
    file_eds_cluster,
    tcp_proxy_listener,
)
from tests.helpers.load import Load, ask
from tests.helpers.processes import free_port
from tests.helpers.relay_stack import RelayStack

pytestmark = pytest.mark.slow

CLUSTER = "live-file"  # the docs' file EDS cluster, which their rtmp listener uses
ATTEMPTS_EXCEEDED = f"cluster.{CLUSTER}.upstream_cx_connect_attempts_exceeded"
EJECTIONS = f"cluster.{CLUSTER}.outlier_detection.ejections_enforced_total"
MERGE_CANCELLED = "cluster_manager.update_merge_cancelled"
MERGE_WINDOW = "5s"


class Stack(RelayStack):
    envoy: Envoy  # the docs' bootstrap
    port: int  # its rtmp listener
    merging: Envoy  # the same file EDS and tcp_proxy, health changes merged for MERGE_WINDOW
    merging_port: int
    agent: subprocess.Popen[str] | None = None

    def goes_to(self, name: str, within: float = 10.0) -> None:
        for port in (self.port, self.merging_port):
            poll_until(lambda p=port: ask(p) == name, within=within)  # type: ignore[misc]

    def kill_edge_a_under_load(self) -> tuple[Load, Load]:
        """kill -9 of edge-a under one TCP client on each Envoy, until the control plane made
        edge-b active and both Envoys have it at priority 0; soon after the start (a few
        answers), so that a move just before falls inside ``MERGE_WINDOW``."""
        with Load.tcp(self.port) as load, Load.tcp(self.merging_port) as merging:
            poll_until(lambda: load.count("edge-a") >= 5 and merging.count("edge-a") >= 5)
            self.relays["edge-a"].kill()
            poll_until(lambda: self.cp.active() == "edge-b", within=15)
            for envoy in (self.envoy, self.merging):
                poll_until(lambda e=envoy: e.hosts(CLUSTER).get(0) == [self.address("edge-b")])  # type: ignore[misc]
            poll_until(lambda: load.count("edge-b") >= 20 and merging.count("edge-b") >= 20)
        return load, merging


def _stat(envoy: Envoy, name: str) -> int:
    return envoy.stat(name) or 0


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path) -> Iterator[Stack]:
    with Stack.running(tmp_path_factory, sqlite_template, "envoy-tcp") as built:
        eds_dir = built.directory / "eds"
        eds_dir.mkdir()
        envoys: list[Envoy] = []
        try:
            built.agent = built.run_agent(
                *("agent", "envoy", "--dir", str(eds_dir), "--proxy", "live"), log="agent.log"
            )
            poll_until(lambda: (eds_dir / "live.json").exists(), within=15)
            ports = {name: free_port() for name in ("admin", "rest", "file", "rtmp")}
            text = docs_bootstrap(
                {
                    "port_value: 9901}": f"port_value: {ports['admin']}}}",
                    "port_value: 10000}": f"port_value: {ports['rest']}}}",
                    "port_value: 10001}": f"port_value: {ports['file']}}}",
                    "port_value: 10002}": f"port_value: {ports['rtmp']}}}",
                    "port_value: 8080}": f"port_value: {built.serve.port}}}",
                    "$PWD/eds": str(eds_dir),
                    "$PFO_TOKEN": built.tokens.alice,
                }
            )
            docs_dir = built.directory / "docs-envoy"
            docs_dir.mkdir()
            built.envoy = Envoy.from_text(docs_dir, text, ports["admin"])
            envoys.append(built.envoy.start())
            built.port = ports["rtmp"]

            merging_cluster = file_eds_cluster(CLUSTER, "live", eds_dir)
            merging_cluster["common_lb_config"] = {"update_merge_window": MERGE_WINDOW}
            built.merging_port = free_port()
            merging_dir = built.directory / "merging-envoy"
            merging_dir.mkdir()
            built.merging = Envoy(
                merging_dir,
                [tcp_proxy_listener("rtmp", built.merging_port, CLUSTER)],
                [merging_cluster],
            )
            envoys.append(built.merging.start())
            built.goes_to("edge-a")
            yield built
        finally:
            for envoy in envoys:
                envoy.stop()
            stop(built.agent)


def test_the_helpers_build_what_the_walkthrough_shows() -> None:
    """The other Envoy tests build their clusters and tcp_proxy listeners with the helpers: they
    must carry the walkthrough's settings (the docs' YAML, parsed)."""
    text = docs_bootstrap({"$PWD/eds": "/eds", "$PFO_TOKEN": "token"})
    resources = yaml.safe_load(text)["static_resources"]
    clusters = {c["name"]: c for c in resources["clusters"]}
    for name in ("live-rest", "live-file"):
        assert clusters[name]["outlier_detection"] == EJECT_AT_FIRST_CONNECT_FAILURE
        assert clusters[name]["common_lb_config"] == NO_MERGE_WINDOW
    (rtmp,) = [entry for entry in resources["listeners"] if entry["name"] == "rtmp"]
    built: dict[str, Any] = tcp_proxy_listener("rtmp", 0, CLUSTER)
    proxy = rtmp["filter_chains"][0]["filters"][0]["typed_config"]
    expected = built["filter_chains"][0]["filters"][0]["typed_config"]
    assert proxy == expected
    assert proxy["backoff_options"] == CONNECT_BACKOFF


def test_a_kill_long_after_the_last_move_loses_at_most_the_connection_in_flight(
    stack: Stack,
) -> None:
    # edge-a has been active since the stack started: no EDS update in the last second.
    ejections, exceeded = _stat(stack.envoy, EJECTIONS), _stat(stack.envoy, ATTEMPTS_EXCEEDED)
    load, _ = stack.kill_edge_a_under_load()
    counts = load.counts()
    # At most the one connection edge-a had accepted when it died (reset: tcp_proxy cannot replay
    # it); none that met the dead relay at connect: the ejection moved their next attempt to
    # priority 1 before the control plane decided.
    assert counts[None] <= 1, (counts, load.errors)
    assert _stat(stack.envoy, ATTEMPTS_EXCEEDED) == exceeded, counts
    assert _stat(stack.envoy, EJECTIONS) > ejections
    assert {"edge-b", "edge-c"} & set(counts), counts
    stack.back_to_edge_a()


def test_a_kill_right_after_a_switchover_and_back_loses_at_most_the_connection_in_flight(
    stack: Stack,
) -> None:
    stack.back_to_edge_a()
    stack.switch_to_edge_b()
    stack.goes_to("edge-b")
    stack.back_to_edge_a()  # edge-a moved to priority 1 and back to 0: EDS updates just now
    exceeded = _stat(stack.envoy, ATTEMPTS_EXCEEDED)
    merging_exceeded = _stat(stack.merging, ATTEMPTS_EXCEEDED)
    held = _stat(stack.merging, MERGE_CANCELLED)
    load, merging = stack.kill_edge_a_under_load()
    assert load.counts()[None] <= 1, (load.counts(), load.errors)
    assert _stat(stack.envoy, ATTEMPTS_EXCEEDED) == exceeded, load.counts()
    # The same kill through a merge window: the ejection was held until the
    # control plane's failover brought an update that adds and removes hosts (the merged update
    # it cancelled), and new connections spent all their attempts on the dead relay until then
    # (each one up to 75 ms of back-off, so a few from this one client).
    assert _stat(stack.merging, MERGE_CANCELLED) > held, merging.counts()
    assert _stat(stack.merging, ATTEMPTS_EXCEEDED) > merging_exceeded, merging.counts()
    assert merging.counts()[None] >= 1, merging.counts()
    stack.back_to_edge_a()
