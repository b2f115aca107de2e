"""Start, kill -9 and restart real instance servers; free ports; poll conditions with a deadline."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

_ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")


def free_port() -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class InstanceProcess:
    """A real HTTP instance in its own process (``tests.helpers.instance_server``)."""

    def __init__(self, *, flap: bool = False, port: int = 0) -> None:
        self.flap = flap
        self.port = port
        self.proc: subprocess.Popen[str] | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> InstanceProcess:
        args = [sys.executable, "-m", "tests.helpers.instance_server", "--port", str(self.port)]
        if self.flap:
            args.append("--flap")
        self.proc = subprocess.Popen(
            args, cwd=_ROOT, stdout=subprocess.PIPE, text=True, env={**os.environ}
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("instance server did not start")
        self.port = int(line)
        return self

    def kill(self) -> None:
        """kill -9: no goodbye, connections just die."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=5)
            if self.proc.stdout is not None:
                self.proc.stdout.close()

    def restart(self) -> None:
        self.kill()
        self.start()

    def request(self, method: str, path: str) -> Any:
        req = urllib.request.Request(
            self.url + path, method=method, data=b"" if method == "POST" else None
        )
        with urllib.request.urlopen(req, timeout=5) as resp:
            return json.loads(resp.read())

    def __enter__(self) -> InstanceProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()


async def wait_for(
    condition: Callable[[], Awaitable[T]], *, within: float = 10.0, interval: float = 0.02
) -> T:
    """Poll ``condition`` until it returns something truthy; fail at the deadline."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    last: T = await condition()
    while not last:
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {within}s (last value {last!r})")
        await asyncio.sleep(interval)
        last = await condition()
    return last
