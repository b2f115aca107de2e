"""The records of ``bench/probes.py``: one per store (``bench/results/probes-<store>.json``) and
the probe clients compared (``probes-clients.json``), as tables of plain numbers.
"""

from __future__ import annotations

import argparse
from typing import Any

from _report import Table, save


def _rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def save_results(
    args: argparse.Namespace, ports: int, rows: list[dict[str, Any]], clients: Any
) -> None:
    """One record per store (bench/results/probes-<store>.json), and probes-clients.json."""
    for store in dict.fromkeys(r["store"] for r in rows):
        mine = [r for r in rows if r["store"] == store]
        table = Table(
            title=(
                f"interval {args.interval:g} s, {args.loop}, {ports} server ports, "
                f"measured {args.seconds:g} s after {args.warmup:g} s warm-up"
            ),
            columns=[
                "instances",
                "commits/s",
                "flush p50 ms",
                "flush p99 ms",
                "probes/s",
                "expected",
                "failed",
                "not counted",
                "unhealthy",
                "lag p50 ms",
                "lag p99 ms",
                "engine CPU %",
                "server CPU %",
                "PostgreSQL CPU %",
                "RSS MiB",
                "MiB per 1,000",
                "start → all answered s",
                "registration s",
                "load avg",
            ],
            rows=[
                [
                    r["instances"],
                    round(r["commits_per_s"]),
                    _rounded(r.get("flush_ms_p50"), 0),
                    _rounded(r.get("flush_ms_p99"), 0),
                    round(r["probes_per_s"]),
                    round(r["expected_per_s"]),
                    r["failures"],
                    r["inconclusive"],
                    r["unhealthy_instances"],
                    round(r["lag_p50_ms"], 1),
                    round(r["lag_p99_ms"], 1),
                    round(r["cpu_percent"]),
                    round(r["server_cpu_percent"]),
                    _rounded(r.get("postgres_cpu_percent"), 0),
                    _rounded(r.get("rss_mb"), 0),
                    _rounded(r.get("rss_per_1000_mb"), 1),
                    _rounded(r.get("all_probed_once_s"), 1),
                    _rounded(r.get("registration_s"), 1),
                    round(r["load_average"], 2),
                ]
                for r in mine
            ],
            formats=[
                ",",
                ",",
                "",
                "",
                ",",
                ",",
                "",
                "",
                "",
                ".1f",
                ".1f",
                "",
                "",
                "",
                "",
                ".1f",
                ".1f",
                ".1f",
                ".2f",
            ],
        )
        largest = max(mine, key=lambda r: int(r["instances"]))
        headline = {
            f"probe scheduling, {largest['instances']:,} instances at "
            f"{args.interval:g} s, {store}": (
                f"{largest['probes_per_s']:,.0f} probes/s, lag p99 {largest['lag_p99_ms']:.0f} ms,"
                f" {largest['cpu_percent']:.0f} % CPU"
            )
        }
        save(f"probes-{store}", title="Probe scheduling", tables=[table], headline=headline)
    if clients is not None:
        table = Table(
            title=f"{clients['instances']} keep-alive instances, {clients['rounds']} rounds",
            columns=["client", "CPU µs per probe", "successful probes"],
            rows=[
                ["proxy-failover prober", round(clients["raw_us_per_probe"]), clients["raw_ok"]],
                [
                    "httpx, one AsyncClient for all",
                    round(clients["httpx_us_per_probe"]),
                    clients["httpx_ok"],
                ],
                [
                    "httpx, one AsyncClient per instance",
                    round(clients["httpx_own_us_per_probe"]),
                    clients["httpx_own_ok"],
                ],
            ],
            formats=["", ",", ","],
        )
        save("probes-clients", title="Probe scheduling", tables=[table])
