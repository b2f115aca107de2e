"""Database outages: how soon a hung, stopped or locked database is answered, and recovered from.

``proxy-failover serve`` with the default ``PFO_DATABASE_TIMEOUT_SECONDS`` (1.5 s) on a
PostgreSQL cluster of its own (free port; frozen with SIGSTOP, then stopped with ``-m immediate``
and started again) and on a SQLite file another process locks (``BEGIN IMMEDIATE``). In each
outage every request below is sent `--trials` times, each on a fresh connection while the outage
lasts, and its answer and time are recorded: a list read (``GET /proxy/:id/instances``), the
redundancy read, a registration (``POST /proxy/instances``) and ``GET /readyz``; then 30 list
reads at once, more than the server's connection pool holds. Once the outage ends, the time
until ``/readyz`` answers 200 again (polled every 50 ms) is recovery.

    .venv/bin/python bench/outages.py [--trials 5]

Goal (issue 12): 503/018 with ``Retry-After`` within 2 s, ``/readyz`` unready within 2 s, both
recover by themselves. Writes ``bench/results/outages.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _report import Cell, Table, save  # noqa: E402
from api import Server, mint  # noqa: E402
from tests.helpers.pg_cluster import own_cluster  # noqa: E402

PROXY = "outage"


def _requests(n: int) -> list[tuple[str, str, str, dict[str, object] | None]]:
    body: dict[str, object] = {"proxyId": PROXY, "instanceData": {"instanceName": f"during-{n}"}}
    return [
        ("list read", "GET", f"/proxy/{PROXY}/instances", None),
        ("redundancy read", "GET", f"/proxy/{PROXY}/redundancy", None),
        ("registration", "POST", "/proxy/instances", body),
        ("/readyz", "GET", "/readyz", None),
    ]


def _prepare(url: str, token: str) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=url, headers=headers, timeout=10) as http:
        http.post("/proxy/failover/config", json={"proxyId": PROXY}).raise_for_status()
        body = {"proxyId": PROXY, "instanceData": {"instanceName": "before"}}
        http.post("/proxy/instances", json=body).raise_for_status()


def _during(
    url: str, token: str, trials: int, outage: str, table: dict[str, list[tuple[float, str]]]
) -> None:
    """Each request ``trials`` times on a fresh connection; (seconds, answer) per request."""
    for n in range(trials):
        for label, method, path, body in _requests(n):
            headers = {"Authorization": f"Bearer {token}"}
            with httpx.Client(base_url=url, headers=headers, timeout=60) as http:
                started = time.monotonic()
                response = http.request(method, path, json=body)
                took = time.monotonic() - started
            table.setdefault(f"{outage}|{label}", []).append((took, _answer(response)))


def _answer(response: httpx.Response) -> str:
    """The status, with the error code and whether Retry-After came (``503/018 +Retry-After``)."""
    answer = str(response.status_code)
    if response.status_code >= 400:
        answer += "/" + response.json()["error"]["code"].removeprefix("PROXY_FAILOVER_")
        if "Retry-After" in response.headers:
            answer += " +Retry-After"
    return answer


def _concurrent(
    url: str, token: str, count: int, outage: str, table: dict[str, list[tuple[float, str]]]
) -> None:
    """``count`` list reads at once: more than the server's pool (5 + 10 overflow) holds."""

    async def one(http: httpx.AsyncClient) -> tuple[float, str]:
        started = time.monotonic()
        response = await http.get(f"/proxy/{PROXY}/instances")
        took = time.monotonic() - started
        return took, _answer(response)

    async def run() -> list[tuple[float, str]]:
        headers = {"Authorization": f"Bearer {token}"}
        limits = httpx.Limits(max_connections=count)
        async with httpx.AsyncClient(
            base_url=url, headers=headers, timeout=60, limits=limits
        ) as http:
            return list(await asyncio.gather(*(one(http) for _ in range(count))))

    table[f"{outage}|{count} list reads at once"] = asyncio.run(run())


def _recovery(url: str) -> float:
    """Seconds until /readyz answers 200 (polled every 50 ms, 60 s at most)."""
    started = time.monotonic()
    while time.monotonic() - started < 60:
        try:
            if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                return time.monotonic() - started
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    return float("nan")


def _run_outage(
    url: str,
    token: str,
    trials: int,
    outage: str,
    begin: Callable[[], object],
    end: Callable[[], object],
    answers: dict[str, list[tuple[float, str]]],
    recoveries: dict[str, float],
) -> None:
    begin()
    try:
        _during(url, token, trials, outage, answers)
        _concurrent(url, token, 30, outage, answers)
    finally:
        end()
    recoveries[outage] = _recovery(url)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--note", action="append", default=[], help="a line for the record")
    args = parser.parse_args()
    secret = secrets.token_hex(32)
    token = mint(secret, "root", admin=True)
    answers: dict[str, list[tuple[float, str]]] = {}
    recoveries: dict[str, float] = {}
    folder = Path(tempfile.mkdtemp(prefix="pfo-bench-outages-"))
    extra = {"PFO_RATE_LIMIT_PER_SECOND": "0"}
    with own_cluster() as cluster:
        server = Server(cluster.url, secret, folder / "serve-postgres.log", extra)
        try:
            _prepare(server.url, token)
            _run_outage(
                server.url,
                token,
                args.trials,
                "PostgreSQL frozen (SIGSTOP)",
                cluster.freeze,
                cluster.thaw,
                answers,
                recoveries,
            )
            _run_outage(
                server.url,
                token,
                args.trials,
                "PostgreSQL stopped (immediate)",
                lambda: cluster.stop("immediate"),
                cluster.start,
                answers,
                recoveries,
            )
        finally:
            server.stop()
    database = folder / "pfo.db"
    server = Server(f"sqlite+aiosqlite:///{database}", secret, folder / "serve-sqlite.log", extra)
    other = sqlite3.connect(database, isolation_level=None)
    try:
        _prepare(server.url, token)
        _run_outage(
            server.url,
            token,
            args.trials,
            "SQLite locked by another process",
            lambda: other.execute("BEGIN IMMEDIATE"),
            lambda: other.execute("ROLLBACK"),
            answers,
            recoveries,
        )
    finally:
        other.close()
        server.stop()

    rows: list[list[Cell]] = []
    for key, seen in answers.items():
        outage, label = key.split("|")
        times = [took for took, _ in seen]
        kinds = sorted({answer for _, answer in seen})
        rows.append(
            [
                outage,
                label,
                ", ".join(kinds),
                statistics.median(times) * 1000,
                max(times) * 1000,
                recoveries[outage] * 1000 if label == "/readyz" else None,
            ]
        )
    worst = max(took for seen in answers.values() for took, _ in seen)
    save(
        "outages",
        title="Database outages",
        tables=[
            Table(
                title=(
                    f"Answers during each outage, PFO_DATABASE_TIMEOUT_SECONDS default (1.5 s), "
                    f"{args.trials} trials per request"
                ),
                columns=[
                    "outage",
                    "request",
                    "answers",
                    "p50 ms",
                    "max ms",
                    "readyz 200 again after ms",
                ],
                rows=rows,
                formats=["", "", "", ",.0f", ",.0f", ",.0f"],
            )
        ],
        notes=[
            "Goal (issue 12): 503/018 with Retry-After within 2 s, /readyz unready within 2 s, "
            "both recover by themselves.",
            "Recovery: from the end of the outage (SIGCONT, pg_ctl start returned, lock released) "
            "to the first /readyz 200, polled every 50 ms.",
            f"Slowest answer in any outage: {worst * 1000:,.0f} ms.",
            "The machine's cores are shared with other work (see the load average): figures are a "
            "ceiling on a quiet machine.",
            *args.note,
        ],
        headline={
            "Database outage → 503/018": f"slowest answer {worst:.2f} s (goal 2 s)",
        },
    )


if __name__ == "__main__":
    main()
