"""Real processes for data-plane tests: relays, HAProxy (master-worker, reloadable), the agent,
the forwarder and ``serve`` on a fixed port (so it can be stopped and started again).

``haproxy_binary()`` fails the test loudly when HAProxy is missing: data-plane tests never skip.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from tests.helpers.processes import free_port

_ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")


def poll_until(condition: Callable[[], T], *, within: float = 10.0, interval: float = 0.02) -> T:
    """Call ``condition`` until it returns something truthy; fail at the deadline."""
    deadline = time.monotonic() + within
    last = condition()
    while not last:
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within}s (last value {last!r})")
        time.sleep(interval)
        last = condition()
    return last


def haproxy_binary() -> str:
    """The Debian ``haproxy`` (installed by ``make system-deps``, which ``make test`` runs)."""
    found = shutil.which("haproxy") or (
        "/usr/sbin/haproxy" if os.access("/usr/sbin/haproxy", os.X_OK) else None
    )
    if found is None:
        pytest.fail(
            "haproxy not found: the data-plane tests need the real HAProxy. Install it with "
            "`make system-deps` (run by `make test`), or `apt-get install haproxy`."
        )
    return found


def stop(proc: subprocess.Popen[Any] | None, *, kill: bool = False) -> None:
    """SIGTERM (or kill -9) and reap."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


class Relay:
    """``examples/relay.py``: answers ``GET /`` with its name, ``/stream`` with lines."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.port = 0
        self.proc: subprocess.Popen[str] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> Relay:
        args = [sys.executable, "examples/relay.py", "--name", self.name, "--port", str(self.port)]
        self.proc = subprocess.Popen(args, cwd=_ROOT, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"relay {self.name} did not start")
        self.port = int(line)
        return self

    def kill(self) -> None:
        stop(self.proc, kill=True)
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()


class Serve:
    """``proxy-failover serve`` on a fixed port over one database: stop and start it again."""

    def __init__(self, database_url: str, secret: str, log: Path) -> None:
        self.database_url = database_url
        self.secret = secret
        self.log = log
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> Serve:
        env = {**os.environ, "PFO_DATABASE_URL": self.database_url, "PFO_JWT_SECRET": self.secret}
        with self.log.open("a") as sink:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "proxy_failover", "serve", "--port", str(self.port)],
                cwd=_ROOT,
                env=env,
                stdout=sink,
                stderr=subprocess.STDOUT,
                text=True,
            )

        def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"serve exited:\n{self.log.read_text()[-3000:]}")
            try:
                return httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        poll_until(ready, within=30, interval=0.05)
        return self

    def stop(self, *, kill: bool = False) -> None:
        stop(self.proc, kill=kill)


HAPROXY_CONFIG = """\
global
    stats socket {socket} mode 600 level admin expose-fd listeners
    log stderr local0 warning
defaults
    mode tcp
    log global
    timeout connect 1s
    timeout client 30s
    timeout server 30s
frontend front
    bind 127.0.0.1:{port}
    default_backend {backend}
backend {backend}
    balance roundrobin
"""


class Haproxy:
    """HAProxy in master-worker mode with one TCP frontend and an empty backend the agent fills.

    ``reload()`` is ``kill -USR2`` of the master: a new worker with the configuration as written,
    so every runtime change (added servers, states) is gone until the agent restores it.
    """

    def __init__(self, directory: Path, backend: str = "relays") -> None:
        self.binary = haproxy_binary()
        self.directory = directory
        self.backend = backend
        self.socket = str(directory / "haproxy.sock")
        self.port = free_port()
        self.config = directory / "haproxy.cfg"
        self.config.write_text(
            HAPROXY_CONFIG.format(socket=self.socket, port=self.port, backend=backend)
        )
        self.proc: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Haproxy:
        check = subprocess.run(
            [self.binary, "-c", "-q", "-f", str(self.config)], capture_output=True, text=True
        )
        assert check.returncode == 0, check.stderr
        with (self.directory / "haproxy.log").open("a") as sink:
            self.proc = subprocess.Popen(
                [self.binary, "-W", "-db", "-f", str(self.config)],
                stdout=subprocess.DEVNULL,
                stderr=sink,
                text=True,
            )
        poll_until(lambda: self.runtime("show info").startswith("Name:"), within=10)
        return self

    def runtime(self, command: str) -> str:
        """One Runtime API command; '' while the socket is not there."""
        try:
            with socket.socket(socket.AF_UNIX) as sock:
                sock.settimeout(2)
                sock.connect(self.socket)
                sock.sendall(command.encode() + b"\n")
                chunks = []
                while chunk := sock.recv(65536):
                    chunks.append(chunk)
                return b"".join(chunks).decode()
        except OSError:
            return ""

    def servers(self) -> dict[str, tuple[int, int]]:
        """Server name -> (srv_op_state, srv_admin_state) of the backend."""
        result = {}
        for line in self.runtime(f"show servers state {self.backend}").splitlines():
            fields = line.split()
            if len(fields) > 6 and fields[1] == self.backend:
                result[fields[3]] = (int(fields[5]), int(fields[6]))
        return result

    def worker_pid(self) -> int | None:
        """The pid of the worker answering the socket (None while there is none)."""
        for line in self.runtime("show info").splitlines():
            if line.startswith("Pid:"):
                return int(line.split(":", 1)[1])
        return None

    def reload(self) -> None:
        """``kill -USR2`` of the master; returns once a new worker answers the socket."""
        assert self.proc is not None
        before = self.worker_pid()
        self.proc.send_signal(signal.SIGUSR2)
        poll_until(lambda: self.worker_pid() not in (None, before), within=10)

    def stop(self) -> None:
        stop(self.proc)


def proxy_failover(*args: str, log: Path) -> subprocess.Popen[str]:
    """``python -m proxy_failover ARGS`` with its output in ``log``."""
    with log.open("a") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "proxy_failover", *args],
            cwd=_ROOT,
            stdout=sink,
            stderr=subprocess.STDOUT,
            text=True,
        )


def answered_by(url: str, timeout: float = 2.0) -> str | None:
    """The relay name answering ``GET url`` on a new connection, or None on any failure."""
    try:
        response = httpx.get(url, timeout=timeout, headers={"Connection": "close"})
    except httpx.HTTPError:
        return None
    return response.text.strip() if response.status_code == 200 else None


def metric(url: str, name: str, **labels: str) -> float | None:
    """One sample of a Prometheus text page (None when absent or unreachable)."""
    try:
        text = httpx.get(url, timeout=2).text
    except httpx.HTTPError:
        return None
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        sample, _, rest = key.partition("{")
        if sample == name and ",".join(sorted(rest.rstrip("}").split(","))) == wanted:
            return float(value)
    return None


class ControlPlane:
    """A proxy set up through the REST API of a real ``serve``, as its owner (and an admin)."""

    def __init__(self, url: str, owner_token: str, admin_token: str, proxy_id: str) -> None:
        self.url = url
        self.proxy_id = proxy_id
        self.owner = {"Authorization": f"Bearer {owner_token}"}
        self.admin = {"Authorization": f"Bearer {admin_token}"}

    def call(self, method: str, path: str, *, admin: bool = False, **kwargs: Any) -> Any:
        headers = self.admin if admin else self.owner
        response = httpx.request(method, self.url + path, headers=headers, timeout=10, **kwargs)
        assert response.status_code < 300, response.text
        return response.json().get("data")

    def create(self, relays: list[Relay]) -> dict[str, str]:
        """Fast probes (0.2 s, down after 2 failures, up after 1); instances in relay order of
        preference. Returns instance name -> id."""
        config = {
            "healthCheckIntervalSeconds": 0.2,
            "healthCheckTimeoutSeconds": 0.15,
            "unhealthyThreshold": 2,
            "healthyThreshold": 1,
            "healthCheck": {"type": "http", "path": "/health"},
        }
        self.call(
            "POST", "/proxy/failover/config", json={"proxyId": self.proxy_id, "config": config}
        )
        ids = {}
        for rank, relay in enumerate(relays, start=1):
            data = {"instanceName": relay.name, "endpoint": relay.address, "priority": rank}
            body = {"proxyId": self.proxy_id, "instanceData": data}
            ids[relay.name] = self.call("POST", "/proxy/instances", json=body)["id"]
        return ids

    def active(self) -> str | None:
        """The active instance's name (None when there is none or the API is down)."""
        try:
            route = self.call("GET", f"/proxy/{self.proxy_id}/route")
        except (AssertionError, httpx.HTTPError):
            return None
        return str(route["instanceName"]) if route["isActive"] else None

    def healthy(self) -> set[str]:
        instances = self.call("GET", f"/proxy/{self.proxy_id}/instances")
        return {i["instanceName"] for i in instances if i["healthStatus"] == "healthy"}

    def switch(self, source_id: str, target_id: str) -> dict[str, Any]:
        """A planned switchover (admin)."""
        body = {
            "proxyId": self.proxy_id,
            "sourceInstanceId": source_id,
            "targetInstanceId": target_id,
            "reason": "planned maintenance",
        }
        event: dict[str, Any] = self.call("POST", "/proxy/failover/execute", admin=True, json=body)
        path = f"/proxy/failover/events/{event['id']}/complete"
        self.call("PUT", path, admin=True, json={"status": "completed"})
        return event


class OpenStream:
    """A long-lived ``GET /stream`` through a data plane, read by a thread: which relay sends its
    lines, and whether the connection was closed."""

    def __init__(self, host: str, port: int) -> None:
        import threading

        self.sock = socket.create_connection((host, port), timeout=5)
        self.sock.sendall(b"GET /stream HTTP/1.1\r\nHost: test\r\n\r\n")
        self.names: list[str] = []
        self.closed = False
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        buffer = b""
        self.sock.settimeout(None)
        try:
            while chunk := self.sock.recv(65536):
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    words = line.decode(errors="replace").strip().split(" ")
                    if len(words) == 2 and words[1].isdigit():
                        self.names.append(words[0])
        except OSError:
            pass
        self.closed = True

    def lines_from(self, name: str) -> int:
        return sum(1 for n in self.names if n == name)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()
