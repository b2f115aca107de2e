"""``proxy-failover forward`` with real processes: ``serve``, three relays, kill -9, redispatch,
passive failure reports, drain and cut, open-connection metrics.

One stack per module; each test leaves edge-a active and all relays healthy for the next.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.dataplanes import OpenStream, answered_by, poll_until, stop
from tests.helpers.processes import free_port
from tests.helpers.relay_stack import RelayStack

pytestmark = pytest.mark.slow


class Stack(RelayStack):
    port: int
    forwarder: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def through_forwarder(self) -> str | None:
        return answered_by(self.url)

    def goes_to(self, name: str, within: float = 10.0) -> None:
        poll_until(lambda: self.through_forwarder() == name, within=within)

    def metric(self, name: str, **labels: str) -> float:
        return self.agent_metric(name, **labels) or 0.0


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path) -> Iterator[Stack]:
    with Stack.running(tmp_path_factory, sqlite_template, "forwarder") as built:
        built.port = free_port()
        try:
            built.forwarder = built.run_agent(
                *("forward", "--proxy", "live", "--listen", f"127.0.0.1:{built.port}"),
                log="forwarder.log",
            )
            yield built
        finally:
            stop(built.forwarder)


def test_new_connections_go_to_the_active_instance_and_are_counted(stack: Stack) -> None:
    stack.goes_to("edge-a")
    assert {stack.through_forwarder() for _ in range(10)} == {"edge-a"}
    stream = OpenStream("127.0.0.1", stack.port)
    poll_until(lambda: stream.lines_from("edge-a") > 0)
    poll_until(lambda: stack.metric("pfo_agent_open_connections", instance="edge-a") == 1)
    stream.close()
    poll_until(lambda: stack.metric("pfo_agent_open_connections", instance="edge-a") == 0)


def test_kill_9_of_the_active_relay_is_invisible_to_clients(stack: Stack) -> None:
    """Connects refused by the dead relay are redispatched to the next eligible instance and
    reported as failed checks; no request fails while the control plane fails over.

    Automatic failover is off while the requests run, so edge-a stays the active instance and
    every request meets the dead relay first (with it on, a fast failover could move the traffic
    before the first request and leave nothing to redispatch)."""
    stack.back_to_edge_a()
    with stack.toggled("enableAutoFailover", False):
        stack.relays["edge-a"].kill()
        answers = [stack.through_forwarder() for _ in range(20)]
        assert stack.cp.active() == "edge-a"
    assert None not in answers, answers
    assert set(answers) == {"edge-b"}
    assert stack.metric("pfo_agent_redispatches_total") >= 20
    assert stack.metric("pfo_agent_connect_failures_total", instance="edge-a") >= 20
    poll_until(lambda: stack.cp.active() == "edge-b", within=10)

    def reported() -> bool:
        audit = stack.cp.call("GET", "/audit", admin=True, params={"proxyId": "live"})
        return any(
            row["action"].endswith("/checks") and row["target"] == stack.ids["edge-a"]
            for row in audit
        )

    poll_until(reported, within=10)
    stack.back_to_edge_a()


def test_planned_switchover_drains_and_an_unhealthy_source_is_cut(stack: Stack) -> None:
    stack.back_to_edge_a()
    stack.drain_then_cut(stack.port, stack.through_forwarder)
    stack.back_to_edge_a()
