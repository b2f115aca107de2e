"""Traefik and nginx for ``bench/dataplane.py``: (d) and (e), started with their configuration.

Both proxy TCP (like the HAProxy planes, which run in TCP mode): Traefik a TCP router
(``HostSNI(`*`)``) on the service ``pfo-<proxy>@http`` that its HTTP provider polls from
``GET /providers/traefik`` every ``poll`` (and, for (d'), an HTTP router on the same service,
whose HTTP side is a failover chain over the active instance and its standbys); nginx a
``stream`` server on the upstream that ``proxy-failover agent nginx`` renders (reload: the
agent's SIGHUP to the master, ``--reload-pid-file``); (e') the same with ``--mode njs``: the
``stream`` server's ``proxy_pass`` takes the block the agent's njs module picks from its state
file (no reload on a switch). Binaries and Traefik's static configuration are the tests'
(``tests/helpers/polled_planes.py``).
"""

from __future__ import annotations

import getpass
from pathlib import Path

from _dataplane_procs import PROXY, Launch, wait_for_file
from tests.helpers.polled_planes import (
    NJS_MODULES,
    STREAM_MODULE,
    TRAEFIK_HTTP_ROUTES,
    TRAEFIK_TCP_ROUTES,
    nginx_binary,
    traefik_binary,
    traefik_default_certificate,
    traefik_static,
)

#: The Traefik planes: (d) its TCP router, (d') its HTTP router, on one Traefik.
TRAEFIK_TCP, TRAEFIK_HTTP = "d_traefik", "d_traefik_http"


def traefik_command(
    directory: Path, ports: dict[str, int], endpoint: str, token: str, proxy: str, poll: str
) -> list[str]:
    """Traefik with a TCP entry point (``tcp``) and/or an HTTP one (``web``), as in ``ports``
    (plane -> port), each routed to ``pfo-<proxy>@http``; the default TLS store has its
    certificate (without one Traefik generates an RSA key on every apply)."""
    service = f"pfo-{proxy}"
    routes, entry_points = "", {}
    if TRAEFIK_TCP in ports:
        routes += TRAEFIK_TCP_ROUTES.format(service=service)
        entry_points["tcp"] = ports[TRAEFIK_TCP]
    if TRAEFIK_HTTP in ports:
        routes += TRAEFIK_HTTP_ROUTES.format(service=service)
        entry_points["web"] = ports[TRAEFIK_HTTP]
    routes_file = directory / "traefik-routes.yml"
    routes_file.write_text(routes + traefik_default_certificate(directory))
    static = directory / "traefik.yml"
    static.write_text(
        traefik_static(entry_points, endpoint, token, poll, routes_file, level="ERROR")
    )
    return [traefik_binary(), f"--configFile={static}"]


def nginx_files(directory: Path, port: int, njs: bool = False) -> tuple[list[str], Path, str]:
    """nginx's command, the upstreams file the agent writes, and the reload command; ``njs``:
    the stream server proxies to the block the agent's njs module picks."""
    binary = nginx_binary()
    upstreams = directory / "upstreams.conf"
    config = directory / "nginx.conf"
    modules = "\n".join(f"load_module {m};" for m in (STREAM_MODULE, *(NJS_MODULES if njs else ())))
    # njs reads the state file in the workers: as this user when started as root.
    user = f"user {getpass.getuser()};" if njs else ""
    pick = (
        f"js_import pfo from {directory}/upstreams.js;\n    js_set $pfo_relays pfo.relays;"
        if njs
        else ""
    )
    config.write_text(
        f"""{modules}
{user}
daemon off;
worker_processes 1;
pid {directory}/nginx.pid;
error_log {directory}/nginx-error.log error;
events {{ worker_connections 4096; }}
stream {{
    include {upstreams};
    {pick}
    server {{
        listen 127.0.0.1:{port};
        proxy_pass {"$pfo_relays" if njs else "relays"};
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


async def start_nginx(launch: Launch, port: int, metrics_port: int, njs: bool = False) -> None:
    """(e), or (e') with ``njs``, in its own directory: the agent first (nginx's configuration
    includes the file it writes), then nginx."""
    name = "nginx-njs" if njs else "nginx"
    directory = launch.directory / name
    directory.mkdir()
    nginx, upstreams, _reload = nginx_files(directory, port, njs)
    launch.start(
        [
            *launch.pfo("agent", "nginx", *(("--mode", "njs") if njs else ())),
            *("--map", f"{PROXY}=relays", "--output", str(upstreams)),
            *("--reload-pid-file", str(directory / "nginx.pid")),
            *("--metrics-port", str(metrics_port)),
        ],
        f"agent-{name}.log",
    )
    await wait_for_file(upstreams)
    launch.start(nginx, f"{name}.log")
