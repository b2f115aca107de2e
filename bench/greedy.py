"""Greedy readers: other callers' latency while one non-admin reads event history in 20 loops.

Issue 12's measurement, on SQLite: ``proxy-failover serve`` in a subprocess, one proxy with
``--events`` failover events owned by a non-admin ``greedy``, who runs ``--loops`` loops of
``GET /proxy/:id/failover/events?limit=1000`` back to back (in a process of its own, so its client
CPU does not slow the measuring one), while ``--readers`` other users each read their own proxy
(``GET /proxy/:id/redundancy``, ``GET /proxy/:id/instances``, ``GET /proxies`` in turn) ten times a
second. Reported per mode: the other callers' p50/p99/max, the greedy caller's answers (200 and
429), and the server's CPU. Modes:

* ``alone``: no greedy caller at all: the other callers' baseline on this machine;
* ``off``: ``PFO_RATE_LIMIT_PER_SECOND=0`` (no limits: the issue's situation);
* ``on``: the default limits, the greedy loops ignore ``Retry-After`` and retry at once;
* ``polite``: the default limits, the greedy loops wait ``Retry-After`` as told.

    .venv/bin/python bench/greedy.py [--duration 10] [--loops 20] [--events 300] [--readers 4]

Goal (issue 12): other callers' p99 under 50 ms with the limits on. Writes
``bench/results/greedy-sqlite.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from _report import Table, save
from api import Server, cpu_seconds, mint

from proxy_failover.config import Settings

GREEDY_PROXY = "greedy-history"
DEFAULT_RATE = Settings.model_fields["rate_limit_per_second"].default
#: Server settings per mode: the defaults unless given (api.Server turns limits off by default).
DEFAULT_LIMITS = {"PFO_RATE_LIMIT_PER_SECOND": str(DEFAULT_RATE)}
MODES = {
    "alone": DEFAULT_LIMITS,  # no greedy caller: the other callers' baseline on this machine
    "off": {"PFO_RATE_LIMIT_PER_SECOND": "0"},
    "on": DEFAULT_LIMITS,
    "polite": DEFAULT_LIMITS,
}


def prepare(url: str, admin: str, greedy: str, readers: list[str], events: int) -> None:
    """The greedy user's proxy with ``events`` events; one proxy with two instances per reader."""

    def client(token: str) -> httpx.Client:
        return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30)

    with client(greedy) as http:
        http.post("/proxy/failover/config", json={"proxyId": GREEDY_PROXY}).raise_for_status()
        ids: list[str] = []
        for name in ("a", "b"):
            body: dict[str, Any] = {"proxyId": GREEDY_PROXY, "instanceData": {"instanceName": name}}
            ids.append(http.post("/proxy/instances", json=body).json()["data"]["id"])
            http.put(f"/proxy/instances/{ids[-1]}/health", json={"healthStatus": "healthy"})
    with client(admin) as http:
        source: str | None = None
        for n in range(events):
            target = ids[n % 2]
            body = {"proxyId": GREEDY_PROXY, "sourceInstanceId": source, "targetInstanceId": target}
            event = http.post("/proxy/failover/execute", json=body)
            event.raise_for_status()
            done = {"status": "completed"}
            http.put(f"/proxy/failover/events/{event.json()['data']['id']}/complete", json=done)
            source = target
    for index, token in enumerate(readers):
        with client(token) as http:
            proxy = f"reader-{index}"
            http.post("/proxy/failover/config", json={"proxyId": proxy}).raise_for_status()
            for name in ("a", "b"):
                body = {"proxyId": proxy, "instanceData": {"instanceName": name}}
                http.post("/proxy/instances", json=body).raise_for_status()


async def greedy_loops(url: str, token: str, duration: float, loops: int, polite: bool) -> None:
    """The greedy caller (run in its own process): prints its answers by status as JSON."""
    counts: dict[str, int] = {}
    deadline = time.monotonic() + duration
    path = f"/proxy/{GREEDY_PROXY}/failover/events?limit=1000"

    async def loop() -> None:
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as http:
            while time.monotonic() < deadline:
                response = await http.get(path)
                key = str(response.status_code)
                counts[key] = counts.get(key, 0) + 1
                if polite and response.status_code == 429:
                    wait = float(response.headers.get("Retry-After", "1"))
                    await asyncio.sleep(min(wait, max(0.0, deadline - time.monotonic())))

    await asyncio.gather(*(loop() for _ in range(loops)))
    print(json.dumps(counts))


async def read_as_others(url: str, readers: list[str], duration: float) -> list[float]:
    """Each reader reads its own proxy ten times a second; the latencies in milliseconds."""
    latencies: list[float] = []
    deadline = time.monotonic() + duration

    async def reader(index: int, token: str) -> None:
        own = f"/proxy/reader-{index}"
        paths = [f"{own}/redundancy", f"{own}/instances", "/proxies"]
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as http:
            n = 0
            while time.monotonic() < deadline:
                started = time.perf_counter()
                response = await http.get(paths[n % len(paths)])
                elapsed = time.perf_counter() - started
                response.raise_for_status()
                latencies.append(elapsed * 1000)
                n += 1
                await asyncio.sleep(max(0.0, 0.1 - elapsed))

    await asyncio.gather(*(reader(i, token) for i, token in enumerate(readers)))
    return latencies


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def run_mode(mode: str, args: argparse.Namespace, workdir: Path) -> list[Any]:
    secret = secrets.token_urlsafe(48)
    database = f"sqlite+aiosqlite:///{workdir / f'{mode}.db'}"
    env = {"PFO_ENGINE_ENABLED": "false", **MODES[mode]}
    server = Server(database, secret, workdir / f"{mode}.log", env)
    try:
        admin = mint(secret, "bench-admin", admin=True)
        greedy = mint(secret, "greedy")
        readers = [mint(secret, f"reader-{n}") for n in range(args.readers)]
        prepare(server.url, admin, greedy, readers, args.events)
        time.sleep(1.0)  # let the preparation's burst refill: each mode starts even
        command = [sys.executable, __file__, "--greedy-worker", server.url, greedy]
        loops = 0 if mode == "alone" else args.loops
        command += ["--duration", str(args.duration), "--loops", str(loops)]
        if mode == "polite":
            command.append("--polite")
        before = cpu_seconds(server.proc.pid)
        started = time.monotonic()
        worker = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            text=True,
            preexec_fn=(lambda: os.nice(args.greedy_nice)) if args.greedy_nice else None,
        )
        time.sleep(0.5)  # the loops are running before the readers start measuring
        latencies = asyncio.run(read_as_others(server.url, readers, args.duration - 1.0))
        output, _ = worker.communicate(timeout=args.duration + 120)
        cpu = (cpu_seconds(server.proc.pid) - before) / (time.monotonic() - started)
    finally:
        server.stop()
    counts = json.loads(output.strip().splitlines()[-1])
    greedy_ok, greedy_429 = counts.get("200", 0), counts.get("429", 0)
    row = [
        mode,
        len(latencies),
        statistics.median(latencies),
        percentile(latencies, 0.99),
        max(latencies),
        greedy_ok / args.duration,
        greedy_429 / args.duration,
        cpu,
    ]
    print(
        f"{mode:7} others: {len(latencies)} reads p50 {row[2]:.1f} ms p99 {row[3]:.1f} ms "
        f"max {row[4]:.1f} ms | greedy {row[5]:.1f}/s ok, {row[6]:.1f}/s 429 | "
        f"server {cpu:.2f} cores",
        flush=True,
    )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--loops", type=int, default=20)
    parser.add_argument("--events", type=int, default=300)
    parser.add_argument("--readers", type=int, default=4)
    parser.add_argument("--modes", default="alone,off,on,polite")
    parser.add_argument("--greedy-worker", nargs=2, metavar=("URL", "TOKEN"))
    parser.add_argument("--polite", action="store_true")
    parser.add_argument(
        "--greedy-nice",
        type=int,
        default=0,
        help="run the greedy loops at this niceness (19: they stand for a client on another "
        "machine, whose CPU is not the server's; 0: they compete for the server's cores)",
    )
    args = parser.parse_args()
    if args.greedy_worker:
        url, token = args.greedy_worker
        asyncio.run(greedy_loops(url, token, args.duration, args.loops, args.polite))
        return
    with tempfile.TemporaryDirectory(prefix="pfo-greedy-") as folder:
        rows = [run_mode(mode, args, Path(folder)) for mode in args.modes.split(",")]
    remote = f" (greedy loops at niceness +{args.greedy_nice})" if args.greedy_nice else ""
    save(
        "greedy-sqlite" + (f"-nice{args.greedy_nice}" if args.greedy_nice else ""),
        title="Greedy readers (SQLite)" + remote,
        tables=[
            Table(
                f"{args.loops} loops of one non-admin on GET …/failover/events?limit=1000 "
                f"({args.events} events) while {args.readers} other users read, "
                f"{args.duration:g} s per mode",
                [
                    "limits",
                    "other reads",
                    "others p50 ms",
                    "others p99 ms",
                    "others max ms",
                    "greedy 200/s",
                    "greedy 429/s",
                    "server cores",
                ],
                rows,
                ["", "d", ".1f", ".1f", ".1f", ".1f", ".0f", ".2f"],
            )
        ],
        notes=[
            "alone = no greedy caller (the baseline); off = PFO_RATE_LIMIT_PER_SECOND=0; "
            "on = default limits, the greedy loops retry at once after a 429; polite = default "
            "limits, the greedy loops wait Retry-After.",
            "The greedy loops run in a process of their own; all processes share the machine's "
            "cores (and other work on it), so the figures are a floor.",
            "Goal (issue 12): other callers' p99 under 50 ms.",
            "In the on row the greedy process itself, retrying each 429 at once, runs on the "
            "same two cores as the server and the readers: compare the server's cores with the "
            "polite row to tell its cost on the server (a few microseconds a refusal) from its "
            "cost on the machine.",
            f"Ran at niceness {os.nice(0)} (negative: ahead of the machine's other work, which "
            "otherwise sets the latencies: compare with the alone row); the greedy loops at "
            f"niceness {os.nice(0) + args.greedy_nice} (--greedy-nice {args.greedy_nice}"
            + (
                ": they stand for a client elsewhere, whose CPU is not the server's)."
                if args.greedy_nice
                else ": they compete for the server's cores)."
            ),
        ],
    )


if __name__ == "__main__":
    main()
