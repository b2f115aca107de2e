"""Idle event streams: what ``--streams`` open, quiet ``GET /proxy/:id/stream`` cost the server.

``proxy-failover serve`` on SQLite (engine off, so nothing happens), ``--streams`` streams opened
over raw sockets and left idle; the server's CPU over ``--duration`` seconds is what holding them
costs. ``--compare-src DIR`` runs the same against another source tree (``serve`` started with
``PYTHONPATH=DIR``), e.g. a checkout of the commit before the shared watch, for a before/after.

    .venv/bin/python bench/streams.py [--streams 1000] [--duration 10] [--compare-src DIR]

Issue 12: 1,000 idle streams cost 85 % of a core. Writes ``bench/results/streams-sqlite.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import tempfile
import time
from pathlib import Path

import httpx
from _report import Cell, Table, save
from api import Server, cpu_seconds, mint

PROXY = "quiet"


async def open_streams(url: str, token: str, count: int) -> list[asyncio.StreamWriter]:
    """``count`` streams, each read up to its first line (the server holds it open)."""
    host, port = url.removeprefix("http://").split(":")
    request = (
        f"GET /proxy/{PROXY}/stream HTTP/1.1\r\nHost: {host}\r\n"
        f"Authorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n"
    ).encode()
    writers: list[asyncio.StreamWriter] = []
    while len(writers) < count:
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(request)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
        if head.startswith(b"HTTP/1.1 200"):
            writers.append(writer)
            continue
        writer.close()  # e.g. 503/018 when the shared machine stalls the database: try again
        if not head.startswith(b"HTTP/1.1 503"):
            raise RuntimeError(head.decode(errors="replace"))
        await asyncio.sleep(0.5)
    return writers


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def measure(server: Server, token: str, streams: int, duration: float) -> tuple[float, float]:
    """The server's cores and resident MiB while ``streams`` idle streams are open."""
    writers = await open_streams(server.url, token, streams)
    await asyncio.sleep(2.0)  # settled: the openings' own work is not counted
    before = cpu_seconds(server.proc.pid)
    started = time.monotonic()
    await asyncio.sleep(duration)
    cores = (cpu_seconds(server.proc.pid) - before) / (time.monotonic() - started)
    memory = rss_mib(server.proc.pid)
    for writer in writers:
        writer.close()
    return cores, memory


def run(label: str, args: argparse.Namespace, workdir: Path, src: str | None) -> list[Cell]:
    secret = secrets.token_urlsafe(48)
    env = {"PFO_ENGINE_ENABLED": "false", "PFO_STREAM_MAX_PER_CALLER": "0"}
    if src is not None:
        env["PYTHONPATH"] = src + os.pathsep + os.environ.get("PYTHONPATH", "")
    database = f"sqlite+aiosqlite:///{workdir / f'{label}.db'}"
    server = Server(database, secret, workdir / f"{label}.log", env)
    try:
        token = mint(secret, "watcher")
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=server.url, headers=headers, timeout=30) as http:
            http.post("/proxy/failover/config", json={"proxyId": PROXY}).raise_for_status()
        idle, idle_memory = asyncio.run(measure(server, token, 0, args.duration))
        cores, memory = asyncio.run(measure(server, token, args.streams, args.duration))
    finally:
        server.stop()
    per_stream = (memory - idle_memory) * 1024 / max(args.streams, 1)
    print(
        f"{label}: {args.streams} idle streams: {cores:.3f} cores (no streams: {idle:.3f}), "
        f"{memory:.0f} MiB ({per_stream:.0f} KiB a stream)"
    )
    return [label, args.streams, cores, idle, memory, per_stream]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--compare-src", help="another tree's src/ to measure as 'before'")
    parser.add_argument("--compare-label", default="before (a log read per stream per second)")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="pfo-streams-") as folder:
        if args.compare_src:
            rows.append(run(args.compare_label, args, Path(folder), args.compare_src))
        rows.append(run("this tree (one shared watch)", args, Path(folder), None))
    save(
        "streams-sqlite",
        title="Idle event streams (SQLite)",
        tables=[
            Table(
                f"Server CPU while {args.streams} event streams stay open and quiet, "
                f"{args.duration:g} s",
                [
                    "server",
                    "streams",
                    "server cores",
                    "cores with no stream",
                    "server MiB",
                    "KiB a stream",
                ],
                rows,
                ["", "d", ".3f", ".3f", ".0f", ".0f"],
            )
        ],
        notes=[
            "Engine off: no notification is written, so the streams only wait. The machine's "
            "cores are shared with other work: figures are a floor.",
        ],
    )


if __name__ == "__main__":
    main()
