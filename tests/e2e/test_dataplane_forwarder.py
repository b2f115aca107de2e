"""``proxy-failover forward`` with real processes: ``serve``, three relays, kill -9, redispatch,
passive failure reports, drain and cut, open-connection metrics.

One stack per module; each test leaves edge-a active and all relays healthy for the next.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers.api import SECRET, Tokens
from tests.helpers.dataplanes import (
    ControlPlane,
    OpenStream,
    Relay,
    Serve,
    answered_by,
    metric,
    poll_until,
    proxy_failover,
    stop,
)
from tests.helpers.processes import free_port

pytestmark = pytest.mark.slow

NAMES = ("edge-a", "edge-b", "edge-c")


@dataclass
class Stack:
    serve: Serve
    relays: dict[str, Relay]
    cp: ControlPlane
    ids: dict[str, str]
    port: int
    metrics_url: str
    forwarder: subprocess.Popen[str]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def through_forwarder(self) -> str | None:
        return answered_by(self.url)

    def traffic_goes_to(self, name: str, within: float = 10.0) -> None:
        poll_until(lambda: self.through_forwarder() == name, within=within)

    def metric(self, name: str, **labels: str) -> float:
        return metric(self.metrics_url, name, proxy_id="live", **labels) or 0.0

    def back_to_edge_a(self) -> None:
        for relay in self.relays.values():
            if relay.proc is None or relay.proc.poll() is not None:
                relay.start()
        poll_until(lambda: self.cp.healthy() == set(NAMES), within=15)
        active = self.cp.active()
        if active != "edge-a":
            assert active is not None
            self.cp.switch(self.ids[active], self.ids["edge-a"])
        self.traffic_goes_to("edge-a")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path) -> Iterator[Stack]:
    directory = tmp_path_factory.mktemp("forwarder")
    shutil.copyfile(sqlite_template, directory / "pfo.db")
    tokens = Tokens.signed_with(SECRET)
    serve = Serve(f"sqlite+aiosqlite:///{directory / 'pfo.db'}", SECRET, directory / "serve.log")
    relays = {name: Relay(name) for name in NAMES}
    forwarder: subprocess.Popen[str] | None = None
    try:
        serve.start()
        for relay in relays.values():
            relay.start()
        cp = ControlPlane(serve.url, tokens.alice, tokens.admin, "live")
        ids = cp.create(list(relays.values()))
        poll_until(lambda: cp.active() == "edge-a", within=15)
        port, metrics_port = free_port(), free_port()
        forwarder = proxy_failover(
            "forward",
            "--url",
            serve.url,
            "--token",
            tokens.alice,
            "--proxy",
            "live",
            "--listen",
            f"127.0.0.1:{port}",
            "--reconcile-seconds",
            "1",
            "--metrics-port",
            str(metrics_port),
            log=directory / "forwarder.log",
        )
        metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
        yield Stack(serve, relays, cp, ids, port, metrics_url, forwarder)
    finally:
        stop(forwarder)
        for relay in relays.values():
            relay.kill()
        serve.stop()


def test_new_connections_go_to_the_active_instance_and_are_counted(stack: Stack) -> None:
    stack.traffic_goes_to("edge-a")
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
    body = {"proxyId": "live", "config": {"enableAutoFailover": False}}
    stack.cp.call("POST", "/proxy/failover/config", json=body)
    try:
        stack.relays["edge-a"].kill()
        answers = [stack.through_forwarder() for _ in range(20)]
        assert stack.cp.active() == "edge-a"
    finally:
        body = {"proxyId": "live", "config": {"enableAutoFailover": True}}
        stack.cp.call("POST", "/proxy/failover/config", json=body)
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
    drained = OpenStream("127.0.0.1", stack.port)
    poll_until(lambda: drained.lines_from("edge-a") > 0)
    stack.cp.switch(stack.ids["edge-a"], stack.ids["edge-b"])
    stack.traffic_goes_to("edge-b")
    before = drained.lines_from("edge-a")
    poll_until(lambda: drained.lines_from("edge-a") > before + 5)
    assert not drained.closed
    drained.close()

    cut = OpenStream("127.0.0.1", stack.port)
    poll_until(lambda: cut.lines_from("edge-b") > 0)
    stack.cp.call(
        "PUT", f"/proxy/instances/{stack.ids['edge-b']}/health", json={"healthStatus": "unhealthy"}
    )
    poll_until(lambda: cut.closed, within=10)
    assert stack.through_forwarder() in ("edge-a", "edge-c")
    cut.close()
    stack.back_to_edge_a()
