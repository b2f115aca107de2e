"""``NginxDataPlane`` in-process: real files and real reload commands (a shell that logs each run),
no nginx: when it writes, when it reloads, what a failed or hung reload does, and the CLI's checks
of its options (the real nginx is driven in tests/e2e/test_dataplane_nginx.py)."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from proxy_failover.adapters.dataplanes.agent import DataPlaneError
from proxy_failover.adapters.dataplanes.metrics import AgentMetrics
from proxy_failover.adapters.dataplanes.nginx import NginxDataPlane, NginxNjsDataPlane
from proxy_failover.core.dataplane import DesiredState, desired_state
from proxy_failover.core.model import HealthStatus
from proxy_failover.entrypoints.cli import app
from tests.helpers.factories import inst


def _state(
    proxy_id: str, active: str | None, epoch: int = 1, **health: HealthStatus
) -> DesiredState:
    instances = [
        inst(
            name,
            priority=rank,
            endpoint=f"127.0.0.1:{9000 + rank}",
            health=health.get(name, HealthStatus.HEALTHY),
        )
        for rank, name in enumerate(("a", "b", "c"), start=1)
    ]
    return desired_state(proxy_id, instances, active, epoch, load_balanced=False)


@pytest.fixture
def output(tmp_path: Path) -> Path:
    return tmp_path / "upstreams.conf"


def _plane(
    output: Path, command: str | None = None, reload_timeout: float = 10.0
) -> NginxDataPlane:
    log = output.parent / "reloads.log"
    reload = command or f"echo reload >> {log}"
    return NginxDataPlane(
        output,
        {"one": "up_one", "two": "up_two"},
        reload,
        AgentMetrics("nginx"),
        reload_timeout=reload_timeout,
    )


def _read(path: Path) -> str:
    return path.read_text()


def _exists(path: Path) -> bool:
    return path.exists()


def _leftovers(directory: Path) -> list[Path]:
    return [p for p in directory.iterdir() if p.name.startswith(".upstreams.conf.")]


def _reloads(output: Path) -> int:
    log = output.parent / "reloads.log"
    return len(log.read_text().splitlines()) if log.exists() else 0


async def test_nothing_is_written_until_every_mapped_proxy_has_a_state(output: Path) -> None:
    plane = _plane(output)
    await plane.apply(_state("one", "a"))
    assert not _exists(output)
    await plane.apply(_state("two", "b"))
    text = _read(output)
    assert text.index("upstream up_one {") < text.index("upstream up_two {")
    assert "    server 127.0.0.1:9001;  # a (active)\n" in text
    assert _reloads(output) == 1
    assert not _leftovers(output.parent)


async def test_reload_only_when_the_text_changes(output: Path) -> None:
    plane = _plane(output)
    await plane.apply(_state("one", "a"))
    await plane.apply(_state("two", "a"))
    await plane.apply(_state("one", "a", epoch=2))  # same routing, newer epoch
    assert _reloads(output) == 1
    await plane.apply(_state("one", "b", epoch=3))  # a planned move: a drains
    assert _reloads(output) == 2
    assert plane.metrics.switches.labels("one", "drain")._value.get() == 1
    # a restarted agent in front of the same file does not reload
    again = _plane(output)
    await again.apply(_state("one", "b", epoch=3))
    await again.apply(_state("two", "a"))
    assert _reloads(output) == 2


async def test_a_failed_reload_is_an_error_and_is_retried(output: Path) -> None:
    marker = output.parent / "nginx-up"
    log = output.parent / "reloads.log"
    plane = _plane(
        output, f"test -e {marker} && echo reload >> {log} || (echo 'nginx down' >&2; exit 1)"
    )
    await plane.apply(_state("one", "a"))
    with pytest.raises(DataPlaneError, match="exited 1: nginx down"):
        await plane.apply(_state("two", "a"))
    assert _exists(output)  # written, but not counted as loaded
    marker.touch()
    await plane.apply(_state("two", "a"))  # same text: reloaded now
    assert _reloads(output) == 1


async def test_a_hung_reload_is_killed(output: Path) -> None:
    plane = _plane(output, "sleep 5", reload_timeout=0.2)
    await plane.apply(_state("one", "a"))
    with pytest.raises(DataPlaneError, match=r"still running after 0\.2s"):
        await plane.apply(_state("two", "a"))


async def test_an_unwritable_output_is_an_error(tmp_path: Path) -> None:
    plane = _plane(tmp_path / "missing-dir" / "upstreams.conf")
    await plane.apply(_state("one", "a"))
    with pytest.raises(DataPlaneError, match="cannot write"):
        await plane.apply(_state("two", "a"))


async def test_an_unhealthy_standby_goes_down(output: Path) -> None:
    plane = _plane(output)
    await plane.apply(_state("one", "a"))
    await plane.apply(_state("two", "a"))
    await plane.apply(_state("one", "a", c=HealthStatus.UNHEALTHY))
    assert "    server 127.0.0.1:9003 down;  # c (not eligible)\n" in _read(output)
    assert _reloads(output) == 2


_HUP_COUNTER = (
    "import signal, sys, time\n"
    "signal.signal(signal.SIGHUP, lambda *_: print('hup', flush=True))\n"
    "print('ready', flush=True)\n"
    "time.sleep(30)\n"
)


async def test_with_a_pid_file_the_agent_sends_sighup_to_the_master_itself(output: Path) -> None:
    # Stands for nginx's master: counts the SIGHUPs it gets.
    master = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _HUP_COUNTER, stdout=asyncio.subprocess.PIPE
    )
    assert master.stdout is not None
    try:
        assert await master.stdout.readline() == b"ready\n"
        pid_file = output.parent / "nginx.pid"
        pid_file.write_text(f"{master.pid}\n")
        plane = NginxDataPlane(
            output, {"one": "up_one"}, None, AgentMetrics("nginx"), reload_pid_file=pid_file
        )
        await plane.apply(_state("one", "a"))
        assert await master.stdout.readline() == b"hup\n"
        await plane.apply(_state("one", "a"))  # same text: no signal
        await plane.apply(_state("one", "b", epoch=2))
        assert await master.stdout.readline() == b"hup\n"
        assert plane.reloads == 2
        pid_file.unlink()
        with pytest.raises(DataPlaneError, match="cannot signal nginx's master"):
            await plane.apply(_state("one", "c", epoch=3))
    finally:
        master.kill()
        await master.wait()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--map", "live=relays", "--reload-pid-file", "/run/nginx.pid"], "one of --reload"),
        (["--map", "live"], "PROXY_ID=UPSTREAM"),
        (["--map", "live=bad name"], "PROXY_ID=UPSTREAM"),
        (
            ["--map", "live=relays", "--output", "/nonexistent-dir/upstreams.conf"],
            "not a directory",
        ),
        (["--map", "live=relays"], "--token"),
        (["--mode", "njs", "--map", "live=re.lays"], "in --mode njs"),
        (["--mode", "fast", "--map", "live=relays"], "--mode"),
    ],
)
def test_the_command_refuses_bad_options(
    arguments: list[str], message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PFO_TOKEN", raising=False)
    base = ["agent", "nginx", "--reload", "true", "--output", str(tmp_path / "u.conf")]
    result = CliRunner().invoke(app, [*base, *arguments])
    assert result.exit_code == 2
    assert message in result.output


def test_the_command_needs_a_reload_command_or_a_pid_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PFO_TOKEN", "t")
    base = ["agent", "nginx", "--map", "live=relays", "--output", str(tmp_path / "u.conf")]
    result = CliRunner().invoke(app, base)
    assert result.exit_code == 2
    assert "one of --reload" in result.output


# --- --mode njs ---------------------------------------------------------------------------------


def _njs_plane(output: Path, command: str | None = None) -> NginxNjsDataPlane:
    log = output.parent / "reloads.log"
    return NginxNjsDataPlane(
        output,
        {"one": "up_one", "two": "up_two"},
        command or f"echo reload >> {log}",
        AgentMetrics("nginx"),
    )


def _chosen(output: Path) -> dict[str, list[str]]:
    chosen: dict[str, list[str]] = json.loads(_read(output.with_name("upstreams.state.json")))
    return chosen


async def test_njs_mode_writes_blocks_module_and_state_then_switches_by_the_state_alone(
    output: Path,
) -> None:
    plane = _njs_plane(output)
    await plane.apply(_state("one", "a"))
    assert not _exists(output.with_name("upstreams.state.json"))  # waits for every proxy
    await plane.apply(_state("two", "b"))
    assert "upstream up_one.a {" in _read(output)
    assert _chosen(output) == {
        "up_one": ["up_one.a", "up_one.b", "up_one.c"],
        "up_two": [
            "up_two.b",
            "up_two.a",
            "up_two.c",
        ],
    }
    module = _read(output.with_name("upstreams.js"))
    assert f"var STATE = {json.dumps(str(output.with_name('upstreams.state.json')))};" in module
    assert _reloads(output) == 1
    # A planned switch: the state file changes, the blocks do not: no reload.
    await plane.apply(_state("one", "b", epoch=2))
    assert _chosen(output)["up_one"] == ["up_one.b", "up_one.a", "up_one.c"]
    assert _reloads(output) == 1
    assert plane.metrics.switches.labels("one", "drain")._value.get() == 1
    # A standby going unhealthy changes the blocks (down in the others'): one reload.
    await plane.apply(_state("one", "b", epoch=2, c=HealthStatus.UNHEALTHY))
    assert _chosen(output)["up_one"] == ["up_one.b", "up_one.a"]
    assert _reloads(output) == 2
    assert not _leftovers(output.parent)


async def test_njs_mode_restarted_reloads_only_for_a_new_module(output: Path) -> None:
    plane = _njs_plane(output)
    await plane.apply(_state("one", "a"))
    await plane.apply(_state("two", "a"))
    again = _njs_plane(output)  # the same files on disk: nothing to reload
    await again.apply(_state("one", "a"))
    await again.apply(_state("two", "a"))
    assert _reloads(output) == 1
    # Another map (a new upstream, so a new module) in front of the same files: reloaded.
    other = NginxNjsDataPlane(
        output,
        {"one": "up_one", "two": "up_two", "three": "up_three"},
        f"echo reload >> {output.parent / 'reloads.log'}",
        AgentMetrics("nginx"),
    )
    for proxy in ("one", "two", "three"):
        await other.apply(_state(proxy, "a"))
    assert "up_three: function" in _read(output.with_name("upstreams.js"))
    assert _reloads(output) == 2


async def test_njs_mode_writes_the_state_even_when_the_reload_fails(output: Path) -> None:
    plane = _njs_plane(output, "echo 'nginx down' >&2; exit 1")
    await plane.apply(_state("one", "a"))
    with pytest.raises(DataPlaneError, match="exited 1: nginx down"):
        await plane.apply(_state("two", "a"))
    assert _chosen(output)["up_two"][0] == "up_two.a"  # the switch is not held by the reload
    broken = NginxNjsDataPlane(
        output.parent / "missing-dir" / "u.conf", {"one": "up_one"}, "true", AgentMetrics("x")
    )
    with pytest.raises(DataPlaneError, match="cannot write"):
        await broken.apply(_state("one", "a"))
