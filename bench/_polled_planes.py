"""Traefik and nginx for ``bench/dataplane.py``: (d) and (e), started with their configuration.

Both proxy TCP (like the HAProxy planes, which run in TCP mode): Traefik a TCP router
(``HostSNI(`*`)``) on the service ``pfo-<proxy>@http`` that its HTTP provider polls from
``GET /providers/traefik`` every ``poll`` (and, for (d'), an HTTP router on the same service,
whose HTTP side is a failover chain over the active instance and its standbys); nginx a
``stream`` server on the upstream that ``proxy-failover agent nginx`` renders (reload: the
agent's SIGHUP to the master, ``--reload-pid-file``). Binaries and Traefik's static
configuration are the tests' (``tests/helpers/polled_planes.py``).
"""

from __future__ import annotations

from pathlib import Path

from _dataplane_procs import PROXY, Launch, wait_for_file
from tests.helpers.polled_planes import (
    STREAM_MODULE,
    TRAEFIK_HTTP_ROUTES,
    TRAEFIK_TCP_ROUTES,
    nginx_binary,
    traefik_binary,
    traefik_static,
)

#: The Traefik planes: (d) its TCP router, (d') its HTTP router, on one Traefik.
TRAEFIK_TCP, TRAEFIK_HTTP = "d_traefik", "d_traefik_http"


def traefik_command(
    directory: Path, ports: dict[str, int], endpoint: str, token: str, proxy: str, poll: str
) -> list[str]:
    """Traefik with a TCP entry point (``tcp``) and/or an HTTP one (``web``), as in ``ports``
    (plane -> port), each routed to ``pfo-<proxy>@http``."""
    service = f"pfo-{proxy}"
    routes, entry_points = "", {}
    if TRAEFIK_TCP in ports:
        routes += TRAEFIK_TCP_ROUTES.format(service=service)
        entry_points["tcp"] = ports[TRAEFIK_TCP]
    if TRAEFIK_HTTP in ports:
        routes += TRAEFIK_HTTP_ROUTES.format(service=service)
        entry_points["web"] = ports[TRAEFIK_HTTP]
    routes_file = directory / "traefik-routes.yml"
    routes_file.write_text(routes)
    static = directory / "traefik.yml"
    static.write_text(
        traefik_static(entry_points, endpoint, token, poll, routes_file, level="ERROR")
    )
    return [traefik_binary(), f"--configFile={static}"]


def nginx_files(directory: Path, port: int) -> tuple[list[str], Path, str]:
    """nginx's command, the upstreams file the agent writes, and the reload command."""
    binary = nginx_binary()
    upstreams = directory / "upstreams.conf"
    config = directory / "nginx.conf"
    config.write_text(
        f"""load_module {STREAM_MODULE};
daemon off;
worker_processes 1;
pid {directory}/nginx.pid;
error_log {directory}/nginx-error.log error;
events {{ worker_connections 4096; }}
stream {{
    include {upstreams};
    server {{
        listen 127.0.0.1:{port};
        proxy_pass relays;
        proxy_connect_timeout 1s;
    }}
}}
"""
    )
    command = [
        binary,
        "-p",
        str(directory),
        "-c",
        str(config),
        "-e",
        f"{directory}/nginx-error.log",
    ]
    return command, upstreams, f"kill -HUP $(cat {directory}/nginx.pid)"


def start_traefik(
    launch: Launch, ports: dict[str, int], url: str, token: str, poll: str, standby: bool
) -> None:
    """(d) and/or (d'): Traefik polling the provider of the control plane at ``url`` (with
    ``standby``: HTTP services fail over to the standbys)."""
    endpoint = f"{url}/providers/traefik?proxy={PROXY}&standby={str(standby).lower()}"
    launch.start(
        traefik_command(launch.directory, ports, endpoint, token, PROXY, poll), "traefik.log"
    )


async def start_nginx(launch: Launch, port: int, metrics_port: int) -> None:
    """(e): the agent first (nginx's configuration includes the file it writes), then nginx."""
    nginx, upstreams, _reload = nginx_files(launch.directory, port)
    launch.start(
        [
            *launch.pfo("agent", "nginx"),
            *("--map", f"{PROXY}=relays", "--output", str(upstreams)),
            *("--reload-pid-file", str(launch.directory / "nginx.pid")),
            *("--metrics-port", str(metrics_port)),
        ],
        "agent-nginx.log",
    )
    await wait_for_file(upstreams)
    launch.start(nginx, "nginx.log")
