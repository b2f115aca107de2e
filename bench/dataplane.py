"""Traffic through the data planes, side by side in one run, same relays, same load.

(a) HAProxy failing over by itself: ``check inter 200 fall 2 rise 2``, edge-b and edge-c as
    ``backup``, ``option redispatch``; (b) HAProxy driven by ``proxy-failover agent haproxy``;
(c) ``proxy-failover forward``; (d) Traefik (TCP router) polling ``GET /providers/traefik`` every
``--traefik-poll``; (e) nginx (``stream``) with ``proxy-failover agent nginx`` rendering its
upstream and reloading it (``_polled_planes.py``); (f) Envoy polling the REST-JSON EDS
``/v3/discovery:endpoints`` every ``--envoy-refresh`` s and (g) Envoy reading the EDS file that
``proxy-failover agent envoy`` renames into place (one Envoy, HTTP listeners retrying a failed
upstream on another priority: ``_envoy_plane.py``). (b)-(g) follow one real ``serve`` (SQLite,
probes every 0.2 s, down after 2 failures: the same detection budget as (a)). The relays are
``examples/relay.py`` processes. Load: open loop, ``--rate`` requests/s, each on a new TCP
connection (``GET /``, answered with the relay's name), plus ``--streams`` long-lived streams.

Scenarios, each plane in turn:
- kill -9 of the active relay: client-visible errors, worst and p99 request latency;
- planned switchover (b, c): errors, follow time = last request *started* on the old relay after
  the commit (the event's ``createdAt``) minus the commit; open streams kept (drain);
- unhealthy report on the live active relay (b, c): the engine fails over; streams are cut and
  reconnect: first byte from the new relay after the commit (the automatic failover's
  ``completedAt``; per stream: p50, max);
- both also give when the failover event reached a stream client of the benchmark
  (``_event_arrivals.py``: the control plane's part) and the data plane's part after it: the
  follow time, the old connection's close and the first byte, counted from that arrival;
- overhead (direct, HAProxy TCP mode, forwarder): closed-loop new-connection requests/s and
  p50/p99 latency with 16 workers, and bulk download MB/s.

Goals (issue 11): planned switchover 0 errors and follow time ≤ 5 ms; kill -9: (b) and (c) no
more errors than (a) and worst latency ≤ (a)'s; streams: drain keeps them, cut moves them (first
byte from the new relay ≤ 10 ms after the commit). Issue 14: 0 errors on planned switchovers;
follow ≤ 5 ms for pushed/file state (nginx, Envoy file), ≤ poll interval + 50 ms for polled
(Traefik, Envoy REST). Kill -9 also gives a follow time for (b)-(g): the last request started
after the failover's commit that still went to the killed relay (an error) minus the commit.

Run: ``bash bench/setup.sh && .venv/bin/python bench/dataplane.py`` (``--planes`` picks some,
``--record`` names the JSON); writes ``bench/results/dataplane.json`` (``bench/render.py``
renders it into docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

sys.path.insert(0, str(ROOT / "bench"))

from _envoy_plane import envoy_command  # noqa: E402
from _event_arrivals import EventApplyMeter, EventArrivals  # noqa: E402
from _polled_planes import nginx_files, traefik_command  # noqa: E402
from _report import Table, save  # noqa: E402

from proxy_failover.entrypoints.api.auth import mint_token  # noqa: E402

SECRET = "bench-dataplane-secret-0123456789-abcdefghij"
PROXY = "bench"
NAMES = ("edge-a", "edge-b", "edge-c")
REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def pct(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round((len(ordered) - 1) * q))]


def haproxy_binary() -> str:
    for path in ("/usr/sbin/haproxy", "/usr/bin/haproxy"):
        if os.access(path, os.X_OK):
            return path
    raise SystemExit("haproxy not found: run bash bench/setup.sh")


# --- processes -----------------------------------------------------------------------------------


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


def haproxy_config(
    directory: Path, name: str, port: int, servers: str, socket_path: str
) -> list[str]:
    config = directory / f"{name}.cfg"
    config.write_text(
        f"""global
    stats socket {socket_path} mode 600 level admin
    maxconn 4000
defaults
    mode tcp
    timeout connect 1s
    timeout client 30s
    timeout server 30s
    option redispatch
    retries 2
frontend front
    bind 127.0.0.1:{port}
    default_backend relays
backend relays
    balance roundrobin
{servers}"""
    )
    return [haproxy_binary(), "-W", "-db", "-f", str(config)]


# --- load ----------------------------------------------------------------------------------------


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


# --- the control plane ---------------------------------------------------------------------------


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


async def wait_answered_by(port: int, name: str, within: float = 20) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if (await one_request(port, 1.0)).name == name:
            return
        await asyncio.sleep(0.05)
    raise RuntimeError(f"port {port} never answered by {name}")


# --- scenarios -----------------------------------------------------------------------------------


def summarise(results: list[Result]) -> dict[str, Any]:
    latencies = [(r.ended - r.started) * 1000 for r in results]
    return {
        "requests": len(results),
        "errors": sum(1 for r in results if r.name is None),
        "p99_ms": round(pct(latencies, 0.99), 1),
        "worst_ms": round(max(latencies), 1),
    }


async def kill_active(
    port: int, relays: dict[str, Relay], rate: float, cp: ControlPlane | None = None
) -> dict[str, Any]:
    load = asyncio.create_task(open_loop(port, rate, 4.0))
    await asyncio.sleep(1.0)
    killed_at = time.time()
    relays["edge-a"].kill()
    results = await load
    summary = summarise(results)
    summary["follow_ms"] = None
    if cp is not None:  # planes that follow the control plane: how long after its commit
        commit = await cp.last_failover_at()
        late = [r.started for r in results if r.started > commit and r.name in (None, "edge-a")]
        summary["follow_ms"] = round((max(late) - commit) * 1000, 1) if late else 0.0
    after = [r for r in results if r.started >= killed_at and r.name not in (None, "edge-a")]
    summary["first_on_new_ms"] = (
        round((min(r.ended for r in after) - killed_at) * 1000, 1) if after else None
    )
    relays["edge-a"].start()
    return summary


def delivery(
    arrivals: EventArrivals | None, cp_commit: tuple[float, str]
) -> tuple[float | None, float | None]:
    """When the event reached a stream client (None without one) and that minus the commit, ms."""
    commit, event_id = cp_commit
    arrived = arrivals.arrival(event_id) if arrivals is not None else None
    return arrived, (round((arrived - commit) * 1000, 1) if arrived is not None else None)


async def planned_switchover(
    port: int, cp: ControlPlane, rate: float, streams: int, arrivals: EventArrivals | None = None
) -> dict[str, Any]:
    open_streams = [Stream(port, reconnect=False) for _ in range(streams)]
    for stream in open_streams:
        stream.start()
    await asyncio.sleep(0.5)
    load = asyncio.create_task(open_loop(port, rate, 3.0))
    await asyncio.sleep(1.0)
    commit = await cp.switch("edge-a", "edge-b")
    results = await load
    late = [r.started for r in results if r.name == "edge-a" and r.started > commit]
    kept = sum(1 for s in open_streams if s.still_from("edge-a", commit + 1.0))
    for stream in open_streams:
        await stream.stop()
    summary = summarise(results)
    summary["follow_ms"] = round((max(late) - commit) * 1000, 1) if late else 0.0
    summary["streams_kept_on_old"] = f"{kept}/{streams}"
    arrived, summary["event_ms"] = delivery(arrivals, await cp.last_failover("switchover"))
    # The data plane's own part: the last request it sent to the old relay after the event
    # reached the stream (0 when none did).
    summary["follow_after_event_ms"] = (
        round(max([0.0, *((t - arrived) * 1000 for t in late)]), 1) if arrived else None
    )
    return summary


async def unhealthy_cut(
    port: int, cp: ControlPlane, rate: float, streams: int, arrivals: EventArrivals | None = None
) -> dict[str, Any]:
    open_streams = [Stream(port, reconnect=True) for _ in range(streams)]
    for stream in open_streams:
        stream.start()
    await asyncio.sleep(0.5)
    load = asyncio.create_task(open_loop(port, rate, 3.0))
    await asyncio.sleep(1.0)
    await cp.call(
        "PUT", f"/proxy/instances/{cp.ids['edge-a']}/health", json={"healthStatus": "unhealthy"}
    )
    results = await load
    committed = await cp.last_failover("failover")
    commit = committed[0]
    firsts = [s.first_from("edge-b", commit) for s in open_streams]
    gaps = [(t - commit) * 1000 for t in firsts if t is not None]
    for stream in open_streams:
        await stream.stop()
    summary = summarise(results)
    summary["streams_moved"] = f"{len(gaps)}/{streams}"
    summary["stream_first_byte_p50_ms"] = round(statistics.median(gaps), 1) if gaps else None
    summary["stream_first_byte_max_ms"] = round(max(gaps), 1) if gaps else None
    arrived, summary["event_ms"] = delivery(arrivals, committed)
    after = [(t - arrived) * 1000 for t in firsts if t is not None and arrived is not None]
    summary["first_byte_after_event_p50_ms"] = round(statistics.median(after), 1) if after else None
    # The data plane's own part of it: the old connection closed (the rest is the client's
    # reconnect and the relay's first line).
    closed = [next((t for t in s.closes if t >= commit), None) for s in open_streams]
    closes = [(t - arrived) * 1000 for t in closed if t is not None and arrived is not None]
    summary["closed_after_event_p50_ms"] = round(statistics.median(closes), 1) if closes else None
    return summary


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


#: (b)'s agent: HAProxy marks a server down at its first refused connect (the agent's default).
OBSERVE = "observe layer4 error-limit 1 on-error mark-down"

PLANES = {
    "a_haproxy_alone": "(a) HAProxy alone",
    "b_haproxy_agent": "(b) HAProxy + agent",
    "c_forwarder": "(c) forwarder",
    "d_traefik": "(d) Traefik, HTTP provider",
    "e_nginx": "(e) nginx + agent",
    "f_envoy_rest": "(f) Envoy, REST EDS",
    "g_envoy_file": "(g) Envoy, file EDS + agent",
}


def record(report: dict[str, Any], name: str = "dataplane") -> None:
    """The run as ``bench/results/<name>.json`` (tables of plain numbers, a headline)."""
    rate, streams = report["rate"], report["streams"]
    tables = []
    if report["kill"]:
        tables.append(
            Table(
                title=f"kill -9 of the active relay; {rate:g} new connections/s for 4 s",
                columns=[
                    "data plane",
                    "requests",
                    "errors",
                    "p99 ms",
                    "worst ms",
                    "first on new ms",
                    "follow ms after commit",
                ],
                rows=[
                    [
                        PLANES[k],
                        v["requests"],
                        v["errors"],
                        v["p99_ms"],
                        v["worst_ms"],
                        v["first_on_new_ms"],
                        v.get("follow_ms"),
                    ]
                    for k, v in report["kill"].items()
                ],
            )
        )
        tables.append(
            Table(
                title=f"planned switchover (drain) with {streams} open streams",
                columns=[
                    "data plane",
                    "requests",
                    "errors",
                    "follow ms",
                    "event at a stream client ms",
                    "follow ms after the event",
                    "agent: event to applied, mean ms",
                    "streams kept on old",
                ],
                rows=[
                    [
                        PLANES[k],
                        v["requests"],
                        v["errors"],
                        v["follow_ms"],
                        v.get("event_ms"),
                        v.get("follow_after_event_ms"),
                        v.get("agent_event_apply_ms"),
                        v["streams_kept_on_old"],
                    ]
                    for k, v in report["switchover"].items()
                ],
            )
        )
        tables.append(
            Table(
                title=f"active reported unhealthy (cut); {streams} streams reconnecting",
                columns=[
                    "data plane",
                    "errors",
                    "streams moved",
                    "first byte p50 ms",
                    "first byte max ms",
                    "event at a stream client ms",
                    "first byte p50 ms after the event",
                    "closed p50 ms after the event",
                    "agent: event to applied, mean ms",
                ],
                rows=[
                    [
                        PLANES[k],
                        v["errors"],
                        v["streams_moved"],
                        v["stream_first_byte_p50_ms"],
                        v["stream_first_byte_max_ms"],
                        v.get("event_ms"),
                        v.get("first_byte_after_event_p50_ms"),
                        v.get("closed_after_event_p50_ms"),
                        v.get("agent_event_apply_ms"),
                    ]
                    for k, v in report["cut"].items()
                ],
            )
        )
    overhead = report["overhead"]
    if overhead:
        tables.append(
            Table(
                title="overhead: 16 closed-loop workers, new connection per request; 32 MiB "
                "downloads",
                columns=["path", "requests/s", "p50 ms", "p99 ms", "errors", "bulk MB/s"],
                rows=[
                    [k, v["requests_per_s"], v["p50_ms"], v["p99_ms"], v["errors"], v["bulk_MBps"]]
                    for k, v in overhead.items()
                ],
            )
        )
    headline = {}
    if report["kill"]:
        kill, switchover = report["kill"], report["switchover"]
        letters = " / ".join(PLANES[k].split(" ", 1)[0] for k in kill)
        headline[f"kill -9 under {rate:g} conn/s: client errors {letters}"] = " / ".join(
            str(v["errors"]) for v in kill.values()
        )
        letters = " / ".join(PLANES[k].split(" ", 1)[0] for k in switchover)
        headline[f"planned switchover follow time {letters}"] = (
            " / ".join(f"{v['follow_ms']:.1f}" for v in switchover.values())
            + " ms; errors "
            + " / ".join(str(v["errors"]) for v in switchover.values())
        )
    if overhead:
        forwarder, haproxy = overhead["forwarder"], overhead["haproxy_tcp"]
        headline["forwarder vs HAProxy TCP: requests/s, p99"] = (
            f"{forwarder['requests_per_s']:,} vs {haproxy['requests_per_s']:,}, "
            f"{forwarder['p99_ms']:.1f} vs {haproxy['p99_ms']:.1f} ms"
        )
    save(
        name,
        title="Data planes: " + ", ".join(PLANES[k].split(" ", 1)[1] for k in report["planes"]),
        tables=tables,
        headline=headline,
    )


# --- main ----------------------------------------------------------------------------------------


async def main(
    rate: float,
    streams: int,
    only_overhead: bool,
    wanted: Sequence[str] = tuple(PLANES),
    record_name: str = "dataplane",
    traefik_poll: str = "50ms",
    envoy_refresh: float = 1.0,
) -> dict[str, Any]:
    directory = Path(tempfile.mkdtemp(prefix="pfo-dataplane-"))
    relays = {name: Relay(name) for name in NAMES}
    procs: list[subprocess.Popen[str]] = []
    try:
        for relay in relays.values():
            relay.start()
        port_cp = free_port()
        procs.append(
            start(
                [sys.executable, "-m", "proxy_failover", "serve", "--port", str(port_cp)],
                directory / "serve.log",
                {
                    "PFO_DATABASE_URL": f"sqlite+aiosqlite:///{directory}/pfo.db",
                    "PFO_JWT_SECRET": SECRET,
                    # the relays listen on loopback, refused to non-admins by default
                    "PFO_OUTBOUND_ALLOW": "127.0.0.0/8",
                },
            )
        )
        cp = ControlPlane(f"http://127.0.0.1:{port_cp}")
        for _ in range(300):
            try:
                if (await cp.http.get("/readyz")).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
        await cp.setup(list(relays.values()))
        await cp.settle()

        planes = {plane: free_port() for plane in PLANES if plane in wanted}
        token = mint_token(SECRET, "bench")
        agent = ["--url", cp.url, "--token", token, "--log-level", "warning"]
        pfo = (sys.executable, "-m", "proxy_failover")
        map_option = ("--map", f"{PROXY}=relays")
        checks = "check inter 200 fall 2 rise 2"  # (a)'s own; (b)'s agent adds the same
        if "a_haproxy_alone" in planes:
            servers_a = "".join(
                f"    server {name} 127.0.0.1:{relay.port} {checks}"
                + (" backup" if name != "edge-a" else "")
                + "\n"
                for name, relay in relays.items()
            )
            socket_a = str(directory / "a.sock")
            config_a = haproxy_config(
                directory, "a", planes["a_haproxy_alone"], servers_a, socket_a
            )
            procs.append(start(config_a, directory / "haproxy-a.log"))
        agent_metrics = {plane: free_port() for plane in ("b_haproxy_agent", "c_forwarder")}
        meter = EventApplyMeter(
            {
                p: f"http://127.0.0.1:{port}/metrics"
                for p, port in agent_metrics.items()
                if p in planes
            }
        )
        if "b_haproxy_agent" in planes:
            socket_b = str(directory / "b.sock")
            config_b = haproxy_config(directory, "b", planes["b_haproxy_agent"], "", socket_b)
            procs.append(start(config_b, directory / "haproxy-b.log"))
            await asyncio.sleep(0.5)
            procs.append(
                start(
                    [
                        *(*pfo, "agent", "haproxy", *agent, "--socket", socket_b, *map_option),
                        *("--server-options", f"{checks} {OBSERVE}"),
                        *("--metrics-port", str(agent_metrics["b_haproxy_agent"])),
                    ],
                    directory / "agent.log",
                )
            )
        if "c_forwarder" in planes:
            listen = f"127.0.0.1:{planes['c_forwarder']}"
            procs.append(
                start(
                    [
                        *(*pfo, "forward", *agent, "--proxy", PROXY, "--listen", listen),
                        *("--metrics-port", str(agent_metrics["c_forwarder"])),
                    ],
                    directory / "forwarder.log",
                )
            )
        if "d_traefik" in planes:
            endpoint = f"{cp.url}/providers/traefik?proxy={PROXY}"
            command = traefik_command(
                directory, planes["d_traefik"], endpoint, token, PROXY, traefik_poll
            )
            procs.append(start(command, directory / "traefik.log"))
        if "e_nginx" in planes:
            nginx, upstreams, reload = nginx_files(directory, planes["e_nginx"])
            nginx_options = ("--output", str(upstreams), "--reload", reload)
            procs.append(
                start(
                    [*pfo, "agent", "nginx", *agent, *map_option, *nginx_options],
                    directory / "agent-nginx.log",
                )
            )
            for _ in range(100):
                if upstreams.exists():
                    break
                await asyncio.sleep(0.1)
            procs.append(start(nginx, directory / "nginx.log"))
        envoy_ports = {p: port for p, port in planes.items() if p.startswith(("f_", "g_"))}
        if "g_envoy_file" in envoy_ports:  # Envoy reads the file at start: the agent writes it
            eds = directory / "eds"
            eds.mkdir()
            envoy_agent = (*agent, "--dir", str(eds), "--proxy", PROXY)
            procs.append(
                start([*pfo, "agent", "envoy", *envoy_agent], directory / "agent-envoy.log")
            )
            for _ in range(100):
                if (eds / f"{PROXY}.json").exists():
                    break
                await asyncio.sleep(0.1)
        if envoy_ports:
            envoy = envoy_command(
                directory,
                envoy_ports,
                free_port(),
                ("127.0.0.1", port_cp),
                token,
                PROXY,
                envoy_refresh,
            )
            procs.append(start(envoy, directory / "envoy.log"))
        for port in planes.values():
            await wait_answered_by(port, "edge-a")

        report: dict[str, Any] = {"rate": rate, "streams": streams, "kill": {}, "switchover": {}}
        report["cut"] = {}
        report["planes"] = list(planes)
        followers = {plane: port for plane, port in planes.items() if plane != "a_haproxy_alone"}
        arrivals = EventArrivals(cp.url, token, PROXY)
        await arrivals.start()
        if only_overhead:
            planes, followers = {}, {}
        for plane, port in planes.items():
            await cp.settle()
            await wait_answered_by(port, "edge-a")
            report["kill"][plane] = await kill_active(
                port, relays, rate, cp if plane in followers else None
            )
            print(plane, "kill", report["kill"][plane], flush=True)
        for plane, port in followers.items():
            await cp.settle()
            await wait_answered_by(port, "edge-a")
            await meter.start(plane)
            report["switchover"][plane] = await planned_switchover(
                port, cp, rate, streams, arrivals
            )
            report["switchover"][plane]["agent_event_apply_ms"] = await meter.mean_ms(plane)
            print(plane, "switchover", report["switchover"][plane], flush=True)
            await cp.settle()
            await wait_answered_by(port, "edge-a")
            await meter.start(plane)
            report["cut"][plane] = await unhealthy_cut(port, cp, rate, streams, arrivals)
            report["cut"][plane]["agent_event_apply_ms"] = await meter.mean_ms(plane)
            print(plane, "cut", report["cut"][plane], flush=True)
            await cp.call(
                "PUT",
                f"/proxy/instances/{cp.ids['edge-a']}/health",
                json={"healthStatus": "healthy"},
            )
        await cp.settle()
        report["overhead"] = {}
        if "b_haproxy_agent" in planes and "c_forwarder" in planes:
            port_b, port_c = planes["b_haproxy_agent"], planes["c_forwarder"]
            for port in (port_b, port_c):
                await wait_answered_by(port, "edge-a")
            direct = relays["edge-a"].port
            report["overhead"] = {
                "direct": {**await closed_loop(direct), "bulk_MBps": await bulk(direct)},
                "haproxy_tcp": {**await closed_loop(port_b), "bulk_MBps": await bulk(port_b)},
                "forwarder": {**await closed_loop(port_c), "bulk_MBps": await bulk(port_c)},
            }
            print("overhead", report["overhead"], flush=True)
        await arrivals.stop()
        await cp.http.aclose()
        record(report, record_name)
        return report
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
        for relay in relays.values():
            relay.kill()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=200.0, help="new connections per second")
    parser.add_argument("--streams", type=int, default=20)
    parser.add_argument("--only-overhead", action="store_true", help="skip the failover scenarios")
    parser.add_argument(
        "--planes",
        default=",".join(PLANES),
        help="comma-separated planes to run (default: all): " + ", ".join(PLANES),
    )
    parser.add_argument("--record", default="dataplane", help="name of the JSON record")
    parser.add_argument("--traefik-poll", default="50ms", help="Traefik's provider pollInterval")
    parser.add_argument("--envoy-refresh", type=float, default=1.0, help="Envoy's REST EDS poll, s")
    arguments = parser.parse_args()
    chosen = [p.strip() for p in arguments.planes.split(",") if p.strip()]
    unknown = sorted(set(chosen) - set(PLANES))
    if unknown:
        parser.error(f"unknown planes: {', '.join(unknown)}")
    asyncio.run(
        main(
            arguments.rate,
            arguments.streams,
            arguments.only_overhead,
            chosen,
            arguments.record,
            arguments.traefik_poll,
            arguments.envoy_refresh,
        )
    )
