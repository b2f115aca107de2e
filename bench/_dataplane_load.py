"""The load of ``bench/dataplane.py``: requests on new connections (open and closed loop), long
streams, bulk downloads, and their counters (who answered, latency percentiles).

Each request is ``GET /`` on a new TCP connection, answered with the relay's name (None: an error
a client saw); a stream is ``GET /stream``, whose lines name the relay that sends them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"


def pct(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round((len(ordered) - 1) * q))]


@dataclass
class Result:
    started: float
    ended: float
    name: str | None  # None: a client-visible error


async def one_request(port: int, limit_seconds: float = 3.0) -> Result:
    started = time.time()
    try:
        async with asyncio.timeout(limit_seconds):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(REQUEST)
            body = await reader.read()
            writer.close()
        head, _, text = body.partition(b"\r\n\r\n")
        ok = head.startswith(b"HTTP/1.1 200")
        return Result(started, time.time(), text.decode().strip() if ok else None)
    except (OSError, TimeoutError):
        return Result(started, time.time(), None)


async def open_loop(port: int, rate: float, duration: float) -> list[Result]:
    """``rate`` requests/s for ``duration`` s, each on a new connection, not waiting for answers."""
    loop = asyncio.get_running_loop()
    tasks = []
    begin = loop.time()
    n = 0
    while (due := begin + n / rate) < begin + duration:
        await asyncio.sleep(max(0.0, due - loop.time()))
        tasks.append(asyncio.create_task(one_request(port)))
        n += 1
    return list(await asyncio.gather(*tasks))


@dataclass
class Stream:
    """A long-lived ``GET /stream``; with ``reconnect`` it reconnects at once when closed."""

    port: int
    reconnect: bool
    lines: list[tuple[float, str]] = field(default_factory=list)
    closes: list[float] = field(default_factory=list)
    task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.write(b"GET /stream HTTP/1.1\r\nHost: bench\r\n\r\n")
                while line := await reader.readline():
                    words = line.decode(errors="replace").split()
                    if len(words) == 2 and words[1].isdigit():
                        self.lines.append((time.time(), words[0]))
            except OSError:
                pass
            self.closes.append(time.time())
            if not self.reconnect:
                return
            await asyncio.sleep(0.001)

    def first_from(self, name: str, after: float) -> float | None:
        return next((t for t, n in self.lines if n == name and t >= after), None)

    def still_from(self, name: str, after: float) -> bool:
        return any(n == name and t >= after for t, n in self.lines)

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)


async def wait_answered_by(port: int, name: str, within: float = 20) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if (await one_request(port, 1.0)).name == name:
            return
        await asyncio.sleep(0.05)
    raise RuntimeError(f"port {port} never answered by {name}")


def summarise(results: list[Result]) -> dict[str, Any]:
    latencies = [(r.ended - r.started) * 1000 for r in results]
    return {
        "requests": len(results),
        "errors": sum(1 for r in results if r.name is None),
        "p99_ms": round(pct(latencies, 0.99), 1),
        "worst_ms": round(max(latencies), 1),
    }


async def closed_loop(port: int, workers: int = 16, duration: float = 3.0) -> dict[str, Any]:
    latencies: list[float] = []
    errors = 0
    stop_at = time.monotonic() + duration

    async def worker() -> None:
        nonlocal errors
        while time.monotonic() < stop_at:
            result = await one_request(port)
            if result.name is None:
                errors += 1
            latencies.append((result.ended - result.started) * 1000)

    await asyncio.gather(*(worker() for _ in range(workers)))
    return {
        "requests_per_s": round(len(latencies) / duration),
        "p50_ms": round(pct(latencies, 0.5), 2),
        "p99_ms": round(pct(latencies, 0.99), 2),
        "errors": errors,
    }


async def bulk(port: int, rounds: int = 3) -> float:
    """MB/s of 32 MiB downloads (one at a time)."""
    total, started = 0, time.perf_counter()
    for _ in range(rounds):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /bulk HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        while chunk := await reader.read(1 << 20):
            total += len(chunk)
        writer.close()
    return round(total / (time.perf_counter() - started) / 1e6, 1)
