"""The processes and the control plane of ``bench/dataplane.py``: relays, any command with its
log (``Launch``: every plane starts its processes through it, so the run stops them all), and
``serve`` driven through its REST API (setup, switchovers, the last failover's commit time).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from proxy_failover.entrypoints.api.auth import mint_token

ROOT = Path(__file__).resolve().parents[1]
SECRET = "bench-dataplane-secret-0123456789-abcdefghij"
PROXY = "bench"
NAMES = ("edge-a", "edge-b", "edge-c")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Relay:
    def __init__(self, name: str) -> None:
        self.name = name
        self.port = free_port()
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "examples/relay.py", "--name", self.name, "--port", str(self.port)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        self.proc.stdout.readline()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()


def start(args: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    with log.open("a") as sink:
        return subprocess.Popen(
            args,
            cwd=ROOT,
            stdout=sink,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, **(env or {})},
        )


@dataclass
class Launch:
    """Where the planes start their processes: the run's directory, the list the run stops them
    from, and the options every ``proxy-failover`` agent gets (``--url``, ``--token``, ...)."""

    directory: Path
    agent: list[str]
    procs: list[subprocess.Popen[str]] = field(default_factory=list)

    def start(self, args: list[str], log: str, env: dict[str, str] | None = None) -> None:
        self.procs.append(start(args, self.directory / log, env))

    def pfo(self, *command: str) -> list[str]:
        """``python -m proxy_failover COMMAND`` followed by the agent options."""
        return [sys.executable, "-m", "proxy_failover", *command, *self.agent]

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()


async def wait_for_file(path: Path, attempts: int = 100) -> None:
    """Until ``path`` exists, ``attempts`` times 0.1 s at the most (the plane then starts anyway
    and its first answers say what is missing)."""
    for _ in range(attempts):
        if await asyncio.to_thread(path.exists):
            return
        await asyncio.sleep(0.1)


class ControlPlane:
    def __init__(self, url: str) -> None:
        self.url = url
        self.owner = {"Authorization": f"Bearer {mint_token(SECRET, 'bench')}"}
        self.admin = {"Authorization": f"Bearer {mint_token(SECRET, 'root', admin=True)}"}
        self.http = httpx.AsyncClient(base_url=url, timeout=10)
        self.ids: dict[str, str] = {}

    async def call(self, method: str, path: str, admin: bool = False, **kw: Any) -> Any:
        response = await self.http.request(
            method, path, headers=self.admin if admin else self.owner, **kw
        )
        response.raise_for_status()
        return response.json().get("data")

    async def setup(self, relays: Sequence[Relay]) -> None:
        config = {
            "healthCheckIntervalSeconds": 0.2,
            "healthCheckTimeoutSeconds": 0.15,
            "unhealthyThreshold": 2,
            "healthyThreshold": 2,
            "healthCheck": {"type": "http", "path": "/health"},
        }
        await self.call("POST", "/proxy/failover/config", json={"proxyId": PROXY, "config": config})
        for rank, relay in enumerate(relays, 1):
            data = {"instanceName": relay.name, "endpoint": f"127.0.0.1:{relay.port}"}
            data["priority"] = rank  # type: ignore[assignment]
            body = {"proxyId": PROXY, "instanceData": data}
            self.ids[relay.name] = (await self.call("POST", "/proxy/instances", json=body))["id"]

    async def state(self) -> tuple[str | None, set[str]]:
        instances = await self.call("GET", f"/proxy/{PROXY}/instances")
        active = next((i["instanceName"] for i in instances if i["isActive"]), None)
        healthy = {i["instanceName"] for i in instances if i["healthStatus"] == "healthy"}
        return active, healthy

    async def switch(self, source: str, target: str) -> float:
        """A planned switchover, completed; returns the commit time (the event's createdAt)."""
        body = {
            "proxyId": PROXY,
            "sourceInstanceId": self.ids[source],
            "targetInstanceId": self.ids[target],
        }
        event = await self.call("POST", "/proxy/failover/execute", admin=True, json=body)
        await self.call(
            "PUT",
            f"/proxy/failover/events/{event['id']}/complete",
            admin=True,
            json={"status": "completed"},
        )
        return datetime.fromisoformat(event["createdAt"]).timestamp()

    async def last_failover_at(self) -> float:
        return (await self.last_failover())[0]

    async def last_failover(self, kind: str = "failover") -> tuple[float, str]:
        """The latest failover event's commit time and id: an automatic failover commits at
        ``completedAt`` (its ``createdAt`` is the detection), an executed one at ``createdAt``."""

        # Of its type: a recovery event (the relay healthy again) may have been recorded since.
        params = {"limit": 1, "type": kind}
        event = (await self.call("GET", f"/proxy/{PROXY}/failover/events", params=params))[0]
        at = event["completedAt"] if event["triggeredBy"] == "system" else event["createdAt"]
        return datetime.fromisoformat(at).timestamp(), event["id"]

    async def settle(self, active: str = "edge-a") -> None:
        """Every relay healthy and ``active`` active."""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            current, healthy = await self.state()
            if healthy == set(NAMES):
                if current == active:
                    return
                if current is not None:
                    await self.switch(current, active)
                    continue
            await asyncio.sleep(0.05)
        raise RuntimeError("control plane did not settle")


async def start_control_plane(launch: Launch, relays: dict[str, Relay]) -> ControlPlane:
    """``serve`` on SQLite in the run's directory, the proxy set up on ``relays`` (edge-a active,
    all healthy)."""
    port = free_port()
    launch.start(
        [sys.executable, "-m", "proxy_failover", "serve", "--port", str(port)],
        "serve.log",
        {
            "PFO_DATABASE_URL": f"sqlite+aiosqlite:///{launch.directory}/pfo.db",
            "PFO_JWT_SECRET": SECRET,
            # the relays listen on loopback, refused to non-admins by default
            "PFO_OUTBOUND_ALLOW": "127.0.0.0/8",
        },
    )
    cp = ControlPlane(f"http://127.0.0.1:{port}")
    for _ in range(300):
        try:
            if (await cp.http.get("/readyz")).status_code == 200:
                break
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.1)
    await cp.setup(list(relays.values()))
    await cp.settle()
    return cp
