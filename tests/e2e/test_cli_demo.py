"""``proxy-failover demo`` tells the whole story with real processes and leaves nothing behind."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_demo_narrates_detection_failover_and_recovery_and_cleans_up(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("PFO_")}
    env["TMPDIR"] = str(tmp_path)
    finished = subprocess.run(
        [sys.executable, "-m", "proxy_failover", "demo"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,  # a hang guard, not a timing assertion (bench/ holds timings)
    )
    assert finished.returncode == 0, finished.stdout + finished.stderr
    out = finished.stdout
    for step in (
        "service ready at http://127.0.0.1:",
        "relay-a is active (epoch 1)",
        "killed relay-a with SIGKILL",
        "detected: probe of relay-a failed",
        "confirmed: relay-a unhealthy after 3 failures in a row",
        "failover: relay-b is active (epoch 2, event completed",
        "recovered: relay-a healthy after 2 successful probes; relay-b stays active",
        "done in ",
    ):
        assert step in out, out
    assert out.index("killed relay-a") < out.index("failover: relay-b") < out.index("recovered")
    assert list(tmp_path.iterdir()) == []  # no database in the cwd, temporary directory removed
