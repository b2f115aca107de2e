"""Kill -9 the active instance: time to switch, HAProxy vs proxy-failover, in one run.

Both watch the same three real HTTP instances (``tests/helpers/instance_server.py``, one process
each) with the same interval, timeout, rise and fall:

* HAProxy (Debian package, ``bench/setup.sh``): ``option httpchk GET /health``, server ``a`` plus
  backups ``b`` and ``c``; the switch time is kill → the runtime API (unix stats socket, polled
  every millisecond) shows ``a`` DOWN (``srv_op_state`` 0), the moment HAProxy moves traffic to a
  backup.
* proxy-failover: the real service on SQLite and the real engine and prober, in this process; the
  switch time is kill → the commit of the automatic failover (the service's change listener
  delivers ``failover.completed``).

Then a reported failure: ``update_instance_health(active, "unhealthy")`` → the commit of the
switch, N times. The figures are written to ``bench/results/failover.json``.

Run: ``bash bench/setup.sh && .venv/bin/python bench/failover.py [--trials 20] [--reported 200]``.

Goal: kill → switch p95 no slower than HAProxy's; reported failure → switch p99 < 50 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _report import Table, save  # noqa: E402

from proxy_failover.adapters.probes import Prober  # noqa: E402
from proxy_failover.bootstrap import open_service  # noqa: E402
from proxy_failover.core.model import HealthStatus, Notification  # noqa: E402
from proxy_failover.engine import Engine  # noqa: E402
from proxy_failover.service import ProxyFailoverService  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import failover_load  # noqa: E402

REPORT_COMMIT_MS: list[float] = []  # how long the report's own commit took (part of the total)
UNHEALTHY_AT: list[float] = []  # commits that marked an instance unhealthy (perf_counter)
DETECT_MS: list[float] = []
STATS: dict[str, int] = {}  # kill -> the killed instance's unhealthy commit


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Instance:
    """One real instance process on a fixed port, so it can be restarted in place."""

    def __init__(self, close: bool = False) -> None:
        self.port = free_port()
        self.close = close
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        args = ["--port", str(self.port), *(["--close"] if self.close else [])]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.helpers.instance_server", *args],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        if not self.proc.stdout.readline():
            raise RuntimeError("instance did not start")

    def kill(self) -> float:
        """kill -9; returns the moment the signal was sent (perf_counter)."""
        assert self.proc is not None
        sent = time.perf_counter()
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return sent

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.kill()


# --- HAProxy ------------------------------------------------------------------------------------
HAPROXY_CONFIG = """
global
    stats socket {sock} mode 600 level admin
    maxconn 1000

defaults
    mode http
    timeout connect 1s
    timeout client 5s
    timeout server 5s
    timeout check {timeout_ms}ms

frontend fe
    bind 127.0.0.1:{port}
    default_backend be

backend be
    option httpchk GET /health
    http-check expect rstatus ^[23]
    default-server {check_params}
    server a 127.0.0.1:{pa} check
    server b 127.0.0.1:{pb} check backup
    server c 127.0.0.1:{pc} check backup
"""


def haproxy_binary() -> str:
    found = shutil.which("haproxy")
    if found is None and Path("/usr/sbin/haproxy").exists():
        found = "/usr/sbin/haproxy"
    if found is None:
        raise SystemExit("haproxy not found: run `bash bench/setup.sh` first")
    return found


def server_states(sock_path: str) -> dict[str, int]:
    """``show servers state be`` (runtime API): server name -> srv_op_state (2 up, 0 down)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(sock_path)
        sock.sendall(b"show servers state be\n")
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    states: dict[str, int] = {}
    for line in b"".join(chunks).decode().splitlines():
        parts = line.split()
        if len(parts) > 5 and parts[0].isdigit():
            states[parts[3]] = int(parts[5])
    return states


def wait_state(sock_path: str, server: str, state: int, timeout_s: float = 20.0) -> float:
    deadline = time.perf_counter() + timeout_s
    while True:
        try:
            if server_states(sock_path).get(server) == state:
                return time.perf_counter()
        except OSError:
            pass
        if time.perf_counter() > deadline:
            raise TimeoutError(f"HAProxy server {server} never reached state {state}")
        time.sleep(0.001)


def run_haproxy(args: argparse.Namespace, instances: list[Instance], workdir: Path) -> list[float]:
    sock_path = str(workdir / "haproxy.sock")
    config = workdir / "haproxy.cfg"
    config.write_text(
        HAPROXY_CONFIG.format(
            sock=sock_path,
            port=free_port(),
            timeout_ms=int(args.timeout * 1000),
            check_params=(
                f"inter {int(args.interval * 1000)}ms fastinter {int(args.interval * 1000)}ms "
                f"downinter {int(args.interval * 1000)}ms rise {args.rise} fall {args.fall}"
            ),
            pa=instances[0].port,
            pb=instances[1].port,
            pc=instances[2].port,
        )
    )
    proc = subprocess.Popen(
        [haproxy_binary(), "-db", "-f", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    samples: list[float] = []
    try:
        for _ in range(args.trials):
            wait_state(sock_path, "a", 2)
            time.sleep(args.interval * (2 + random.random()))  # kill at a random check phase
            killed = instances[0].kill()
            down = wait_state(sock_path, "a", 0)
            samples.append((down - killed) * 1000)
            instances[0].start()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    return samples


# --- proxy-failover -----------------------------------------------------------------------------
async def run_ours(
    args: argparse.Namespace, instances: list[Instance], workdir: Path
) -> tuple[list[float], list[float]]:
    switched = asyncio.Event()
    switch_at = 0.0

    async with open_service(f"sqlite+aiosqlite:///{workdir / 'pfo.db'}") as service:
        prober = Prober()
        engine = Engine(service, prober)

        def listener(proxy_id: str, notifications: Sequence[Notification]) -> None:
            nonlocal switch_at
            if any(n.type == "instance.unhealthy" for n in notifications):
                UNHEALTHY_AT.append(time.perf_counter())
            engine.notify(proxy_id, notifications)
            if any(n.type == "failover.completed" for n in notifications):
                switch_at = time.perf_counter()
                switched.set()

        service.on_change = listener
        await service.create_failover_configuration(
            "bench",
            "bench",
            {
                "failoverStrategy": "priority",
                "healthCheckIntervalSeconds": args.interval,
                "healthCheckTimeoutSeconds": args.timeout,
                "unhealthyThreshold": args.fall,
                "healthyThreshold": args.rise,
            },
        )
        ids = {}
        for n, inst in enumerate(instances):
            registered = await service.register_proxy_instance(
                "bench",
                "bench",
                {"instanceName": "abc"[n], "endpoint": f"127.0.0.1:{inst.port}", "priority": n},
            )
            ids[registered.id] = inst
        task = asyncio.create_task(engine.run())
        try:
            kill_samples = await _kill_trials(service, ids, args, switched, lambda: switch_at)
            STATS.update(drops=engine.stats.connection_drops, early=engine.stats.early_probes)
            reported = await _reported_trials(service, args, switched, lambda: switch_at)
        finally:
            engine.stop()
            await task
            await prober.aclose()
    return kill_samples, reported


async def _all_healthy_with_active(service: ProxyFailoverService) -> str:
    deadline = time.perf_counter() + 20
    while time.perf_counter() < deadline:
        status = await service.get_redundancy_status("bench")
        instances = await service.get_proxy_instances("bench")
        if (
            status
            and status.active_instance_id
            and all(i.health_status is HealthStatus.HEALTHY for i in instances)
        ):
            return status.active_instance_id
        await asyncio.sleep(0.01)
    raise TimeoutError("instances never all healthy with an active one")


async def _kill_trials(
    service: ProxyFailoverService,
    ids: dict[str, Instance],
    args: argparse.Namespace,
    switched: asyncio.Event,
    switch_at: Any,
) -> list[float]:
    samples: list[float] = []
    for _ in range(args.trials):
        active = await _all_healthy_with_active(service)
        await asyncio.sleep(args.interval * (2 + random.random()))  # as for HAProxy
        switched.clear()
        UNHEALTHY_AT.clear()
        killed = ids[active].kill()
        await asyncio.wait_for(switched.wait(), 20)
        samples.append((switch_at() - killed) * 1000)
        if UNHEALTHY_AT:
            DETECT_MS.append((UNHEALTHY_AT[0] - killed) * 1000)
        ids[active].start()
    return samples


async def _reported_trials(
    service: ProxyFailoverService, args: argparse.Namespace, switched: asyncio.Event, switch_at: Any
) -> list[float]:
    samples: list[float] = []
    for _ in range(args.reported):
        active = await _all_healthy_with_active(service)
        switched.clear()
        started = time.perf_counter()
        await service.update_instance_health(active, "unhealthy")
        REPORT_COMMIT_MS.append((time.perf_counter() - started) * 1000)
        await asyncio.wait_for(switched.wait(), 10)
        samples.append((switch_at() - started) * 1000)
        await service.update_instance_health(active, "healthy")
    return samples


# --- report -------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20, help="kill -9 trials per system")
    parser.add_argument("--reported", type=int, default=200, help="reported-failure trials")
    parser.add_argument("--interval", type=float, default=0.1, help="check interval, seconds")
    parser.add_argument("--timeout", type=float, default=0.08, help="check timeout, seconds")
    parser.add_argument("--rise", type=int, default=2)
    parser.add_argument("--fall", type=int, default=2)
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    parser.add_argument(
        "--api-load",
        action="store_true",
        help="against `serve` while wrk saturates its API (bench/failover_load.py)",
    )
    parser.add_argument(
        "--close", action="store_true", help="instances close their connection after each answer"
    )
    args = parser.parse_args()
    if args.loop == "uvloop":
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())

    instances = [Instance(close=args.close) for _ in range(3)]
    for inst in instances:
        inst.start()
    if args.api_load:
        try:
            report_api_load(args, failover_load.run(args, instances, run_haproxy))
        finally:
            for inst in instances:
                inst.stop()
        return
    try:
        with tempfile.TemporaryDirectory(prefix="pfo-bench-") as tmp:
            haproxy = run_haproxy(args, instances, Path(tmp))
            ours, reported = asyncio.run(run_ours(args, instances, Path(tmp)))
    finally:
        for inst in instances:
            inst.stop()

    def row(name: str, values: list[float]) -> str:
        return (
            f"{name:<36} | {len(values):>6} | {statistics.median(values):>8.1f} | "
            f"{percentile(values, 0.95):>8.1f} | {percentile(values, 0.99):>8.1f} | "
            f"{max(values):>8.1f}"
        )

    print(
        f"\nkill -9 of the active instance -> switch; interval {args.interval:g} s, timeout "
        f"{args.timeout:g} s, rise {args.rise}, fall {args.fall}; {args.loop}; "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    header = (
        f"{'scenario':<36} | {'trials':>6} | {'p50 ms':>8} | {'p95 ms':>8} | {'p99 ms':>8} | "
        f"{'max ms':>8}"
    )
    print(header)
    print("-" * len(header))
    print(row("HAProxy 2.6 (runtime API: DOWN)", haproxy))
    print(row("proxy-failover (failover committed)", ours))
    if DETECT_MS:
        print(row("  of which until marked unhealthy", DETECT_MS))
    print(row("proxy-failover reported unhealthy", reported))
    print(row("  of which the report's own commit", REPORT_COMMIT_MS))
    print(
        f"(kill trials: {STATS.get('drops')} dropped keep-alive connections seen, "
        f"{STATS.get('early')} probes brought forward by them)"
    )
    print(
        "\nratio proxy-failover / HAProxy: "
        f"p50 {statistics.median(ours) / statistics.median(haproxy):.2f}, "
        f"p95 {percentile(ours, 0.95) / percentile(haproxy, 0.95):.2f}"
    )
    save_results(args, haproxy, ours, reported)


def save_results(
    args: argparse.Namespace, haproxy: list[float], ours: list[float], reported: list[float]
) -> None:
    """bench/results/failover.json: the table above, as numbers."""

    def row(name: str, values: list[float]) -> list[str | int | float | None]:
        quantiles = [statistics.median(values), *(percentile(values, q) for q in (0.95, 0.99))]
        return [name, len(values), *(round(v, 1) for v in quantiles), round(max(values), 1)]

    rows = [
        row("HAProxy 2.6, kill → runtime API shows DOWN", haproxy),
        row("proxy-failover, kill → failover committed", ours),
    ]
    if DETECT_MS:
        rows.append(row("… of which until marked unhealthy", DETECT_MS))
    rows += [
        row("proxy-failover, reported unhealthy → switch committed", reported),
        row("… of which the report's own commit", REPORT_COMMIT_MS),
    ]
    p50 = statistics.median(ours) / statistics.median(haproxy)
    p95 = percentile(ours, 0.95) / percentile(haproxy, 0.95)
    table = Table(
        title=(
            f"kill -9 of the active instance; interval {args.interval:g} s, timeout "
            f"{args.timeout:g} s, rise {args.rise}, fall {args.fall}; {args.loop}"
        ),
        columns=["scenario", "trials", "p50 ms", "p95 ms", "p99 ms", "max ms"],
        rows=rows,
        formats=["", "", ".1f", ".1f", ".1f", ".1f"],
    )
    notes = [
        f"ratio proxy-failover / HAProxy: p50 {p50:.2f}, p95 {p95:.2f}",
        f"kill trials: {STATS.get('drops')} dropped keep-alive connections seen, "
        f"{STATS.get('early')} probes brought forward by them",
    ]
    headline = {
        "kill -9 of the active → switch, p50 / p95": (
            f"{statistics.median(ours):.0f} / {percentile(ours, 0.95):.0f} ms (HAProxy "
            f"{statistics.median(haproxy):.0f} / {percentile(haproxy, 0.95):.0f} ms)"
        ),
        "reported failure → switch committed, p99": f"{percentile(reported, 0.99):.1f} ms",
    }
    save("failover", title="Failover vs HAProxy", tables=[table], notes=notes, headline=headline)


def report_api_load(args: argparse.Namespace, results: dict[str, list[float]]) -> None:
    """Print the --api-load table and whether each goal of issue 10 was met."""
    print(
        f"\nkill -9 -> switch under API load (wrk: event lists, status reads, health writes); "
        f"interval {args.interval:g} s, timeout {args.timeout:g} s, rise {args.rise}, fall "
        f"{args.fall}; instances {'close after each answer' if args.close else 'keep-alive'}; "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    header = (
        f"{'scenario':<44} | {'n':>4} | {'p50 ms':>8} | {'p95 ms':>8} | {'p99 ms':>8} | "
        f"{'max ms':>8}"
    )
    print(header)
    print("-" * len(header))
    names = {
        "quiet": "proxy-failover serve, quiet",
        "haproxy_loaded": "HAProxy 2.6, API saturated",
        "loaded": "proxy-failover serve, API saturated",
        "reported_loaded": "reported unhealthy -> switch, API saturated",
        "reported_engine_loaded": "  the switch event's durationMs",
        "report_round_trip_loaded": "  the report's HTTP round trip (queued)",
    }
    for key, name in names.items():
        values = results[key]
        print(
            f"{name:<44} | {len(values):>4} | {statistics.median(values):>8.1f} | "
            f"{percentile(values, 0.95):>8.1f} | {percentile(values, 0.99):>8.1f} | "
            f"{max(values):>8.1f}"
        )
    loaded95 = percentile(results["loaded"], 0.95)
    quiet95 = percentile(results["quiet"], 0.95)
    haproxy95 = percentile(results["haproxy_loaded"], 0.95)
    reported99 = percentile(results["reported_loaded"], 0.99)
    verdict = {True: "met", False: "NOT met"}
    print(
        f"\nloaded p95 {loaded95:.0f} ms <= 1.1 x quiet p95 {quiet95:.0f} ms: "
        f"{verdict[loaded95 <= 1.1 * quiet95]}"
    )
    print(
        f"loaded p95 {loaded95:.0f} ms <= HAProxy loaded p95 {haproxy95:.0f} ms: "
        f"{verdict[loaded95 <= haproxy95]}"
    )
    print(f"reported -> switch p99 {reported99:.1f} ms < 20 ms: {verdict[reported99 < 20]}")
    table = Table(
        title=(
            f"kill -9 → switch under API load; interval {args.interval:g} s, timeout "
            f"{args.timeout:g} s, rise {args.rise}, fall {args.fall}; instances "
            f"{'close after each answer' if args.close else 'keep-alive'}"
        ),
        columns=["scenario", "n", "p50 ms", "p95 ms", "p99 ms", "max ms"],
        rows=[
            [
                name.strip(),
                len(results[key]),
                *(round(percentile(results[key], q), 1) for q in (0.5, 0.95, 0.99)),
                round(max(results[key]), 1),
            ]
            for key, name in names.items()
        ],
        formats=["", "", ".1f", ".1f", ".1f", ".1f"],
    )
    notes = [
        f"loaded p95 {loaded95:.0f} ms ≤ 1.1 x quiet p95 {quiet95:.0f} ms: "
        f"{verdict[loaded95 <= 1.1 * quiet95]}",
        f"loaded p95 {loaded95:.0f} ms ≤ HAProxy loaded p95 {haproxy95:.0f} ms: "
        f"{verdict[loaded95 <= haproxy95]}",
        f"reported → switch p99 {reported99:.1f} ms < 20 ms: {verdict[reported99 < 20]}",
        "reported → switch is measured between the database times of the report's "
        "instance.unhealthy and the failover.completed notifications; the switch is committed in "
        "the report's own transaction (docs/engine.md), stamped once decided, so the gap is the "
        "decision's own time; the report's answer itself queues behind the load (its HTTP round "
        "trip)",
    ]
    name = "failover-api-load" + ("-close" if args.close else "")
    save(name, title="Failover vs HAProxy", tables=[table], notes=notes)


if __name__ == "__main__":
    main()
