"""The parts of ``forward --workers`` that run in the parent's own process: binding the workers'
sockets, the options passed on to them, and a worker noticing that its parent is gone. The whole
command, with real workers, is in tests/e2e/test_forwarder_workers.py."""

from __future__ import annotations

import asyncio
import inspect
import os
import socket

import pytest

from proxy_failover.adapters.dataplanes.workers import listening_sockets, until_parent_ends
from proxy_failover.core.dataplane import SwitchPolicy
from proxy_failover.entrypoints.cli.dataplanes import (
    PARENT_ONLY_OPTIONS,
    _worker_arguments,
    forward,
)


def test_the_sockets_share_one_port_and_the_kernel_spreads_connections_over_them() -> None:
    sockets = listening_sockets("127.0.0.1", 0, 3)
    clients: list[socket.socket] = []
    try:
        ports = {sock.getsockname()[1] for sock in sockets}
        assert len(sockets) == 3
        assert len(ports) == 1  # port 0: every socket on the port the first was given
        (port,) = ports
        clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(30)]
        accepted = []
        for sock in sockets:
            count = 0
            while True:
                try:
                    conn, _ = sock.accept()
                except BlockingIOError:
                    break
                conn.close()
                count += 1
            accepted.append(count)
        assert sum(accepted) == len(clients)
        assert all(accepted), (
            accepted
        )  # each got some (none on one of the three: odds about 1 in 60,000)
    finally:
        for sock in [*sockets, *clients]:
            sock.close()


def test_a_taken_address_raises() -> None:
    """The command reports it and exits 1 before starting any worker (tests/e2e)."""
    with socket.create_server(("127.0.0.1", 0)) as taken:  # no SO_REUSEPORT: nobody may join
        port = taken.getsockname()[1]
        with pytest.raises(OSError, match="in use"):
            listening_sockets("127.0.0.1", port, 2)


async def test_a_worker_sees_its_parent_end_when_its_pipe_closes() -> None:
    read_end, write_end = os.pipe()
    waiting = asyncio.ensure_future(until_parent_ends(read_end))
    await asyncio.sleep(0)
    os.close(write_end)
    await asyncio.wait_for(waiting, timeout=5)
    os.close(read_end)


async def test_a_worker_sees_its_parent_end_when_its_socket_pair_closes() -> None:
    """asyncio's subprocesses get a socket pair as their stdin pipe, not a pipe."""
    reader, writer = socket.socketpair()
    with reader:
        waiting = asyncio.ensure_future(until_parent_ends(reader.fileno()))
        await asyncio.sleep(0)
        writer.close()
        await asyncio.wait_for(waiting, timeout=5)


def test_a_worker_is_given_every_option_of_forward_but_its_parents() -> None:
    """An option added to ``forward`` and not passed on would silently not apply to workers."""
    given = set(inspect.signature(_worker_arguments).parameters)
    assert set(inspect.signature(forward).parameters) - PARENT_ONLY_OPTIONS == given
    arguments = _worker_arguments(
        "live", "127.0.0.1:9000", "http://cp:8080", SwitchPolicy.DRAIN, 0.5, 2.0, "debug"
    )
    flags = {a for a in arguments if a.startswith("--")}
    assert len(flags) == len(given)  # one flag per option given, each with its value
    assert arguments[arguments.index("--on-switch") + 1] == "drain"
