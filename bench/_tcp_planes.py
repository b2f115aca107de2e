"""The TCP planes of ``bench/dataplane.py``: (a) HAProxy failing over by itself, (b) HAProxy driven
by ``proxy-failover agent haproxy`` ((b'): the same HAProxy in ``mode http``) and (c)
``proxy-failover forward``.

(a) has ``check inter 200 fall 2 rise 2`` on every server, edge-b and edge-c as ``backup``;
(b)'s agent adds the same checks and marks a server down at its first refused connect
(``OBSERVE``); both HAProxys ``option redispatch``.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from _dataplane_procs import PROXY, Launch, Relay

#: (a)'s own checks; (b)'s agent adds the same.
CHECKS = "check inter 200 fall 2 rise 2"
#: (b)'s agent: HAProxy marks a server down at its first refused connect (the agent's default).
OBSERVE = "observe layer4 error-limit 1 on-error mark-down"


def haproxy_binary() -> str:
    for path in ("/usr/sbin/haproxy", "/usr/bin/haproxy"):
        if os.access(path, os.X_OK):
            return path
    raise SystemExit("haproxy not found: run bash bench/setup.sh")


def haproxy_config(
    directory: Path, name: str, port: int, servers: str, socket_path: str, mode: str = "tcp"
) -> list[str]:
    """HAProxy in ``mode`` (tcp, or http: it parses each request and answer, and its
    ``retries``/``option redispatch`` also move a refused request to another server; with
    ``option http-no-delay``, as docs/dataplanes.md tells streaming users: without it HAProxy
    holds a stream's small chunks up to 200 ms with ``MSG_MORE``)."""
    config = directory / f"{name}.cfg"
    no_delay = "\n    option http-no-delay" if mode == "http" else ""
    config.write_text(
        f"""global
    stats socket {socket_path} mode 600 level admin
    maxconn 4000
defaults
    mode {mode}
    timeout connect 1s
    timeout client 30s
    timeout server 30s
    option redispatch
    retries 2{no_delay}
frontend front
    bind 127.0.0.1:{port}
    default_backend relays
backend relays
    balance roundrobin
{servers}"""
    )
    return [haproxy_binary(), "-W", "-db", "-f", str(config)]


def start_haproxy_alone(launch: Launch, port: int, relays: dict[str, Relay]) -> None:
    """(a): every relay a server with HAProxy's own checks, edge-a the only non-backup."""
    servers = "".join(
        f"    server {name} 127.0.0.1:{relay.port} {CHECKS}"
        + (" backup" if name != "edge-a" else "")
        + "\n"
        for name, relay in relays.items()
    )
    socket_path = str(launch.directory / "a.sock")
    launch.start(haproxy_config(launch.directory, "a", port, servers, socket_path), "haproxy-a.log")


async def start_haproxy_agent(
    launch: Launch, port: int, metrics_port: int, mode: str = "tcp"
) -> None:
    """(b), or (b') with ``mode`` http: an empty backend, filled by the agent once HAProxy's
    socket is there."""
    name = "b" if mode == "tcp" else f"b-{mode}"
    socket_path = str(launch.directory / f"{name}.sock")
    launch.start(
        haproxy_config(launch.directory, name, port, "", socket_path, mode), f"haproxy-{name}.log"
    )
    await asyncio.sleep(0.5)
    launch.start(
        [
            *launch.pfo("agent", "haproxy"),
            *("--socket", socket_path, "--map", f"{PROXY}=relays"),
            *("--server-options", f"{CHECKS} {OBSERVE}"),
            *("--metrics-port", str(metrics_port)),
        ],
        f"agent-{name}.log",
    )


def start_forwarder(launch: Launch, port: int, metrics_port: int, workers: int = 1) -> None:
    """(c): ``proxy-failover forward`` listening on ``port``; (c') with ``--workers``."""
    launch.start(
        [
            *launch.pfo("forward"),
            *("--proxy", PROXY, "--listen", f"127.0.0.1:{port}"),
            *("--metrics-port", str(metrics_port), "--workers", str(workers)),
        ],
        f"forwarder-{workers}.log",
    )
