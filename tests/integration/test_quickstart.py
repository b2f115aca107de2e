"""The README's library example (examples/quickstart.py) runs against a real database."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

QUICKSTART = Path(__file__).resolve().parents[2] / "examples" / "quickstart.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("quickstart", QUICKSTART)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_quickstart_runs_the_seed_flow_and_can_run_again(database_url: str) -> None:
    quickstart = _load()
    first: list[str] = []
    await quickstart.main(database_url, first.append)
    text = "\n".join(first)
    assert "registered proxy-instance-1" in text
    assert "shouldFailover=True (no_active_instance)" in text
    assert "failover in_progress (epoch 1)" in text
    assert "completed in 1500 ms" in text
    assert "overridden=True, healthy=2/2, degraded=False" in text
    assert "failover completed ->" in text
    assert first[-1] == "done"
    again: list[str] = []
    await quickstart.main(database_url, again.append)
    rerun = "\n".join(again)
    assert "proxy-instance-1 is already registered" in rerun
    assert "shouldFailover=False (active_healthy)" in rerun
    assert "No failover due" in rerun


def test_quickstart_runs_as_a_script(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'quickstart.db'}"
    result = subprocess.run(
        [sys.executable, str(QUICKSTART), url],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "5. Execute the failover, then complete it" in result.stdout
    assert result.stdout.strip().endswith("done")


def test_quickstart_uses_its_own_database_not_the_servers(tmp_path: Path) -> None:
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PFO_")}
    result = subprocess.run(
        [sys.executable, str(QUICKSTART)],
        cwd=tmp_path,
        env={**env, "TMPDIR": str(temporary)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "proxy-failover.db").exists()
    assert (temporary / "proxy-failover-quickstart.db").exists()
