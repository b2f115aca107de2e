"""``bench/failover.py --api-load``: kill -9 → switch while ``wrk`` saturates the API (issue 10).

proxy-failover runs as ``serve`` (a subprocess: the API and the engine's own loop and thread, as
deployed) on a fresh SQLite file. Three real instances (``tests/helpers/instance_server.py``),
keep-alive or closing their connection after each answer (``--close``). Phases, one run:

1. quiet: kill trials against ``serve`` with no load (our own quiet reference);
2. loaded: three ``wrk`` processes hammer the API for the rest of the run (16 connections reading
   a 300-event list with ``limit=1000``, 4 reading the redundancy status, 4 reporting a health
   that moves nothing) while HAProxy (same checks) and then ``serve`` get the same kill trials,
   then reported failures (``PUT …/health unhealthy`` on the active instance).

Switch times come from the database, not the API (whose answers queue behind the load): kill (wall
clock) → the ``failover.completed`` notification's ``occurred_at`` (the switch transaction's
time), and for a report, its ``instance.unhealthy`` notification → that switch (the same
transaction under ``serve``: docs/engine.md). Goals: loaded p95
≤ 1.1 x quiet p95 and ≤ HAProxy's loaded p95; report → switch p99 < 20 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
SECRET = "bench-api-load-secret-0123456789abcdef0123"
EVENTS = 300


def _wall(text: str) -> float:
    """A stored naive-UTC timestamp as epoch seconds."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


class Notes:
    """Reads the notification log of proxy ``bench`` straight from the SQLite file."""

    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(path, timeout=30, isolation_level=None)
        self.seq = self._last()

    def _last(self) -> int:
        row = self._db.execute("SELECT max(seq) FROM notification_log").fetchone()
        return int(row[0] or 0)

    def last_switch_duration(self) -> float:
        """``durationMs`` of the latest event of ``bench``: the engine's woken -> committed."""
        row = self._db.execute(
            "SELECT duration_ms FROM proxy_failover_events WHERE proxy_id = 'bench'"
            " ORDER BY created_at DESC LIMIT 1"
        ).fetchone()
        return float(row[0])

    def mark(self) -> None:
        self.seq = self._last()

    def first(self, kind: str, within: float = 30.0) -> float:
        """``occurred_at`` (epoch s) of the first ``kind`` note of ``bench`` after the mark."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            row = self._db.execute(
                "SELECT occurred_at FROM notification_log WHERE proxy_id = 'bench' AND type = ?"
                " AND seq > ? ORDER BY seq LIMIT 1",
                (kind, self.seq),
            ).fetchone()
            if row is not None:
                return _wall(row[0])
            time.sleep(0.002)
        raise TimeoutError(f"no {kind} within {within}s")


async def _busy_proxy(database_url: str) -> list[str]:
    """Proxy ``busy``: two instances without endpoints and 300 switchover events."""
    from proxy_failover.bootstrap import open_service

    async with open_service(database_url) as service:
        await service.create_failover_configuration("busy", "bench", {})
        pair = [
            (await service.register_proxy_instance("busy", "bench", {"instanceName": f"b{n}"})).id
            for n in range(2)
        ]
        for instance_id in pair:
            await service.update_instance_health(instance_id, "healthy")
        active = None
        for n in range(EVENTS):
            event = await service.execute_failover("busy", "bench", active, pair[n % 2], "load")
            await service.complete_failover_event(event.id, "completed")
            active = pair[n % 2]
        return pair


@contextlib.contextmanager
def serve(database_url: str, workdir: Path) -> Iterator[str]:
    """``proxy-failover serve`` on a free port; yields its URL once ready."""
    from tests.helpers.processes import free_port

    port = free_port()
    env = {
        **os.environ,
        "PFO_DATABASE_URL": database_url,
        "PFO_JWT_SECRET": SECRET,
        "PFO_LOG_LEVEL": "warning",
        "PFO_RATE_LIMIT_PER_SECOND": "0",  # the API load is one token: capacity, not limits
        "PFO_OUTBOUND_ALLOW": "127.0.0.0/8",  # the instances are local (core.outbound)
    }
    with (workdir / "serve.log").open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "proxy_failover", "serve", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("serve did not start: " + (workdir / "serve.log").read_text())
            time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=15)


@contextlib.contextmanager
def api_load(url: str, token: str, busy: list[str], workdir: Path) -> Iterator[None]:
    """Three ``wrk`` processes saturating the API until the block ends."""
    wrk = shutil.which("wrk")
    if wrk is None:
        raise SystemExit("wrk not found: run `bash bench/setup.sh` first")
    script = workdir / "report.lua"
    script.write_text(
        'wrk.method = "PUT"\n'
        'wrk.body = \'{"healthStatus": "healthy"}\'\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
    )
    auth = ["-H", f"Authorization: Bearer {token}"]
    runs = [
        ["-c16", f"{url}/proxy/busy/failover/events?limit=1000"],
        ["-c4", f"{url}/proxy/busy/redundancy"],
        ["-c4", "-s", str(script), f"{url}/proxy/instances/{busy[0]}/health"],
    ]
    procs = [
        subprocess.Popen(
            [wrk, "-t1", "-d3600s", *auth, *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for args in runs
    ]
    try:
        time.sleep(1.0)  # let the load settle
        yield
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=10)


def _all_healthy_with_active(http: httpx.Client) -> str:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = http.get("/proxy/bench/instances").json()["data"]
        if all(i["healthStatus"] == "healthy" for i in found):
            active = [i["id"] for i in found if i["isActive"]]
            if active:
                return str(active[0])
        time.sleep(0.05)
    raise TimeoutError("instances never all healthy with an active one")


def kill_trials(
    http: httpx.Client, notes: Notes, instances: dict[str, Any], args: argparse.Namespace
) -> list[float]:
    samples: list[float] = []
    for _ in range(args.trials):
        active = _all_healthy_with_active(http)
        time.sleep(args.interval * (2 + random.random()))  # kill at a random check phase
        notes.mark()
        killed = time.time()
        instances[active].kill()
        switched = notes.first("failover.completed")
        samples.append((switched - killed) * 1000)
        instances[active].start()
    return samples


def reported_trials(
    http: httpx.Client, notes: Notes, count: int
) -> tuple[list[float], list[float], list[float]]:
    """Report → switch (database times; one transaction since the report fails over itself),
    the switch event's ``durationMs``, and the report's HTTP round trip under the load."""
    switch: list[float] = []
    engine: list[float] = []
    round_trip: list[float] = []
    for _ in range(count):
        active = _all_healthy_with_active(http)
        notes.mark()
        sent = time.perf_counter()
        response = http.put(f"/proxy/instances/{active}/health", json={"healthStatus": "unhealthy"})
        round_trip.append((time.perf_counter() - sent) * 1000)
        response.raise_for_status()
        reported = notes.first("instance.unhealthy")
        switched = notes.first("failover.completed")
        switch.append((switched - reported) * 1000)
        engine.append(notes.last_switch_duration())
        http.put(f"/proxy/instances/{active}/health", json={"healthStatus": "healthy"})
    return switch, engine, round_trip


def run(
    args: argparse.Namespace, instances: list[Any], run_haproxy: Callable[..., list[float]]
) -> dict[str, list[float]]:
    """The whole --api-load run; returns each scenario's samples (ms)."""
    from proxy_failover.entrypoints.api.auth import mint_token

    token = mint_token(SECRET, "bench")
    results: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="pfo-bench-load-") as tmp:
        workdir = Path(tmp)
        db = workdir / "pfo.db"
        url = f"sqlite+aiosqlite:///{db}"
        busy = asyncio.run(_busy_proxy(url))
        with (
            serve(url, workdir) as base,
            httpx.Client(
                base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=60
            ) as http,
        ):
            config = {
                "failoverStrategy": "priority",
                "healthCheckIntervalSeconds": args.interval,
                "healthCheckTimeoutSeconds": args.timeout,
                "unhealthyThreshold": args.fall,
                "healthyThreshold": args.rise,
            }
            http.post(
                "/proxy/failover/config", json={"proxyId": "bench", "config": config}
            ).raise_for_status()
            by_id: dict[str, Any] = {}
            for n, inst in enumerate(instances):
                body = {
                    "instanceName": "abc"[n],
                    "endpoint": f"127.0.0.1:{inst.port}",
                    "priority": n,
                }
                answer = http.post(
                    "/proxy/instances", json={"proxyId": "bench", "instanceData": body}
                )
                answer.raise_for_status()
                by_id[answer.json()["data"]["id"]] = inst
            notes = Notes(db)
            results["quiet"] = kill_trials(http, notes, by_id, args)
            with api_load(base, token, busy, workdir):
                results["haproxy_loaded"] = run_haproxy(args, instances, workdir)
                results["loaded"] = kill_trials(http, notes, by_id, args)
                switch, engine, round_trip = reported_trials(http, notes, args.reported)
                results["reported_loaded"] = switch
                results["reported_engine_loaded"] = engine
                results["report_round_trip_loaded"] = round_trip
    return results
