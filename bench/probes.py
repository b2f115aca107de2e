"""Probe scheduling at scale: 1,000 / 5,000 / 10,000 instances at a 1 s interval.

Three processes: a local asyncio HTTP server answering ``/.../health`` on many ports (the
instances), and, per size, the engine (real ``Engine`` + real ``Prober``, results recorded by the
real service on a fresh SQLite file, or on PostgreSQL with ``--store postgres``). The engine
process reports achieved probes/s, schedule lag (probe start minus its due time) p50/p99 and its
CPU use from /proc; each store's figures are written to ``bench/results/probes-<store>.json``.
Run: ``.venv/bin/python bench/probes.py [--sizes 1000,5000,10000] [--store sqlite,postgres]``.

Instances share ports (``--ports``, default 500): each instance is ``http://127.0.0.1:PORT/iN`` and
keeps its own keep-alive connection, so the number of client connections equals the number of
instances while the server does not need 10,000 listening sockets (RLIMIT_NOFILE is 20,000 here).

Goal: 10,000 instances at 1 s on at most one core with lag p99 < 100 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _probes_record import save_results  # noqa: E402

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"
INSTANCES_PER_PROXY = 100
#: Proxies registered at once (disjoint proxies lock disjoint rows; within the store's pool).
REGISTRATIONS_AT_ONCE = 4


def raise_fd_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def cpu_seconds(pid: int | str = "self", *, reaped: bool = False) -> float:
    """utime + stime of a process from /proc/PID/stat; ``reaped``: plus its exited children's
    (cutime + cstime)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    own = int(fields[11]) + int(fields[12])
    return (own + (int(fields[13]) + int(fields[14]) if reaped else 0)) / ticks


def postgres_cpu_seconds() -> float:
    """CPU of every PostgreSQL process on this machine (server and backends), from /proc,
    including the backends that exited (the postmaster's reaped children): summing only the
    live processes went down, even below zero, when backends ended during the window."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() in ("postgres", "postmaster"):
                total += cpu_seconds(entry.name, reaped=True)
        except OSError:  # gone meanwhile
            continue
    return total


def rss_mb() -> float:
    """This process's resident memory (VmRSS), MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class FirstProbes:
    """Wraps the prober to note when every instance has had its first answer (start-up time)."""

    def __init__(self, inner: Any, size: int) -> None:
        self._inner = inner
        self._size = size
        self._seen: set[str] = set()
        self.all_at: float | None = None

    def _answered(self, target: Any) -> None:
        if self.all_at is None:
            self._seen.add(target.instance_id)
            if len(self._seen) >= self._size:
                self.all_at = time.perf_counter()

    @property
    def on_connection_lost(self) -> Any:
        return self._inner.on_connection_lost

    @on_connection_lost.setter
    def on_connection_lost(self, listener: Any) -> None:
        self._inner.on_connection_lost = listener

    def prepare(self, instance: Any, config: Any) -> Any:
        return self._inner.prepare(instance, config)

    def start(self, target: Any, on_result: Any) -> bool:
        if self.all_at is not None:  # start-up is over: no closure per probe from here on
            return bool(self._inner.start(target, on_result))

        def answered(result: Any) -> None:
            self._answered(target)
            on_result(result)

        return bool(self._inner.start(target, answered))

    async def probe(self, target: Any) -> Any:
        result = await self._inner.probe(target)
        if self.all_at is None:
            self._answered(target)
        return result

    def forget(self, instance_id: str) -> None:
        self._inner.forget(instance_id)

    async def request_recovery(
        self, url: str, payload: Any, timeout_s: float, *, trusted: bool
    ) -> Any:
        return await self._inner.request_recovery(url, payload, timeout_s, trusted=trusted)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def use_loop(name: str) -> None:
    if name == "uvloop":
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


# --- the instances ------------------------------------------------------------------------------
class _HealthProtocol(asyncio.Protocol):
    """Answers every request head with 200 on a keep-alive connection."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport; they implement its interface
        self.transport = cast(asyncio.Transport, transport)
        self.pending = b""

    def data_received(self, data: bytes) -> None:
        data = self.pending + data
        count = data.count(b"\r\n\r\n")
        self.pending = data[data.rfind(b"\r\n\r\n") + 4 :] if count else data
        if count:
            self.transport.write(RESPONSE * count)


async def serve_instances(ports: int) -> None:
    loop = asyncio.get_running_loop()
    servers = [
        await loop.create_server(_HealthProtocol, "127.0.0.1", 0, backlog=4096)
        for _ in range(ports)
    ]
    print(json.dumps([s.sockets[0].getsockname()[1] for s in servers]), flush=True)
    await loop.run_in_executor(None, sys.stdin.read)  # until the parent closes our stdin


# --- the engine under test ----------------------------------------------------------------------
async def run_engine(
    size: int,
    ports: list[int],
    interval: float,
    warmup: float,
    seconds: float,
    server_pid: int,
    store: str = "sqlite",
    database_url: str | None = None,
) -> dict[str, Any]:
    from proxy_failover.adapters.probes import Prober
    from proxy_failover.bootstrap import engine_settings, open_service
    from proxy_failover.core.model import Instance
    from proxy_failover.engine import Engine
    from proxy_failover.entrypoints.heap import HeapTender

    def clock() -> datetime:
        return datetime.now(UTC)

    def endpoint(n: int) -> str:
        return f"http://127.0.0.1:{ports[n % len(ports)]}/i{n}"

    proxy_ids = [f"proxy-{p // INSTANCES_PER_PROXY}" for p in range(0, size, INSTANCES_PER_PROXY)]
    exits = contextlib.AsyncExitStack()
    commits = [0]
    service: Any
    workdir = Path(exits.enter_context(tempfile.TemporaryDirectory(prefix="pfo-bench-")))
    url = database_url or f"sqlite+aiosqlite:///{workdir / 'pfo.db'}"
    service = await exits.enter_async_context(open_service(url))
    rss_before = rss_mb()  # imports, pool and service: what the instances add comes on top
    registering = asyncio.Semaphore(REGISTRATIONS_AT_ONCE)

    async def register(p: int, proxy_id: str) -> None:
        """One proxy's configuration and instances, each through the service as the API does."""
        async with registering:
            await service.create_failover_configuration(
                proxy_id,
                "bench",
                {
                    "healthCheckIntervalSeconds": interval,
                    "healthCheckTimeoutSeconds": min(5.0, interval),
                },
            )
            for n in range(p, min(p + INSTANCES_PER_PROXY, size)):
                await service.register_proxy_instance(
                    proxy_id, "bench", {"instanceName": f"i{n}", "endpoint": endpoint(n)}
                )

    registered = time.perf_counter()
    starts = range(0, size, INSTANCES_PER_PROXY)
    await asyncio.gather(*(register(p, i) for p, i in zip(starts, proxy_ids, strict=True)))
    registration_s = time.perf_counter() - registered
    write = service.store.write

    @contextlib.asynccontextmanager
    async def counted() -> AsyncIterator[Any]:
        async with write() as unit:
            yield unit
        commits[0] += 1

    service.store.write = counted
    flushes: list[tuple[float, int]] = []  # (seconds, results) of each flush transaction
    record = service.record_probe_results

    async def timed(results: Any) -> Any:
        began = time.perf_counter()
        try:
            return await record(results)
        finally:
            flushes.append((time.perf_counter() - began, len(results)))

    service.record_probe_results = timed

    async def all_instances() -> list[Instance]:
        return [i for p in proxy_ids for i in await service.get_proxy_instances(p)]

    prober = Prober(max_concurrency=size)
    first = FirstProbes(prober, size)
    engine = Engine(service, first, engine_settings(url), clock=clock)  # as serve runs it ...
    service.on_change = engine.notify
    run_started = time.perf_counter()
    task = asyncio.create_task(engine.run())
    heap = asyncio.create_task(HeapTender().run())  # ... with serve's heap freezing
    await asyncio.sleep(warmup)
    stats = engine.stats
    started0 = stats.probes_started
    done0, failed0, inconclusive0 = stats.probes_completed, stats.probe_failures, stats.inconclusive
    commits0 = commits[0]
    flushes0 = len(flushes)
    cpu0, server0, wall0 = cpu_seconds(), cpu_seconds(server_pid), time.perf_counter()
    pg0 = postgres_cpu_seconds() if store == "postgres" else 0.0
    await asyncio.sleep(seconds)
    pg1 = postgres_cpu_seconds() if store == "postgres" else 0.0
    rss_after = rss_mb()
    done1, failed1, inconclusive1 = stats.probes_completed, stats.probe_failures, stats.inconclusive
    commits1 = commits[0]
    window_flushes = flushes[flushes0:]
    flush_seconds = [seconds for seconds, _ in window_flushes]
    cpu1, server1, wall1 = cpu_seconds(), cpu_seconds(server_pid), time.perf_counter()
    # the lags of the probes started in the window (the deque keeps only the newest ones)
    started = stats.probes_started - started0
    lags = list(stats.lags)[-started:] if started else []
    pooled = prober.pooled_connections()
    engine.stop()
    await task
    heap.cancel()
    await prober.aclose()
    final = await all_instances()
    await exits.aclose()
    errors = Counter(i.last_error for i in final if i.last_error)
    wall = wall1 - wall0
    return {
        "instances": size,
        "probes_per_s": (done1 - done0) / wall,
        "expected_per_s": size / interval,
        "failures": failed1 - failed0,
        "inconclusive": inconclusive1 - inconclusive0,
        "unhealthy_instances": sum(1 for i in final if i.health_status.value == "unhealthy"),
        "store": store,
        "commits_per_s": (commits1 - commits0) / wall,
        "flush_ms_p50": percentile(flush_seconds, 0.5) * 1000,
        "flush_ms_p99": percentile(flush_seconds, 0.99) * 1000,
        "flush_results_mean": (
            sum(n for _, n in window_flushes) / len(window_flushes) if window_flushes else 0
        ),
        "lag_p50_ms": percentile(lags, 0.5) * 1000,
        "lag_p99_ms": percentile(lags, 0.99) * 1000,
        "cpu_percent": (cpu1 - cpu0) / wall * 100,
        "server_cpu_percent": (server1 - server0) / wall * 100,
        "postgres_cpu_percent": (pg1 - pg0) / wall * 100 if store == "postgres" else None,
        "rss_mb": rss_after,
        "rss_per_1000_mb": (rss_after - rss_before) / size * 1000,
        "all_probed_once_s": None if first.all_at is None else first.all_at - run_started,
        "registration_s": registration_s,
        "load_average": os.getloadavg()[0],
        "pooled_connections": pooled,
        "errors": dict(errors.most_common(3)),
    }


def _opt(value: float | None, spec: str) -> str:
    width = int(spec.split(".")[0])
    return f"{'-':>{width}}" if value is None else format(value, spec)


# --- client comparison --------------------------------------------------------------------------
async def compare_clients(ports: list[int], count: int, rounds: int) -> dict[str, Any]:
    """CPU seconds per probe, after a warm-up round, for this project's prober and for httpx.

    Both probe the same ``count`` instances concurrently per round on keep-alive connections
    (httpx: one AsyncClient with a pool big enough for every instance).
    """
    import httpx

    from proxy_failover.adapters.probes import Prober, build_target
    from proxy_failover.core.model import FailoverConfig, Instance

    config = FailoverConfig(
        proxy_id="p", user_id="u", health_check_interval_seconds=5, health_check_timeout_seconds=5
    )
    urls = [f"http://127.0.0.1:{ports[n % len(ports)]}/i{n}" for n in range(count)]
    targets = [
        build_target(
            Instance(id=f"i{n}", proxy_id="p", user_id="u", instance_name="x", endpoint=url), config
        )
        for n, url in enumerate(urls)
    ]
    prober = Prober()
    limits = httpx.Limits(max_connections=count, max_keepalive_connections=count)
    client = httpx.AsyncClient(limits=limits, timeout=10)

    gate = asyncio.Semaphore(256)  # the same bound for both: a cold start opens every connection

    async def raw_one(target: Any) -> bool:
        async with gate:
            return (await prober.probe(target)).success

    async def raw_round() -> int:
        return sum(await asyncio.gather(*(raw_one(t) for t in targets)))

    async def httpx_one(pool: httpx.AsyncClient, url: str) -> bool:
        async with gate:
            try:
                response = await pool.get(url + "/health")
            except httpx.HTTPError:
                return False
        return response.status_code < 400

    async def httpx_round() -> int:
        return sum(await asyncio.gather(*(httpx_one(client, u) for u in urls)))

    own_clients = [httpx.AsyncClient(timeout=10) for _ in urls]  # one pool per instance

    async def httpx_own_round() -> int:
        pairs = zip(own_clients, urls, strict=True)
        return sum(await asyncio.gather(*(httpx_one(c, u) for c, u in pairs)))

    out: dict[str, Any] = {"instances": count, "rounds": rounds}
    for name, round_ in (
        ("raw", raw_round),
        ("httpx", httpx_round),
        ("httpx_own", httpx_own_round),
    ):
        await round_()  # connect everything first
        cpu0 = cpu_seconds()
        ok = sum([await round_() for _ in range(rounds)])
        out[f"{name}_us_per_probe"] = (cpu_seconds() - cpu0) / (count * rounds) * 1e6
        out[f"{name}_ok"] = ok
    await prober.aclose()
    await client.aclose()
    for own in own_clients:
        await own.aclose()
    return out


# --- orchestration ------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,5000,10000")
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument(
        "--warmup",
        type=float,
        default=30.0,
        help="seconds before measuring: the cold start (10,000 connections) and the engine's"
        " heap freeze (entrypoints.heap.SETTLE_SECONDS) are over by then",
    )
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--ports", type=int, default=500)
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    parser.add_argument("--role", choices=["main", "server", "engine", "clients"], default="main")
    parser.add_argument(
        "--store",
        default="sqlite",
        help="comma-separated: sqlite (the real service on a"
        " fresh SQLite file), postgres (the real service on --database-url, an empty database)",
    )
    parser.add_argument("--database-url", default="")
    parser.add_argument("--size", type=int, default=0)
    parser.add_argument("--port-list", default="")
    parser.add_argument("--server-pid", type=int, default=0)
    parser.add_argument(
        "--compare-clients", action="store_true", help="also time httpx against the raw prober"
    )
    args = parser.parse_args()
    raise_fd_limit()
    use_loop(args.loop)
    if args.role == "server":
        asyncio.run(serve_instances(args.ports))
        return
    if args.role == "clients":
        ports = [int(p) for p in args.port_list.split(",")]
        print(json.dumps(asyncio.run(compare_clients(ports, args.size, 3))), flush=True)
        return
    if args.role == "engine":
        ports = [int(p) for p in args.port_list.split(",")]
        result = asyncio.run(
            run_engine(
                args.size,
                ports,
                args.interval,
                args.warmup,
                args.seconds,
                args.server_pid,
                args.store,
                args.database_url or None,
            )
        )
        print(json.dumps(result), flush=True)
        return

    me = [sys.executable, str(Path(__file__).resolve()), "--loop", args.loop]
    server = subprocess.Popen(
        [*me, "--role", "server", "--ports", str(args.ports)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdout is not None
    assert server.stdin is not None
    ports = json.loads(server.stdout.readline())
    rows = []
    try:
        runs = [(st, int(sz)) for st in args.store.split(",") for sz in args.sizes.split(",")]
        for store, size in runs:
            out = subprocess.run(
                [
                    *me,
                    "--role",
                    "engine",
                    "--size",
                    str(size),
                    "--port-list",
                    ",".join(map(str, ports)),
                    "--interval",
                    str(args.interval),
                    "--warmup",
                    str(args.warmup),
                    "--seconds",
                    str(args.seconds),
                    "--server-pid",
                    str(server.pid),
                    "--store",
                    store,
                    "--database-url",
                    args.database_url,
                ],
                check=True,
                capture_output=True,
                text=True,
                cwd=ROOT,
            )
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        clients = None
        if args.compare_clients:
            out = subprocess.run(
                [
                    *me,
                    "--role",
                    "clients",
                    "--size",
                    "1000",
                    "--port-list",
                    ",".join(map(str, ports)),
                ],
                check=True,
                capture_output=True,
                text=True,
                cwd=ROOT,
            )
            clients = json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        server.stdin.close()
        server.terminate()
        server.wait(timeout=10)
    print(
        f"\nProbe scheduling, interval {args.interval:g} s, {args.loop}, "
        f"{len(ports)} server ports, measured {args.seconds:g} s after {args.warmup:g} s warm-up"
    )
    header = (
        f"{'store':>8} | {'commits/s':>9} | {'instances':>9} | {'probes/s':>9} | "
        f"{'expected':>8} | {'failed':>6} | "
        f"{'not counted':>11} | {'unhealthy':>9} | "
        f"{'lag p50 ms':>10} | {'lag p99 ms':>10} | {'engine CPU %':>12} | "
        f"{'server CPU %':>12} | {'PG CPU %':>8} | {'RSS MiB':>7} | {'MiB/1k':>6} | "
        f"{'all probed s':>12} | {'register s':>10} | {'load avg':>8}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['store']:>8} | {r['commits_per_s']:>9.0f} | "
            f"{r['instances']:>9} | {r['probes_per_s']:>9.0f} | {r['expected_per_s']:>8.0f} | "
            f"{r['failures']:>6} | {r['inconclusive']:>11} | {r['unhealthy_instances']:>9} | "
            f"{r['lag_p50_ms']:>10.1f} | {r['lag_p99_ms']:>10.1f} | "
            f"{r['cpu_percent']:>12.0f} | {r['server_cpu_percent']:>12.0f} | "
            f"{_opt(r.get('postgres_cpu_percent'), '8.0f')} | {r['rss_mb']:>7.0f} | "
            f"{r['rss_per_1000_mb']:>6.1f} | {_opt(r.get('all_probed_once_s'), '12.1f')} | "
            f"{_opt(r.get('registration_s'), '10.1f')} | "
            f"{r['load_average']:>8.2f}"
        )
        print(
            f"  flush transactions: p50 {r['flush_ms_p50']:.0f} ms, p99 {r['flush_ms_p99']:.0f}"
            f" ms, {r['flush_results_mean']:.0f} results each on average"
        )

    if clients is not None:
        print(
            f"\nHTTP client CPU per probe ({clients['instances']} keep-alive instances, "
            f"{clients['rounds']} rounds): proxy-failover prober "
            f"{clients['raw_us_per_probe']:.0f} us; httpx, one AsyncClient for all "
            f"{clients['httpx_us_per_probe']:.0f} us, one AsyncClient per instance "
            f"{clients['httpx_own_us_per_probe']:.0f} us (successful probes: "
            f"{clients['raw_ok']}, {clients['httpx_ok']}, {clients['httpx_own_ok']})"
        )
    save_results(args, len(ports), rows, clients)


if __name__ == "__main__":
    main()
