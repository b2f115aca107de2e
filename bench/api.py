"""REST API throughput and latency: ``proxy-failover serve`` under wrk, on SQLite and PostgreSQL.

For each database: start ``serve`` as a subprocess on a free port (a fresh SQLite file, then a
fresh PostgreSQL database), register one proxy with three healthy instances, then run 32
keep-alive connections for ``--duration`` seconds against

* ``GET /proxy/:id/redundancy`` (a read), and
* ``PUT /proxy/instances/:id/health`` (an authoritative health report: a write transaction),

and print requests/s, p50, p99, errors, and how much CPU the server and the load generator used
(both share the machine's cores, so the figures are a floor); each database's figures are written
to ``bench/results/api-<database>.json``. Needs ``wrk`` (bench/setup.sh).

    .venv/bin/python bench/api.py [--duration 20] [--connections 32] [--databases sqlite,postgres]

Goal: reads ≥ 5,000 req/s and health writes ≥ 1,500 req/s with p99 < 25 ms on SQLite.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
from _report import Table, save

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"
PROXY = "bench-proxy"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Result:
    database: str
    scenario: str
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    errors: int
    requests: int
    server_cpu: float  # cores used by the server, averaged over the run
    wrk_cpu: float


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


class Server:
    """``proxy-failover serve`` in a subprocess, ready when /readyz answers."""

    def __init__(
        self, database_url: str, secret: str, log: Path, extra: dict[str, str] | None = None
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "PFO_DATABASE_URL": database_url,
            "PFO_JWT_SECRET": secret,
            "PFO_LOG_LEVEL": "warning",
            # One token at thousands of requests a second measures capacity, not the per-caller
            # limits (bench/greedy.py measures those): they are off unless ``extra`` says so.
            "PFO_RATE_LIMIT_PER_SECOND": "0",
            **(extra or {}),
        }
        self.log = log
        with log.open("w") as sink:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "proxy_failover", "serve", "--port", str(self.port)],
                cwd=ROOT,
                env=env,
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"serve exited:\n{log.read_text()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"serve did not become ready:\n{log.read_text()}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def mint(secret: str, sub: str, *, admin: bool = False) -> str:
    from proxy_failover.entrypoints.api.auth import mint_token

    return mint_token(secret, sub, admin=admin, ttl_seconds=3600)


def prepare(url: str, token: str) -> list[str]:
    """One proxy owned by the bench user, three healthy instances."""
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=url, headers=headers, timeout=10) as http:
        http.post("/proxy/failover/config", json={"proxyId": PROXY}).raise_for_status()
        ids = []
        for index in range(3):
            body = {"proxyId": PROXY, "instanceData": {"instanceName": f"edge-{index}"}}
            created = http.post("/proxy/instances", json=body)
            created.raise_for_status()
            ids.append(created.json()["data"]["id"])
            http.put(
                f"/proxy/instances/{ids[-1]}/health", json={"healthStatus": "healthy"}
            ).raise_for_status()
        return ids


WRITE_SCRIPT = """
local ids = {%s}
local counter = 0
wrk.method = "PUT"
wrk.body = '{"healthStatus":"healthy"}'
wrk.headers["Content-Type"] = "application/json"
request = function()
  counter = counter + 1
  return wrk.format(nil, "/proxy/instances/" .. ids[(counter %% #ids) + 1] .. "/health")
end
"""

_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _latency_ms(text: str, percentile: str) -> float:
    match = re.search(rf"^\s*{percentile}%\s+([\d.]+)(us|ms|s)\s*$", text, re.MULTILINE)
    return float(match.group(1)) * _UNITS[match.group(2)] if match else float("nan")


def run_wrk(
    server: Server,
    path: str,
    token: str,
    duration: int,
    connections: int,
    threads: int,
    script: str | None,
    workdir: Path,
) -> tuple[str, float, float]:
    """Run wrk; return its output, the server's CPU (cores) meanwhile, and the elapsed time."""
    args = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{duration}s",
        "--latency",
        "--timeout",
        "10s",  # a slow answer is measured, not dropped as an error
        "-H",
        f"Authorization: Bearer {token}",
    ]
    if script is not None:
        lua = workdir / f"wrk-{uuid.uuid4().hex}.lua"
        lua.write_text(script)
        args += ["-s", str(lua)]
    args.append(server.url + path)
    before = cpu_seconds(server.proc.pid)
    started = time.monotonic()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output, _ = proc.communicate(timeout=duration + 60)
    elapsed = time.monotonic() - started
    server_cpu = (cpu_seconds(server.proc.pid) - before) / elapsed
    return output, server_cpu, elapsed


def parse(database: str, scenario: str, output: str, server_cpu: float, wrk_cpu: float) -> Result:
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    total = re.search(r"(\d+) requests in", output)
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    errors = int(non_2xx.group(1)) if non_2xx else 0
    if socket_errors:
        errors += sum(int(value) for value in socket_errors.groups())
    return Result(
        database=database,
        scenario=scenario,
        requests_per_second=float(rps.group(1)) if rps else 0.0,
        p50_ms=_latency_ms(output, "50"),
        p99_ms=_latency_ms(output, "99"),
        errors=errors,
        requests=int(total.group(1)) if total else 0,
        server_cpu=server_cpu,
        wrk_cpu=wrk_cpu,
    )


def children_cpu() -> float:
    usage = os.times()
    return usage.children_user + usage.children_system


def bench_database(
    database: str, url: str, args: argparse.Namespace, workdir: Path
) -> list[Result]:
    secret = secrets.token_urlsafe(48)
    token = mint(secret, "bench-owner")
    server = Server(url, secret, workdir / f"serve-{database}.log")
    results = []
    try:
        ids = prepare(server.url, token)
        scenarios = [
            ("GET redundancy", f"/proxy/{PROXY}/redundancy", None),
            (
                "PUT health",
                "/proxy/instances/x/health",
                WRITE_SCRIPT % ", ".join(f'"{i}"' for i in ids),
            ),
        ]
        for scenario, path, script in scenarios:
            wrk_before = children_cpu()
            output, server_cpu, elapsed = run_wrk(
                server, path, token, args.duration, args.connections, args.threads, script, workdir
            )
            wrk_cpu = (children_cpu() - wrk_before) / elapsed
            result = parse(database, scenario, output, server_cpu, wrk_cpu)
            if result.requests == 0:
                print(output, file=sys.stderr)
            results.append(result)
            print(
                f"  {database:<10} {scenario:<15} {result.requests_per_second:>9,.0f} req/s",
                file=sys.stderr,
            )
    finally:
        server.stop()
    return results


async def _postgres(server_url: str, sql: str) -> None:
    import asyncpg  # type: ignore[import-untyped]

    dsn = server_url.replace("postgresql+asyncpg://", "postgresql://")
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def with_database(server_url: str, name: str) -> str:
    from sqlalchemy.engine import make_url

    parsed = make_url(server_url).set(drivername="postgresql+asyncpg", database=name)
    return parsed.render_as_string(hide_password=False)


def print_table(results: list[Result], args: argparse.Namespace) -> None:
    print()
    print(
        f"REST API, {args.connections} keep-alive connections, {args.duration} s each, "
        f"wrk -t{args.threads}, {os.cpu_count()} cores shared by server and load generator "
        f"(load average at the end: {os.getloadavg()[0]:.1f})"
    )
    header = (
        f"| {'database':<10} | {'request':<15} | {'req/s':>8} | {'p50 ms':>7} | {'p99 ms':>7} "
        f"| {'errors':>6} | {'server CPU':>10} | {'wrk CPU':>7} |"
    )
    print(header)
    print("|" + "|".join("-" * (len(cell) + 0) for cell in header.split("|")[1:-1]) + "|")
    for r in results:
        print(
            f"| {r.database:<10} | {r.scenario:<15} | {r.requests_per_second:>8,.0f} "
            f"| {r.p50_ms:>7.2f} | {r.p99_ms:>7.2f} | {r.errors:>6} "
            f"| {r.server_cpu:>9.0%} | {r.wrk_cpu:>6.0%} |"
        )
    print()
    for r in results:
        if r.requests_per_second and r.server_cpu:
            per_request = r.server_cpu / r.requests_per_second * 1e6
            print(f"  {r.database}/{r.scenario}: {per_request:,.0f} µs of server CPU per request")


def save_results(results: list[Result], args: argparse.Namespace) -> None:
    """One record per database: bench/results/api-<database>.json."""
    for database in dict.fromkeys(r.database for r in results):
        rows = [r for r in results if r.database == database]
        columns = ["request", "req/s", "p50 ms", "p99 ms", "errors", "server CPU %", "wrk CPU %"]
        columns.append("server CPU µs / request")
        table = Table(
            title=(
                f"{args.connections} keep-alive connections, {args.duration} s per request, "
                f"wrk -t{args.threads}"
            ),
            columns=columns,
            rows=[
                [
                    r.scenario,
                    round(r.requests_per_second),
                    round(r.p50_ms, 2),
                    round(r.p99_ms, 2),
                    r.errors,
                    round(r.server_cpu * 100),
                    round(r.wrk_cpu * 100),
                    round(r.server_cpu / r.requests_per_second * 1e6)
                    if r.requests_per_second
                    else None,
                ]
                for r in rows
            ],
            formats=["", ",", ".2f", ".2f", "", "", "", ","],
        )
        label = {"sqlite": "SQLite", "postgres": "PostgreSQL"}[database]
        by_scenario = {r.scenario: r for r in rows}
        headline = {
            f"REST API on {label}, {r.scenario}": (
                f"{r.requests_per_second:,.0f} req/s, p99 {r.p99_ms:.1f} ms"
            )
            for r in by_scenario.values()
        }
        save(f"api-{database}", title="REST API", tables=[table], headline=headline)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=20, help="seconds per scenario")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument("--databases", default="sqlite,postgres")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("PFO_TEST_POSTGRES_URL", DEFAULT_POSTGRES),
        help="server to create the benchmark's fresh database on",
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is not installed: run bench/setup.sh (apt-get install wrk)", file=sys.stderr)
        return 2
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="pfo-bench-api-") as tmp:
        workdir = Path(tmp)
        for database in args.databases.split(","):
            if database == "sqlite":
                url = f"sqlite+aiosqlite:///{workdir / 'bench.db'}"
                results += bench_database("sqlite", url, args, workdir)
            elif database == "postgres":
                name = f"pfo_bench_{os.getpid()}_{uuid.uuid4().hex[:6]}"
                try:
                    asyncio.run(_postgres(args.postgres_url, f'CREATE DATABASE "{name}"'))
                except Exception as error:  # no server: say so, keep the SQLite figures
                    print(f"  postgres skipped: {type(error).__name__}: {error}", file=sys.stderr)
                    continue
                try:
                    url = with_database(args.postgres_url, name)
                    results += bench_database("postgres", url, args, workdir)
                finally:
                    asyncio.run(
                        _postgres(
                            args.postgres_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'
                        )
                    )
            else:
                parser.error(f"unknown database {database!r}")
    print_table(results, args)
    save_results(results, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
