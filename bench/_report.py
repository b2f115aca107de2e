"""Benchmark results as JSON: each script writes ``bench/results/<name>.json`` through ``save``.

One record per run of one benchmark variant (``api-sqlite``, ``probes-memory``, ...): when, on
what machine, the exact command, and the figures as tables of plain numbers. ``bench/render.py``
turns every record into ``docs/benchmarks.md`` (and the README's headline table), so a figure is
written down once, by the script that measured it. ``PFO_BENCH_RESULTS`` points elsewhere for a
smoke run that must not replace the recorded figures.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import sys
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
Cell = str | int | float | None


@dataclass
class Table:
    """One table of figures; ``formats`` gives each column's format spec ("" = as is)."""

    title: str
    columns: list[str]
    rows: list[list[Cell]]
    formats: list[str] = field(default_factory=list)


def results_dir() -> Path:
    """Where records go: ``bench/results`` unless ``PFO_BENCH_RESULTS`` says otherwise."""
    return Path(os.environ.get("PFO_BENCH_RESULTS") or BENCH / "results")


def machine() -> dict[str, Any]:
    """The machine the figures belong to: they mean little without it."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "kernel": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
    }


def command() -> str:
    """This run's command line as a user would type it from the repository root."""
    script = Path(sys.argv[0]).resolve()
    try:
        shown = str(script.relative_to(ROOT))
    except ValueError:
        shown = str(script)
    return shlex.join([".venv/bin/python", shown, *sys.argv[1:]])


def save(
    name: str,
    *,
    title: str,
    tables: list[Table],
    notes: list[str] | None = None,
    headline: dict[str, str] | None = None,
) -> Path:
    """Write ``<name>.json`` for this run (replacing the previous run of the same variant).

    ``headline`` holds the few figures the README's headline table quotes (see render.py).
    """
    record = {
        "name": name,
        "title": title,
        "status": "measured",
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": machine(),
        "load_average": round(os.getloadavg()[0], 2),
        "command": command(),
        "figures": [asdict(table) for table in tables],
        "notes": notes or [],
        "headline": headline or {},
    }
    folder = results_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    path.write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n")
    print(f"results: {path}", file=sys.stderr)
    return path
