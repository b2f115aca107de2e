"""Run every benchmark script in bench/ (``make bench``), one after another, and say which failed.

``bench/setup.sh`` runs first (it installs wrk/HAProxy when missing). Each ``bench/*.py`` other
than this one, ``render.py``, the ``_*.py`` helpers and modules without a ``__main__`` guard
(imported by the scripts) is a standalone script that prints its own
table and writes ``bench/results/<name>.json``; arguments are not passed on (each script has its
own defaults and ``--help``). ``render.py`` runs last: docs/benchmarks.md and the README's
headline table show the new figures.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent


def main() -> int:
    skip = {Path(__file__).name, "render.py"}
    scripts = sorted(
        path
        for path in BENCH.glob("*.py")
        if path.name not in skip
        and not path.name.startswith("_")
        and "__main__" in path.read_text()  # a module the scripts import is no benchmark
    )
    failed: list[str] = []
    setup = BENCH / "setup.sh"
    # setup.sh installs the outside tools (wrk, HAProxy) when missing; guarded, idempotent.
    if setup.exists() and subprocess.call(["bash", str(setup)]) != 0:
        print("bench/setup.sh failed; scripts needing its tools will say so", file=sys.stderr)
    for script in scripts:
        print(f"\n=== {script.name} ===", flush=True)
        started = time.monotonic()
        code = subprocess.call([sys.executable, str(script)], cwd=BENCH.parent)
        print(f"=== {script.name}: exit {code} after {time.monotonic() - started:.0f} s ===")
        if code != 0:
            failed.append(script.name)
    if subprocess.call([sys.executable, str(BENCH / "render.py")], cwd=BENCH.parent) != 0:
        failed.append("render.py")
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
