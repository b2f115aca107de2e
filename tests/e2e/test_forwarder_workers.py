"""``proxy-failover forward --workers N`` with real processes: the workers share the address, a
stopped or killed worker loses none of the clients queued on its socket, the parent serves the
workers' metrics together and reports their open connections summed, a switch reaches every
worker, and the workers end with their parent (SIGTERM, or kill -9 of the parent).

One ``serve`` and three relays per module (``RelayStack``); each test starts its own forwarder.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.dataplanes import (
    OpenStream,
    answered_by,
    metric,
    poll_until,
    proxy_failover,
    stop,
)
from tests.helpers.processes import free_port
from tests.helpers.relay_stack import RelayStack

pytestmark = pytest.mark.slow


class Stack(RelayStack):
    port = 0

    def goes_to(self, name: str, within: float = 10.0) -> None:
        poll_until(lambda: answered_by(f"http://127.0.0.1:{self.port}/") == name, within=within)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path) -> Iterator[Stack]:
    with Stack.running(tmp_path_factory, sqlite_template, "workers") as built:
        yield built


@contextlib.contextmanager
def forwarder(stack: Stack, workers: int = 2) -> Iterator[subprocess.Popen[str]]:
    """``forward --workers`` on a new port (``stack.port``), stopped on the way out."""
    stack.port = free_port()
    parent = stack.run_agent(
        *("forward", "--proxy", "live", "--listen", f"127.0.0.1:{stack.port}"),
        *("--workers", str(workers)),
        log="forwarder.log",
    )
    seen: set[int] = set()
    try:
        poll_until(lambda: len(children(parent.pid)) == workers, within=10)
        seen.update(children(parent.pid))
        stack.back_to_edge_a()
        yield parent
    finally:
        seen.update(children(parent.pid))
        stop(parent)
        for pid in seen:  # a test that failed must not leave workers behind
            with contextlib.suppress(OSError):
                if b"--listen-fd" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    os.kill(pid, signal.SIGKILL)


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(child) for child in text.split()]


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


class Request:
    """``GET /`` on a new connection, answered whenever the forwarder gets to it."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.sock.sendall(b"GET / HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n")
        self.sock.setblocking(False)
        self.received = b""
        self.ended = False

    def answer(self) -> str | None:
        """The relay's name once the whole answer arrived; None until then."""
        while not self.ended:
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                return None
            self.received += data
            self.ended = not data
        head, _, body = self.received.partition(b"\r\n\r\n")
        return body.decode().strip() if head.startswith(b"HTTP/1.") else ""

    def close(self) -> None:
        self.sock.close()


def test_workers_share_the_address_and_a_stopped_one_keeps_its_queue(stack: Stack) -> None:
    """A frozen worker's share of new clients waits on its socket (none is refused or answered
    by nobody) and is answered once it runs again; the other worker serves its own meanwhile."""
    with forwarder(stack) as parent:
        frozen = children(parent.pid)[0]
        os.kill(frozen, signal.SIGSTOP)
        try:
            requests = [Request(stack.port) for _ in range(24)]
            poll_until(lambda: sum(r.answer() is not None for r in requests) > 0)
            waiting = [r for r in requests if r.answer() is None]
            assert 0 < len(waiting) < len(requests)  # the kernel spread them over both sockets
        finally:
            os.kill(frozen, signal.SIGCONT)
        poll_until(lambda: all(r.answer() is not None for r in requests))
        assert {r.answer() for r in requests} == {"edge-a"}
        for request in requests:
            request.close()


def test_a_killed_worker_is_restarted_and_serves_what_queued_meanwhile(stack: Stack) -> None:
    with forwarder(stack) as parent:
        killed = children(parent.pid)[0]
        os.kill(killed, signal.SIGKILL)
        requests = [Request(stack.port) for _ in range(24)]
        poll_until(lambda: all(r.answer() is not None for r in requests), within=15)
        assert {r.answer() for r in requests} == {"edge-a"}
        workers = children(parent.pid)
        assert len(workers) == 2
        assert killed not in workers
        assert metric(stack.metrics_url, "pfo_agent_worker_restarts_total") == 1
        assert metric(stack.metrics_url, "pfo_agent_workers") == 2
        for request in requests:
            request.close()


def test_metrics_and_connection_counts_are_the_workers_sum(stack: Stack) -> None:
    """The parent's metrics port shows every worker's connections; the control plane gets the
    sum as the instance's ``activeConnections`` (least_connections reads it)."""
    with forwarder(stack):
        streams = [OpenStream("127.0.0.1", stack.port) for _ in range(8)]
        poll_until(lambda: all(s.lines_from("edge-a") > 0 for s in streams))
        poll_until(lambda: stack.agent_metric("pfo_agent_open_connections", instance="edge-a") == 8)
        edge_a = f"/proxy/instances/{stack.ids['edge-a']}"
        poll_until(lambda: stack.cp.call("GET", edge_a)["activeConnections"] == 8)
        assert (stack.agent_metric("pfo_agent_connections_total", instance="edge-a") or 0) >= 8
        assert stack.agent_metric("pfo_agent_control_plane_up") == 1
        for stream in streams:
            stream.close()
        poll_until(lambda: stack.cp.call("GET", edge_a)["activeConnections"] == 0)


def test_every_worker_follows_a_switch_drains_and_cuts(stack: Stack) -> None:
    with forwarder(stack):
        stack.drain_then_cut(stack.port, lambda: answered_by(f"http://127.0.0.1:{stack.port}/"))
        stack.back_to_edge_a()
        stack.switch_to_edge_b()
        stack.goes_to("edge-b")
        requests = [Request(stack.port) for _ in range(24)]  # on both workers
        poll_until(lambda: all(r.answer() is not None for r in requests))
        assert {r.answer() for r in requests} == {"edge-b"}
        for request in requests:
            request.close()
        stack.back_to_edge_a()


def test_the_workers_end_with_their_parent(stack: Stack) -> None:
    with forwarder(stack) as parent:
        workers = children(parent.pid)
        parent.send_signal(signal.SIGTERM)
        assert parent.wait(timeout=15) == 0
        poll_until(lambda: not any(alive(pid) for pid in workers))
    with forwarder(stack) as parent:
        workers = children(parent.pid)
        parent.kill()  # no chance to stop them: they see their stdin close
        parent.wait(timeout=5)
        poll_until(lambda: not any(alive(pid) for pid in workers), within=10)


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("reuse_port", [False, True])
def test_an_address_taken_fails_at_once(
    stack: Stack, tmp_path: Path, workers: int, reuse_port: bool
) -> None:
    """Even one taken with SO_REUSEPORT, which the workers' sockets could join: a second
    forwarder started by mistake must not take a share of the clients."""
    with socket.create_server(("127.0.0.1", 0), reuse_port=reuse_port) as taken:
        port = taken.getsockname()[1]
        command = proxy_failover(
            *("forward", "--proxy", "live", "--listen", f"127.0.0.1:{port}"),
            *("--workers", str(workers), "--url", stack.serve.url, "--token", stack.tokens.alice),
            log=tmp_path / "taken.log",
        )
        try:
            assert command.wait(timeout=30) == 1
        finally:
            stop(command)
    assert f"cannot listen on 127.0.0.1:{port}" in (tmp_path / "taken.log").read_text()
