"""Commit → stream client: how soon a planned switchover reaches a data plane's event stream.

Data planes follow a switchover when its `failover.started` event reaches them on
`GET /proxy/:id/stream`, so issue 11's goal "follow time ≤ 5 ms after the commit" is bound by this
path. A real `proxy-failover serve` (SQLite, or PostgreSQL with `--databases postgres`), one proxy
with two healthy instances (no endpoint: nothing is probed), one stream client on a raw socket in
its own thread, and `--switchovers` planned switchovers, one at a time: `POST
/proxy/failover/execute` (keep-alive connection), wait for its event on the stream, `PUT
/proxy/failover/events/:id/complete`, wait for that one too; then as many cuts: the active
instance reported unhealthy (`PUT /proxy/instances/:id/health`, whose own transaction fails
over), its `failover.completed` awaited on the stream, the instance reported healthy again.
Figures, p50 / p99 in ms: the execute's HTTP round trip; `createdAt` (stamped once the switch is
accepted under the proxy's lock, docs/api.md "Timestamps of failover events"; milliseconds,
truncated, so this reads up to 1 ms long) → the event at the stream client; the execute's answer →
the event at the stream client (negative: the stream had it first); the execute sent → stream
(the client's clock only); the complete's round trip and its `completedAt` → stream; the server's
CPU time per switchover (both threads; what the machine's load disturbs least); and for the cut,
the report's round trip, the failover's `completedAt` → stream and the report sent → stream.
With the engine on (as `serve` runs) and off
(`PFO_ENGINE_ENABLED=false`: what the engine thread's reaction to each commit costs the stream).
`--compare-src DIR` runs the same against another tree's `src/` (e.g. `git archive` of an older
commit) for a before/after.

Goal (issues 11 and 14's follow time and cut, the control plane's share): execute over HTTP
≤ 2.5 ms p50, `createdAt` → stream client and the cut's `completedAt` → stream client ≤ 3 ms p50,
on a quiet machine.

    .venv/bin/python bench/commit_to_stream.py [--switchovers 200] [--databases sqlite,postgres]
        [--engines on,off] [--compare-src DIR [--compare-label LABEL]] [--record]
    # a before/after: git archive COMMIT src | tar -x -C /tmp/before, then
    # --compare-src /tmp/before/src --compare-label "before (COMMIT)"
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import secrets
import socket
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from _report import Cell, Table, save
from api import DEFAULT_POSTGRES, Server, _postgres, cpu_seconds, mint, with_database

PROXY = "switch"
#: The figures of a row, in column order (the server's CPU goes after ``completed``).
FIGURES = (
    "execute",
    "created",
    "answer",
    "sent",
    "complete",
    "completed",
    "report",
    "cut",
    "cut_sent",
)
WARMUP = 10


class StreamClient:
    """``GET /proxy/PROXY/stream`` on a blocking socket in a thread: the wall-clock time each
    event (by its ``data.data.eventId`` and type) arrived, read as soon as its bytes do."""

    def __init__(self, url: str, token: str) -> None:
        host, port = url.removeprefix("http://").split(":")
        self._sock = socket.create_connection((host, int(port)), timeout=30)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock.sendall(
            (
                f"GET /proxy/{PROXY}/stream HTTP/1.1\r\nHost: {host}\r\n"
                f"Authorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n"
            ).encode()
        )
        self.arrivals: dict[tuple[str, str], float] = {}
        #: ``failover.completed`` events in arrival order: (event id, arrival, occurredAt).
        self.completions: list[tuple[str, float, float]] = []
        self._cond = threading.Condition()
        self._opened = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        if not self._opened.wait(30):
            raise RuntimeError("the stream did not open")

    def _read(self) -> None:
        buffer = b""
        with self._sock:
            while True:
                try:
                    chunk = self._sock.recv(65536)
                except OSError:
                    return
                now = time.time()
                if not chunk:
                    return
                buffer += chunk
                if not self._opened.is_set() and b": connected" in buffer:
                    self._opened.set()
                while b"\n\n" in buffer:
                    block, buffer = buffer.split(b"\n\n", 1)
                    self._event(block, now)

    def _event(self, block: bytes, now: float) -> None:
        kind = data = None
        for line in block.decode(errors="replace").splitlines():
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                data = line[6:]
        if kind is None or data is None:
            return
        payload = json.loads(data)
        details = payload.get("data") or {}
        with self._cond:
            key = (kind, str(details.get("eventId")))
            if kind == "failover.completed" and key not in self.arrivals:
                self.completions.append((key[1], now, seconds(payload["occurredAt"])))
            self.arrivals.setdefault(key, now)
            self._cond.notify_all()

    def wait(self, kind: str, event_id: str, timeout: float = 10.0) -> float:
        deadline = time.monotonic() + timeout
        with self._cond:
            while (kind, event_id) not in self.arrivals:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{kind} {event_id} never reached the stream")
                self._cond.wait(left)
            return self.arrivals[(kind, event_id)]

    def completion(self, index: int, timeout: float = 10.0) -> tuple[str, float, float]:
        """The ``index``-th ``failover.completed`` to arrive (0-based), waiting for it."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.completions) <= index:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"failover.completed #{index} never reached the stream")
                self._cond.wait(left)
            return self.completions[index]

    def close(self) -> None:
        self._sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(5)


class Api:
    """One keep-alive HTTP/1.1 connection with the admin token (http.client: the least client
    overhead in the round trip)."""

    def __init__(self, url: str, token: str) -> None:
        host, port = url.removeprefix("http://").split(":")
        self._conn = http.client.HTTPConnection(host, int(port), timeout=30)
        self._headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def call(self, method: str, path: str, body: Any = None) -> tuple[dict[str, Any], float, float]:
        """The answer's ``data``, the round trip (s, perf_counter) and when it ended (time())."""
        payload = None if body is None else json.dumps(body)
        started = time.perf_counter()
        self._conn.request(method, path, payload, self._headers)
        response = self._conn.getresponse()
        raw = response.read()
        answered, elapsed = time.time(), time.perf_counter() - started
        if response.status >= 300:
            raise RuntimeError(f"{method} {path}: {response.status} {raw[:300]!r}")
        return json.loads(raw)["data"], elapsed, answered

    def close(self) -> None:
        self._conn.close()


def seconds(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def prepare(api: Api) -> list[str]:
    api.call("POST", "/proxy/failover/config", {"proxyId": PROXY})
    ids = []
    for name in ("edge-a", "edge-b"):
        data, _, _ = api.call(
            "POST", "/proxy/instances", {"proxyId": PROXY, "instanceData": {"instanceName": name}}
        )
        ids.append(data["id"])
        api.call("PUT", f"/proxy/instances/{data['id']}/health", {"healthStatus": "healthy"})
    return ids


def active(api: Api) -> str | None:
    data, _, _ = api.call("GET", f"/proxy/{PROXY}/redundancy")
    found: str | None = data.get("activeInstanceId")
    return found


def settled(api: Api, engine: bool) -> None:
    """With the engine on, it activates an instance of its own once they are healthy: wait for
    that, so no switchover races it."""
    deadline = time.monotonic() + 30
    while engine and active(api) is None:
        if time.monotonic() > deadline:
            raise RuntimeError("the engine activated no instance")
        time.sleep(0.05)


def switchovers(url: str, token: str, count: int, pid: int, engine: bool) -> dict[str, list[float]]:
    """``count`` planned switchovers after ``WARMUP`` unmeasured ones; milliseconds by figure
    (``cpu``: the server's CPU time per switchover, both threads: less sensitive to the
    machine's load than the latencies)."""
    api = Api(url, token)
    ids = prepare(api)
    settled(api, engine)
    stream = StreamClient(url, token)
    figures: dict[str, list[float]] = {
        key: [] for key in ("execute", "created", "answer", "sent", "complete", "completed")
    }
    cpu_before = 0.0
    try:
        for at in range(WARMUP + count):
            source = active(api)
            target = ids[1] if source == ids[0] else ids[0]
            body = {"proxyId": PROXY, "targetInstanceId": target, "reason": "bench"}
            if source is not None:
                body["sourceInstanceId"] = source
            sent = time.time()
            event, rtt, answered = api.call("POST", "/proxy/failover/execute", body)
            arrived = stream.wait("failover.started", event["id"])
            closed, rtt_complete, _ = api.call(
                "PUT", f"/proxy/failover/events/{event['id']}/complete", {"status": "completed"}
            )
            completed = stream.wait("failover.completed", event["id"])
            if at == WARMUP - 1:
                cpu_before = cpu_seconds(pid)
            if at < WARMUP:
                continue
            figures["execute"].append(rtt * 1000)
            figures["created"].append((arrived - seconds(event["createdAt"])) * 1000)
            figures["answer"].append((arrived - answered) * 1000)
            figures["sent"].append((arrived - sent) * 1000)
            figures["complete"].append(rtt_complete * 1000)
            figures["completed"].append((completed - seconds(closed["completedAt"])) * 1000)
            time.sleep(0.02)  # quiet between switchovers: each is measured alone
        figures["cpu"] = [(cpu_seconds(pid) - cpu_before) * 1000 / count]
        figures.update(cuts(api, stream, ids, count))
    finally:
        stream.close()
        api.close()
    return figures


def cuts(api: Api, stream: StreamClient, ids: list[str], count: int) -> dict[str, list[float]]:
    """``count`` cuts after ``WARMUP`` unmeasured ones: the active instance reported unhealthy
    (``PUT /proxy/instances/:id/health``; the report's own transaction fails over), its
    ``failover.completed`` awaited on the stream, then the instance reported healthy again (no
    failback: it stays a backup). Figures: the report's round trip, the event's ``completedAt``
    (its ``occurredAt``) → stream client, and the report sent → stream client."""
    figures: dict[str, list[float]] = {"report": [], "cut": [], "cut_sent": []}
    for at in range(WARMUP + count):
        source = active(api) or ids[0]
        seen = len(stream.completions)
        sent = time.time()
        _, rtt, _ = api.call(
            "PUT", f"/proxy/instances/{source}/health", {"healthStatus": "unhealthy"}
        )
        _, arrived, completed_at = stream.completion(seen)
        api.call("PUT", f"/proxy/instances/{source}/health", {"healthStatus": "healthy"})
        if at >= WARMUP:
            figures["report"].append(rtt * 1000)
            figures["cut"].append((arrived - completed_at) * 1000)
            figures["cut_sent"].append((arrived - sent) * 1000)
        time.sleep(0.02)
    return figures


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run(
    label: str, database_url: str, engine: bool, src: str | None, count: int, workdir: Path
) -> list[Cell]:
    secret = secrets.token_urlsafe(48)
    env = {"PFO_ENGINE_ENABLED": "true" if engine else "false", "PFO_LOG_LEVEL": "warning"}
    if src is not None:
        env["PYTHONPATH"] = src + os.pathsep + os.environ.get("PYTHONPATH", "")
    log = workdir / f"serve-{uuid.uuid4().hex[:6]}.log"
    server = Server(database_url, secret, log, env)
    try:
        token = mint(secret, "bench-admin", admin=True)
        figures = switchovers(server.url, token, count, server.proc.pid, engine)
    finally:
        server.stop()
    row: list[Cell] = [label, "on" if engine else "off"]
    for key in FIGURES:
        values = figures[key]
        row += [round(statistics.median(values), 2), round(percentile(values, 0.99), 2)]
    row.insert(14, round(figures["cpu"][0], 2))
    print(
        f"{label:<28} engine {row[1]:<3}  execute {row[2]:6.2f} / {row[3]:6.2f} ms   "
        f"createdAt→stream {row[4]:6.2f} / {row[5]:6.2f}   answer→stream {row[6]:6.2f} / "
        f"{row[7]:6.2f}   sent→stream {row[8]:6.2f} / {row[9]:6.2f}   complete {row[10]:6.2f} / "
        f"{row[11]:6.2f}   completedAt→stream {row[12]:6.2f} / {row[13]:6.2f}   "
        f"server CPU {row[14]:5.2f} ms a switchover   cut: report {row[15]:6.2f} / "
        f"{row[16]:6.2f}   completedAt→stream {row[17]:6.2f} / {row[18]:6.2f}   sent→stream "
        f"{row[19]:6.2f} / {row[20]:6.2f}",
        flush=True,
    )
    return row


COLUMNS = [
    "tree",
    "engine",
    "execute p50",
    "p99",
    "createdAt → stream p50",
    "p99",
    "answer → stream p50",
    "p99",
    "sent → stream p50",
    "p99",
    "complete p50",
    "p99",
    "completedAt → stream p50",
    "p99",
    "server CPU a switchover",
    "cut: report p50",
    "p99",
    "cut: completedAt → stream p50",
    "p99",
    "cut: sent → stream p50",
    "p99",
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--switchovers", type=int, default=200)
    parser.add_argument("--databases", default="sqlite")
    parser.add_argument("--engines", default="on,off")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES)
    parser.add_argument("--compare-src", help="another tree's src/ to measure as 'before'")
    parser.add_argument("--compare-label", default="before")
    parser.add_argument("--label", default="this tree")
    parser.add_argument("--record", action="store_true", help="write bench/results/*.json")
    args = parser.parse_args()
    engines = [flag == "on" for flag in args.engines.split(",")]
    trees = [(args.label, None)]
    if args.compare_src:
        trees.insert(0, (args.compare_label, args.compare_src))
    loads = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory(prefix="pfo-commit-stream-") as folder:
        workdir = Path(folder)
        for database in args.databases.split(","):
            rows: list[list[Cell]] = []
            for label, src in trees:
                for engine in engines:
                    if database == "sqlite":
                        url = f"sqlite+aiosqlite:///{workdir / f'{uuid.uuid4().hex[:8]}.db'}"
                        rows.append(run(label, url, engine, src, args.switchovers, workdir))
                        continue
                    name = f"pfo_bench_{os.getpid()}_{uuid.uuid4().hex[:6]}"
                    asyncio.run(_postgres(args.postgres_url, f'CREATE DATABASE "{name}"'))
                    try:
                        url = with_database(args.postgres_url, name)
                        rows.append(run(label, url, engine, src, args.switchovers, workdir))
                    finally:
                        drop = f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'
                        asyncio.run(_postgres(args.postgres_url, drop))
                    loads.append(os.getloadavg()[0])
            loads.append(os.getloadavg()[0])
            print(f"load average during the run: {min(loads):.2f}-{max(loads):.2f}")
            if args.record:
                title = {"sqlite": "SQLite", "postgres": "PostgreSQL"}[database]
                ours = next(row for row in rows if row[0] == args.label and row[1] == "on")
                headline = {
                    f"planned switchover: execute over HTTP / createdAt → stream client "
                    f"({title}, engine on)": f"{ours[2]:.2f} / {ours[4]:.2f} ms p50"
                }
                save(
                    f"commit_to_stream-{database}",
                    title="Commit → stream client (planned switchover)",
                    tables=[
                        Table(
                            f"{title}, {args.switchovers} planned switchovers (after {WARMUP} "
                            "unmeasured), milliseconds",
                            COLUMNS,
                            rows,
                            ["", ""] + [".2f"] * 19,
                        )
                    ],
                    notes=[
                        f"Load average during the run: {min(loads):.2f}-{max(loads):.2f} "
                        "(2 CPUs shared by the server, this client and, for PostgreSQL, the "
                        "database).",
                        "`createdAt` and `completedAt` have millisecond resolution (truncated): "
                        "figures measured from them read up to 1 ms long; `sent → stream` (from "
                        "the moment the client sent the execute) bounds the commit → stream "
                        "time from above with the client's clock alone.",
                    ],
                    headline=headline if database == "sqlite" else None,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
