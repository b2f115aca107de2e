"""Instructions per probe result of ``bench/recording.py``'s timed passes, under callgrind.

CPU time on this 2-core machine, shared with other processes, moves by 20-40 % from run to run;
the instruction count of the same work does not (a few hundred per result over 3,000 results).
So versions of the recording path are compared here by the instructions callgrind counts inside
the timed passes only: ``recording.py`` reads ``time.process_time()`` right before and right
after each pass, and under this runner each of those reads toggles callgrind's collection
(``CALLGRIND_TOGGLE_COLLECT``, from a two-line library compiled on the fly; needs ``gcc`` and
valgrind's headers, Debian's ``valgrind`` package ships both).

    .venv/bin/python bench/_callgrind.py [--source SRC_DIR] [--instances 500] [--rounds 6]

``--source`` puts another checkout's ``src`` first on the path (e.g. ``git archive <commit> src``
unpacked in a temporary folder) to count an older version with the same benchmark. Takes about
5 minutes (the set-up runs under valgrind too). Prints the total and the count per result.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import runpy
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

BENCH = Path(__file__).resolve().parent
TOGGLE_C = "#include <valgrind/callgrind.h>\nvoid pfo_toggle(void) { CALLGRIND_TOGGLE_COLLECT; }\n"


def inner(library: str, script_args: list[str]) -> None:
    """Under valgrind: run recording.py with ``time.process_time`` toggling collection."""
    toggle = ctypes.CDLL(library).pfo_toggle
    real = time.process_time

    def process_time() -> float:
        toggle()
        return real()

    shim = types.ModuleType("time")
    shim.__dict__.update(time.__dict__)
    shim.process_time = process_time  # type: ignore[attr-defined]
    script = str(BENCH / "recording.py")
    sys.argv = [script, *script_args]
    sys.path.insert(0, str(BENCH))
    saved = sys.modules["time"]
    sys.modules["time"] = shim  # recording.py's ``import time`` gets the shim ...
    try:
        runpy.run_path(script, run_name="__main__")
    finally:
        sys.modules["time"] = saved  # ... nothing else is run meanwhile that needs the real one


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", help="another checkout's src folder, first on the path")
    parser.add_argument("--instances", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--inner", help=argparse.SUPPRESS)
    args = parser.parse_args()
    script_args = [
        "--no-save",
        "--instances",
        str(args.instances),
        "--batch",
        "500",
        "--rounds",
        str(args.rounds),
        "--repeats",
        "1",
    ]
    if args.inner:
        inner(args.inner, script_args)
        return
    with tempfile.TemporaryDirectory(prefix="pfo-callgrind-") as tmp:
        folder = Path(tmp)
        (folder / "toggle.c").write_text(TOGGLE_C)
        library = folder / "toggle.so"
        subprocess.run(
            ["gcc", "-O2", "-shared", "-fPIC", "-o", str(library), str(folder / "toggle.c")],
            check=True,
        )
        env = {**os.environ, "PYTHONHASHSEED": "0"}
        if args.source:
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [args.source, env.get("PYTHONPATH")]))
        out = folder / "callgrind.out"
        run = subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                "--collect-atstart=no",
                f"--callgrind-out-file={out}",
                sys.executable,
                __file__,
                "--instances",
                str(args.instances),
                "--rounds",
                str(args.rounds),
                "--inner",
                str(library),
            ],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        collected = next(
            int(line.split()[-1]) for line in run.stderr.splitlines() if "Collected :" in line
        )
    results = args.rounds * 500
    print(f"instructions in the timed passes: {collected:,} ({results:,} results)")
    print(f"instructions per result: {collected / results:,.0f}")


if __name__ == "__main__":
    main()
