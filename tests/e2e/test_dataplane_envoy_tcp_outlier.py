"""Envoy ``tcp_proxy`` through a kill -9, on the file EDS cluster of ``agent envoy`` with the
outlier detection docs/dataplanes.md gives (eject a host at its first failed connect).

``tcp_proxy`` has no retry policy across priorities: the ejection is its only way to priority 1
before the control plane moves the active role. It works for a host that has kept its priority
since Envoy added it (the first kill: own module and Envoy), not for one an EDS update has moved
between priorities (after a switchover and back), which every failover and failback does.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.dataplanes import poll_until, stop
from tests.helpers.envoy import (
    EJECT_AT_FIRST_CONNECT_FAILURE,
    Envoy,
    ejecting,
    file_eds_cluster,
    tcp_proxy_listener,
)
from tests.helpers.load import Load, ask
from tests.helpers.processes import free_port
from tests.helpers.relay_stack import RelayStack

pytestmark = pytest.mark.slow

CLUSTER = "live-ejecting"
EJECTIONS = f"cluster.{CLUSTER}.outlier_detection.ejections_enforced_total"


class Stack(RelayStack):
    envoy: Envoy
    port: int
    agent: subprocess.Popen[str] | None = None

    def goes_to(self, name: str, within: float = 10.0) -> None:
        poll_until(lambda: ask(self.port) == name, within=within)

    def ejections(self) -> int:
        return self.envoy.stat(EJECTIONS) or 0

    def kill_edge_a_under_load(self) -> Load:
        """kill -9 of edge-a under one TCP client (a new connection every 5 ms), until the
        control plane made edge-b active and Envoy has it at priority 0."""
        with Load.tcp(self.port) as load:
            poll_until(lambda: load.count("edge-a") >= 20)
            self.relays["edge-a"].kill()
            poll_until(lambda: self.cp.active() == "edge-b", within=15)
            poll_until(lambda: self.envoy.hosts(CLUSTER).get(0) == [self.address("edge-b")])
            poll_until(lambda: load.count("edge-b") >= 20)
        return load


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path) -> Iterator[Stack]:
    with Stack.running(tmp_path_factory, sqlite_template, "envoy-tcp") as built:
        eds_dir = built.directory / "eds"
        eds_dir.mkdir()
        envoy: Envoy | None = None
        try:
            built.agent = built.run_agent(
                *("agent", "envoy", "--dir", str(eds_dir), "--proxy", "live"), log="agent.log"
            )
            poll_until(lambda: (eds_dir / "live.json").exists(), within=15)
            built.port = free_port()
            built.envoy = envoy = Envoy(
                built.directory,
                [tcp_proxy_listener("tcp", built.port, CLUSTER)],
                [ejecting(file_eds_cluster(CLUSTER, "live", eds_dir))],
            ).start()
            built.goes_to("edge-a")
            yield built
        finally:
            if envoy is not None:
                envoy.stop()
            stop(built.agent)


def test_the_docs_give_this_outlier_detection() -> None:
    text = " ".join(Path(__file__).parents[2].joinpath("docs", "dataplanes.md").read_text().split())
    for key, value in EJECT_AT_FIRST_CONNECT_FAILURE.items():
        assert f"{key}: {json.dumps(value)}" in text


def test_a_host_that_never_moved_is_ejected_at_the_kill_and_priority_1_answers(
    stack: Stack,
) -> None:
    # edge-a has been at priority 0 since Envoy started.
    before = stack.ejections()
    load = stack.kill_edge_a_under_load()
    counts = load.counts()
    # The connection in flight at the kill and the few the ejection had not reached yet; the
    # ones after it went to priority 1 before the control plane moved anything.
    assert counts[None] <= 3, counts
    assert stack.ejections() > before
    stack.back_to_edge_a()


def test_a_host_moved_between_priorities_is_not_ejected_in_time(stack: Stack) -> None:
    # A limitation of Envoy 1.40 that docs/dataplanes.md reports, held here so the docs change
    # when Envoy does: once a switchover and a failback have moved edge-a to priority 1 and back,
    # its failed connects eject it no more, and every connection until the control plane's move
    # fails (35 of them, 3 to 228 ms after the kill, in one run).
    stack.back_to_edge_a()
    stack.switch_to_edge_b()
    stack.goes_to("edge-b")
    stack.back_to_edge_a()
    load = stack.kill_edge_a_under_load()
    assert load.counts()[None] > 3, load.counts()
    stack.back_to_edge_a()
