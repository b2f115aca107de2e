"""Render ``docs/benchmarks.md`` and the README's headline table from ``bench/results/*.json``.

``make bench`` runs this last, so the page always shows the latest record of every benchmark
variant with its date, machine and command; nobody copies figures by hand. ``--check`` renders
without writing and fails when the page or the README differ from what the records say (the test
suite runs it).

    .venv/bin/python bench/render.py [--check]
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import sys
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PAGE = ROOT / "docs" / "benchmarks.md"
README = ROOT / "README.md"
BEGIN, END = "<!-- bench-headline:begin -->", "<!-- bench-headline:end -->"
# Scripts in the order the page shows them; any other script's records follow alphabetically.
ORDER = ["api", "failover", "probes", "recording", "webhooks"]
# Variants of one script: these first, then the others alphabetically, ``history`` last.
VARIANTS = ["", "memory", "sqlite", "postgres", "history"]
VARIANT_TITLES = {
    "memory": "In memory (the engine's own cost; store since removed)",
    "sqlite": "SQLite",
    "postgres": "PostgreSQL",
    "clients": "HTTP clients compared",
    "history": "Earlier figures",
}


def load(folder: Path) -> list[dict[str, Any]]:
    """Every record, grouped by script (the name before the first ``-``) in ``ORDER``."""
    records = [json.loads(path.read_text()) for path in sorted(folder.glob("*.json"))]

    def key(record: dict[str, Any]) -> tuple[int, str, int, str]:
        script, _, variant = record["name"].partition("-")
        rank = ORDER.index(script) if script in ORDER else len(ORDER)
        order = VARIANTS.index(variant) if variant in VARIANTS else len(VARIANTS) - 1
        return rank, script, order, variant

    return sorted(records, key=key)


def cell(value: Any, spec: str) -> str:
    if value is None:
        return "–"  # noqa: RUF001 (an en dash: no value)
    if spec and isinstance(value, int | float) and not isinstance(value, bool):
        return format(value, spec)
    return str(value)


def table(figures: dict[str, Any]) -> list[str]:
    columns: list[str] = figures["columns"]
    formats: list[str] = figures.get("formats") or [""] * len(columns)
    numeric = [
        all(isinstance(row[n], int | float) or row[n] is None for row in figures["rows"])
        for n in range(len(columns))
    ]
    lines = [
        "| " + " | ".join(columns) + " |",
        "| " + " | ".join("---:" if right else "---" for right in numeric) + " |",
    ]
    for row in figures["rows"]:
        cells = [cell(value, formats[n] if n < len(formats) else "") for n, value in enumerate(row)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def when(record: dict[str, Any]) -> str:
    """The run's date; a record copied from older notes says so instead of posing as a run."""
    date = str(record["date"]).replace("T", " ").removesuffix("Z")[:16]
    if record.get("status", "measured") == "measured":
        return f"{date} UTC"
    return str(record["status"])


def machine(record: dict[str, Any]) -> str:
    info = record.get("machine") or {}
    parts = [
        f"{info['cpus']} CPUs" if info.get("cpus") else None,
        info.get("cpu_model"),
        info.get("kernel"),
        f"Python {info['python']}" if info.get("python") else None,
        info.get("note"),
    ]
    load = record.get("load_average")
    if load is not None:
        parts.append(f"load average {load}")
    return ", ".join(str(part) for part in parts if part) or "not recorded"


def about(script: str) -> str:
    """The script's docstring (what it measures and its goal, said once, there), minus usage."""
    path = BENCH / f"{script}.py"
    if not path.exists():
        return ""
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    kept = [
        paragraph
        for paragraph in doc.split("\n\n")
        if not paragraph.startswith((" ", "Run", "Usage"))
    ]
    return "\n\n".join(kept).replace("``", "`")


def headline(records: list[dict[str, Any]]) -> list[str]:
    lines = ["| benchmark | figure | measured |", "| --- | --- | --- |"]
    for record in records:
        for label, text in (record.get("headline") or {}).items():
            lines.append(f"| {label} | {text} | {when(record)} |")
    return lines


def page(records: list[dict[str, Any]]) -> str:
    out = [
        "# Benchmarks",
        "",
        "<!-- Rendered by bench/render.py from bench/results/*.json: edit those, not this. -->",
        "",
        "`make bench` runs every script in `bench/` (after `bench/setup.sh`, which installs `wrk` "
        "and HAProxy from Debian when missing); each script writes its figures to "
        "`bench/results/<name>.json` (date, machine, command, figures) and `bench/render.py` "
        "renders this page from them. The development machine has 2 CPUs shared by the server, "
        "the load generator, the instance servers and PostgreSQL: treat the figures as orders "
        "of magnitude, compare runs made on the same machine, and re-run before quoting. A record "
        'marked "recorded …, not re-run" was copied from earlier notes, not measured by the '
        "current script.",
        "",
        "## Headline",
        "",
        *headline(records),
    ]
    script = None
    for record in records:
        name = record["name"].split("-")[0]
        if name != script:
            script = name
            out += ["", f"## {record['title']} (`bench/{name}.py`)", ""]
            if description := about(name):
                out += [description, ""]
        variant = record["name"].removeprefix(name).removeprefix("-")
        out += [
            f"### {VARIANT_TITLES.get(variant, variant or 'Latest run')}",
            "",
            f"- when: {when(record)}",
            f"- machine: {machine(record)}",
            f"- command: `{record['command']}`",
            "",
        ]
        for figures in record["figures"]:
            if figures.get("title"):
                out += [f"{figures['title']}:", ""]
            out += [*table(figures), ""]
        for note in record.get("notes") or []:
            out += [f"- {note}"]
        if record.get("notes"):
            out.append("")
    return re.sub(r"\n{3,}", "\n\n", "\n".join(out)).rstrip() + "\n"


def with_headline(readme: str, records: list[dict[str, Any]]) -> str:
    """The README with the headline table between its markers replaced."""
    start, stop = readme.index(BEGIN) + len(BEGIN), readme.index(END)
    return readme[:start] + "\n" + "\n".join(headline(records)) + "\n" + readme[stop:]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="fail if the page is out of date")
    parser.add_argument("--results", type=Path, default=BENCH / "results")
    args = parser.parse_args()
    records = load(args.results)
    rendered = {PAGE: page(records), README: with_headline(README.read_text(), records)}
    stale = [
        path for path, text in rendered.items() if not path.exists() or path.read_text() != text
    ]
    if args.check:
        for path in stale:
            print(f"{path.relative_to(ROOT)} is out of date: run bench/render.py", file=sys.stderr)
        return 1 if stale else 0
    for path in stale:
        path.write_text(rendered[path])
        print(f"rendered {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
