"""The real ``proxy-failover serve`` command in a subprocess on a free port."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.helpers.processes import free_port

_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class ServeProcess:
    url: str
    proc: subprocess.Popen[str]
    log: Path


def start_serve(database_url: str, log: Path, env: dict[str, str] | None = None) -> ServeProcess:
    """``proxy-failover serve`` on a free port; returns once ``/readyz`` answers 200."""
    port = free_port()
    full_env = {**os.environ, "PFO_DATABASE_URL": database_url, **(env or {})}
    with log.open("w") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "proxy_failover", "serve", "--port", str(port)],
            cwd=_ROOT,
            env=full_env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            text=True,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"serve exited with {proc.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return ServeProcess(url, proc, log)
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"serve did not become ready:\n{log.read_text()}")


def stop_serve(server: ServeProcess) -> None:
    server.proc.terminate()
    try:
        server.proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        server.proc.wait(timeout=5)
