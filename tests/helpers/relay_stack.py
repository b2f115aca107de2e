"""What every data-plane test module starts the same way: ``serve`` on a copy of the SQLite
template, three relays and the proxy ``live`` set up through the REST API (edge-a active), and
the moves its tests make on it (back to edge-a, an agent beside it, its metrics, a drained then
cut stream).

A module subclasses ``RelayStack`` with its data plane and says how it checks where new
traffic goes (``goes_to``); ``RelayStack.running`` starts the shared part and stops it.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Self

import pytest

from tests.helpers.api import SECRET, Tokens
from tests.helpers.dataplanes import (
    ControlPlane,
    OpenStream,
    Relay,
    Serve,
    metric,
    poll_until,
    proxy_failover,
)
from tests.helpers.load import all_answered_by
from tests.helpers.processes import free_port

NAMES = ("edge-a", "edge-b", "edge-c")
PROXY = "live"


class RelayStack:
    """``serve`` + the relays ``NAMES`` (edge-a preferred) + the proxy ``PROXY`` as alice."""

    def __init__(
        self,
        directory: Path,
        serve: Serve,
        relays: dict[str, Relay],
        cp: ControlPlane,
        ids: dict[str, str],
    ) -> None:
        self.directory = directory
        self.serve = serve
        self.relays = relays
        self.cp = cp
        self.ids = ids
        self.tokens = Tokens.signed_with(SECRET)
        self.metrics_url = ""  # the agent's, once one is started

    @classmethod
    @contextlib.contextmanager
    def running(
        cls, tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path, name: str
    ) -> Iterator[Self]:
        """The shared part started (edge-a active) in a new temporary directory ``name``;
        relays killed and ``serve`` stopped on the way out."""
        directory = tmp_path_factory.mktemp(name)
        shutil.copyfile(sqlite_template, directory / "pfo.db")
        tokens = Tokens.signed_with(SECRET)
        url = f"sqlite+aiosqlite:///{directory / 'pfo.db'}"
        serve = Serve(url, SECRET, directory / "serve.log")
        relays = {relay: Relay(relay) for relay in NAMES}
        try:
            serve.start()
            for relay in relays.values():
                relay.start()
            cp = ControlPlane(serve.url, tokens.alice, tokens.admin, PROXY)
            ids = cp.create(list(relays.values()))
            poll_until(lambda: cp.active() == "edge-a", within=15)
            yield cls(directory, serve, relays, cp, ids)
        finally:
            for relay in relays.values():
                relay.kill()
            serve.stop()

    def goes_to(self, name: str, within: float = 10.0) -> None:
        """Wait until new traffic through the data plane reaches ``name``."""
        raise NotImplementedError

    def address(self, name: str) -> str:
        return self.relays[name].address

    def back_to_edge_a(self) -> None:
        """Every relay up and healthy, edge-a active and taking the traffic."""
        for relay in self.relays.values():
            if relay.proc is None or relay.proc.poll() is not None:
                relay.start()
        poll_until(lambda: self.cp.healthy() == set(NAMES), within=15)
        active = self.cp.active()
        if active != "edge-a":
            assert active is not None
            self.cp.switch(self.ids[active], self.ids["edge-a"])
        self.goes_to("edge-a")

    def switch_to_edge_b(self) -> float:
        """A planned switchover edge-a -> edge-b; the monotonic time just before it was asked."""
        asked = time.monotonic()
        self.cp.switch(self.ids["edge-a"], self.ids["edge-b"])
        return asked

    def kill_edge_a(self) -> None:
        """kill -9 of edge-a's relay; returns once the control plane made edge-b active."""
        self.relays["edge-a"].kill()
        poll_until(lambda: self.cp.active() == "edge-b", within=10)

    def run_agent(self, *args: str, log: str) -> subprocess.Popen[str]:
        """``proxy-failover ARGS`` following this ``serve`` as alice, reconciling every second,
        its metrics on a new port (``metrics_url``) and its output in ``directory/log``."""
        port = free_port()
        self.metrics_url = f"http://127.0.0.1:{port}/metrics"
        return proxy_failover(
            *args,
            *("--url", self.serve.url, "--token", self.tokens.alice),
            *("--reconcile-seconds", "1", "--metrics-port", str(port)),
            log=self.directory / log,
        )

    def agent_metric(self, name: str, **labels: str) -> float | None:
        """One sample of the agent's metrics for ``PROXY`` (None when absent or unreachable)."""
        return metric(self.metrics_url, name, proxy_id=PROXY, **labels)

    def reconciles(self) -> float:
        """How many full reconciles the agent has applied so far."""
        return self.agent_metric("pfo_agent_applies_total", trigger="reconcile") or 0

    def set_health(self, name: str, status: str) -> None:
        path = f"/proxy/instances/{self.ids[name]}/health"
        self.cp.call("PUT", path, json={"healthStatus": status})

    def set_weight(self, name: str, weight: int) -> None:
        self.cp.call("PATCH", f"/proxy/instances/{self.ids[name]}", json={"weight": weight})

    @contextlib.contextmanager
    def toggled(self, key: str, value: bool) -> Iterator[None]:
        """The proxy's failover config with ``key`` set to ``value`` for the block, then to
        ``not value`` (the default of every switch the tests turn)."""
        self.cp.call(
            "POST", "/proxy/failover/config", json={"proxyId": PROXY, "config": {key: value}}
        )
        try:
            yield
        finally:
            body = {"proxyId": PROXY, "config": {key: not value}}
            self.cp.call("POST", "/proxy/failover/config", json=body)

    def drain_then_cut(self, port: int, through: Callable[[], str | None]) -> None:
        """A planned switchover keeps an open stream on edge-a flowing (drain); edge-b reported
        unhealthy while its process lives gets its open stream closed (cut): only the data plane
        can close it. ``through`` answers a new request through the plane on ``port``."""
        drained = OpenStream("127.0.0.1", port)
        poll_until(lambda: drained.lines_from("edge-a") > 0)
        self.cp.switch(self.ids["edge-a"], self.ids["edge-b"])
        self.goes_to("edge-b")
        before = drained.lines_from("edge-a")
        poll_until(lambda: drained.lines_from("edge-a") > before + 5)  # still flowing from edge-a
        assert not drained.closed
        drained.close()

        cut = OpenStream("127.0.0.1", port)
        poll_until(lambda: cut.lines_from("edge-b") > 0)
        self.set_health("edge-b", "unhealthy")
        poll_until(lambda: cut.closed, within=10)
        assert through() in ("edge-a", "edge-c")
        cut.close()


class ListenersStack(RelayStack):
    """A plane with an HTTP and a TCP listener (nginx, Traefik): new traffic goes to ``name``
    when a new request on each listener is answered by it."""

    @property
    def listeners(self) -> tuple[int, int]:
        """(HTTP port, TCP port)."""
        raise NotImplementedError

    def goes_to(self, name: str, within: float = 10.0) -> None:
        poll_until(lambda: all_answered_by(self.listeners, name), within=within)
