"""docs/benchmarks.md and the README's headline table are rendered from bench/results/*.json.

Not core, but as fast and pure as the core's tests: the page must show exactly what the records
say, so a figure edited by hand in the page (or a record without its page) fails the suite.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _module(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench() -> tuple[ModuleType, ModuleType]:
    sys.path.insert(0, str(BENCH))  # render's scripts import _report as scripts do
    try:
        return _module("_report"), _module("render")
    finally:
        sys.path.remove(str(BENCH))


def test_the_page_and_the_readme_show_what_the_records_say() -> None:
    render = subprocess.run(
        [sys.executable, str(BENCH / "render.py"), "--check"], capture_output=True, text=True
    )
    assert render.returncode == 0, render.stderr


def test_a_saved_run_is_rendered_with_its_date_machine_command_and_figures(
    bench: tuple[ModuleType, ModuleType], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    report, render = bench
    monkeypatch.setenv("PFO_BENCH_RESULTS", str(tmp_path))
    monkeypatch.setattr(sys, "argv", [str(BENCH / "api.py"), "--duration", "2"])
    columns, formats = ["request", "req/s", "p99 ms"], ["", ",.0f", ".1f"]
    table = report.Table("2 s", columns, [["GET", 12345.4, 7.236]], formats)
    report.save("api-sqlite", title="REST API", tables=[table], headline={"reads": "12,345 req/s"})
    old = report.Table("old", ["request", "req/s"], [["PUT", None]])
    report.save("api-history", title="REST API", tables=[old])

    records = render.load(tmp_path)
    assert [r["name"] for r in records] == ["api-sqlite", "api-history"]
    assert records[0]["machine"]["cpus"] >= 1
    page = render.page(records)
    assert "- command: `.venv/bin/python bench/api.py --duration 2`" in page
    assert "| GET | 12,345 | 7.2 |" in page
    assert "| PUT | – |" in page  # noqa: RUF001 (the en dash of a missing value)
    assert f"- when: {records[0]['date'][:10]} " in page
    assert "| reads | 12,345 req/s |" in page

    readme = "intro\n" + render.BEGIN + "\nstale\n" + render.END + "\nrest\n"
    rendered = render.with_headline(readme, records)
    assert "stale" not in rendered
    assert rendered.startswith("intro\n" + render.BEGIN + "\n| benchmark | figure | measured |")
    assert rendered.endswith(render.END + "\nrest\n")
