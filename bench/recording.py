"""Probe recording: routine results per CPU-second through ``service.record_probe_results``.

The engine's recording path alone, in one process, without probes or a schedule: a fresh
database (SQLite file, or PostgreSQL with ``--postgres URL``) with ``--instances`` healthy
instances (100 per proxy), then ``--rounds`` batches of ``--batch`` routine successes (healthy
instances answering, as 99 % of a steady fleet's results are), each batch one call as the
engine's flush makes it. Figures: results per CPU-second of this process (``time.process_time``,
so the database's own CPU on PostgreSQL is not in it) and per wall-second, and the CPU per
result. ``--profile`` prints a pyinstrument profile of the timed rounds instead of saving.

Goal (issue 9): a routine result costs no more than before the split of the service and the
engine (9f6c737). CPU time on the shared machine moves by 20-40 % between runs, so versions are
compared by instructions (``bench/_callgrind.py``, the "Earlier figures" below).

Run: ``.venv/bin/python bench/recording.py [--postgres URL]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _report import Table, save  # noqa: E402

INSTANCES_PER_PROXY = 100


async def measure(
    url: str,
    size: int,
    batch: int,
    rounds: int,
    repeats: int,
    profile: bool,
) -> dict[str, Any]:
    from proxy_failover.bootstrap import open_service
    from proxy_failover.core.model import CheckResult

    async with contextlib.AsyncExitStack() as exits:
        service: Any = await exits.enter_async_context(open_service(url))
        ids: list[str] = []
        for p in range(0, size, INSTANCES_PER_PROXY):
            proxy_id = f"rec-{p // INSTANCES_PER_PROXY}"
            await service.create_failover_configuration(proxy_id, "bench", {})
            for n in range(p, min(p + INSTANCES_PER_PROXY, size)):
                made = await service.register_proxy_instance(
                    proxy_id, "bench", {"instanceName": f"i{n}", "endpoint": f"127.0.0.1:{n + 1}"}
                )
                ids.append(made.id)
        for start in range(0, size, batch):  # unknown -> healthy: the state machine path
            chunk = ids[start : start + batch]
            await service.record_probe_results([(i, CheckResult(True, 1.0)) for i in chunk])
        batches: list[list[Any]] = []
        for r in range(rounds):
            start = (r * batch) % size
            chunk = (ids + ids)[start : start + batch]
            batches.append([(i, CheckResult(True, 1.0 + (r % 7))) for i in chunk])
        # warm-up: prepared statements, caches
        for results in batches[:3]:
            await service.record_probe_results(results)
        profiler: Any = None
        if profile:
            from pyinstrument import Profiler

            profiler = Profiler(interval=0.0005, async_mode="disabled")
        per_cpu: list[float] = []
        per_wall: list[float] = []
        for _ in range(repeats):
            if profiler is not None:
                profiler.start()
            cpu0, wall0 = time.process_time(), time.perf_counter()
            for results in batches:
                answers = await service.record_probe_results(results)
                assert all(a is not None for a in answers)
            cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
            if profiler is not None:
                profiler.stop()
            per_cpu.append(rounds * batch / cpu)
            per_wall.append(rounds * batch / wall)
        if profiler is not None:
            print(profiler.output_text(unicode=True, color=False, show_all=False))
    return {
        "instances": size,
        "batch": batch,
        "rounds": rounds,
        "results_per_cpu_s": statistics.median(per_cpu),
        "results_per_cpu_s_all": [round(v) for v in per_cpu],
        "results_per_cpu_s_best": max(per_cpu),
        "results_per_wall_s": statistics.median(per_wall),
        "cpu_us_per_result": 1e6 / statistics.median(per_cpu),
        "load_average": os.getloadavg()[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=5, help="timed passes (median reported)")
    parser.add_argument("--postgres", default=None, help="an empty PostgreSQL database's URL")
    parser.add_argument("--profile", action="store_true", help="print a profile, save nothing")
    parser.add_argument("--no-save", action="store_true", help="print only")

    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - pinned
        pass
    with tempfile.TemporaryDirectory(prefix="pfo-rec-") as workdir:
        stores = {"sqlite": f"sqlite+aiosqlite:///{Path(workdir) / 'pfo.db'}"}
        if args.postgres:
            stores["postgres"] = args.postgres
        for store, url in stores.items():
            figures = asyncio.run(
                measure(
                    url,
                    args.instances,
                    args.batch,
                    args.rounds,
                    args.repeats,
                    args.profile,
                )
            )
            print(store, figures)
            if args.profile or args.no_save:
                continue
            save_result(store, figures)


def save_result(store: str, figures: dict[str, Any]) -> None:
    table = Table(
        title=(
            f"{figures['instances']:,} healthy instances, batches of {figures['batch']} routine "
            f"successes, {figures['rounds']} batches per pass, median of the passes"
        ),
        columns=[
            "store",
            "results / CPU-s",
            "CPU µs / result",
            "results / wall-s",
            "each pass, results / CPU-s",
            "load avg",
        ],
        rows=[
            [
                store,
                round(figures["results_per_cpu_s"]),
                round(figures["cpu_us_per_result"], 1),
                round(figures["results_per_wall_s"]),
                ", ".join(f"{v:,}" for v in figures["results_per_cpu_s_all"]),
                round(figures["load_average"], 2),
            ]
        ],
        formats=["", ",", ".1f", ",", "", ".2f"],
    )
    save(f"recording-{store}", title="Probe recording", tables=[table])


if __name__ == "__main__":
    main()
