"""The HAProxy agent with real processes: ``serve``, three relays, the Debian ``haproxy`` and
``proxy-failover agent haproxy``; kill -9, reloads, the agent and the control plane stopped.

One stack per module (starting it costs seconds); each test leaves edge-a active and all three
relays healthy for the next, and waits on conditions with deadlines.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from proxy_failover.adapters.dataplanes.haproxy import (
    DEFAULT_SERVER_OPTIONS,
    HaproxyDataPlane,
    RuntimeApi,
    parse_server_options,
)
from proxy_failover.adapters.dataplanes.metrics import AgentMetrics
from proxy_failover.core.dataplane import desired_state, moved_by_event
from tests.helpers.dataplanes import Haproxy, answered_by, poll_until, stop
from tests.helpers.factories import inst
from tests.helpers.relay_stack import NAMES, RelayStack

pytestmark = pytest.mark.slow

PROXY_FAILOVER = [sys.executable, "-m", "proxy_failover"]


class Stack(RelayStack):
    haproxy: Haproxy
    agent: subprocess.Popen[str] | None = None

    def start_agent(self) -> None:
        self.agent = self.run_agent(
            *("agent", "haproxy", "--socket", self.haproxy.socket),
            *("--map", f"live={self.haproxy.backend}"),
            log="agent.log",
        )

    def stop_agent(self, *, kill: bool = False) -> None:
        stop(self.agent, kill=kill)

    def through_haproxy(self) -> str | None:
        return answered_by(self.haproxy.url + "/")

    def ready(self) -> set[str]:
        """Servers of the instances that are not in maintenance."""
        servers = self.haproxy.servers()
        return {name for name in NAMES if name in servers and not servers[name][1] & 0x01}

    def goes_to(self, name: str, within: float = 10.0) -> None:
        poll_until(lambda: self.through_haproxy() == name, within=within)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path) -> Iterator[Stack]:
    with Stack.running(tmp_path_factory, sqlite_template, "haproxy-agent") as built:
        built.haproxy = Haproxy(built.directory)
        try:
            built.haproxy.start()
            built.start_agent()
            yield built
        finally:
            built.stop_agent()
            built.haproxy.stop()


def test_agent_fills_the_backend_and_only_the_active_instance_takes_traffic(stack: Stack) -> None:
    stack.goes_to("edge-a")
    poll_until(lambda: set(stack.haproxy.servers()) >= set(NAMES))
    poll_until(lambda: stack.ready() == {"edge-a"})
    assert {stack.through_haproxy() for _ in range(10)} == {"edge-a"}
    assert stack.agent_metric("pfo_agent_control_plane_up") == 1


def test_kill_9_of_the_active_relay_moves_traffic_to_the_next(stack: Stack) -> None:
    stack.back_to_edge_a()
    stack.relays["edge-a"].kill()
    stack.goes_to("edge-b")
    # edge-b is made ready before edge-a goes to maintenance (make before break): wait for both.
    poll_until(lambda: stack.ready() == {"edge-b"})
    stack.back_to_edge_a()


def test_standbys_have_ready_backup_servers_with_haproxys_own_checks(stack: Stack) -> None:
    stack.back_to_edge_a()

    def backups() -> dict[str, bool]:
        servers = stack.haproxy.servers()
        return {
            name: not servers[f"{name}.backup"][1] & 0x01
            for name in NAMES
            if f"{name}.backup" in servers
        }

    poll_until(lambda: backups() == {"edge-a": False, "edge-b": True, "edge-c": True})
    # show stat: CSV with a "# pxname,svname,..." header; bck = 1 for backup servers.
    header, *lines = stack.haproxy.runtime("show stat").splitlines()
    columns = header.removeprefix("# ").split(",")
    rows = {
        row[1]: dict(zip(columns, row, strict=False))
        for row in (line.split(",") for line in lines if line)
        if row[0] == stack.haproxy.backend
    }
    assert rows["edge-b.backup"]["bck"] == "1"
    assert rows["edge-a"]["bck"] == "0"
    assert rows["edge-a"]["check_status"] not in ("", "NO_CHECK")  # HAProxy's own checks


def test_haproxy_fails_over_to_a_backup_before_the_control_plane_decides(stack: Stack) -> None:
    """Automatic failover off: the control plane keeps edge-a active after its kill -9, yet
    HAProxy (its own checks and observe layer4) sends new connections to a standby's backup."""
    stack.back_to_edge_a()
    with stack.toggled("enableAutoFailover", False):
        stack.relays["edge-a"].kill()
        poll_until(lambda: stack.through_haproxy() in ("edge-b", "edge-c"))
        assert stack.cp.active() == "edge-a"  # nobody decided anything
        assert stack.ready() == {"edge-a"}  # the agent still follows the control plane
    # The control plane's choice then takes over as the one active server.
    poll_until(lambda: stack.cp.active() == "edge-b", within=15)
    poll_until(lambda: stack.ready() == {"edge-b"})
    stack.back_to_edge_a()


def test_planned_switchover_drains_open_sessions_and_unhealthy_source_cuts_them(
    stack: Stack,
) -> None:
    stack.back_to_edge_a()
    stack.drain_then_cut(stack.haproxy.port, stack.through_haproxy)
    stack.back_to_edge_a()


def test_haproxy_reload_loses_runtime_state_and_the_agent_restores_it(stack: Stack) -> None:
    stack.back_to_edge_a()
    stack.cp.switch(stack.ids["edge-a"], stack.ids["edge-c"])
    stack.goes_to("edge-c")
    agent_log = stack.directory / "agent.log"
    added = agent_log.read_text().count("added server")
    stack.haproxy.reload()  # returns once the new worker answers the socket
    # The new worker starts from the file (an empty backend): the agent re-adds every server (its
    # log says so) and puts edge-c back in charge within its reconcile period (1 s here).
    poll_until(lambda: agent_log.read_text().count("added server") >= added + len(NAMES))
    poll_until(lambda: set(stack.haproxy.servers()) >= set(NAMES) and stack.ready() == {"edge-c"})
    stack.goes_to("edge-c")
    stack.back_to_edge_a()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_agent_killed_then_restarted_applies_what_changed_meanwhile(stack: Stack) -> None:
    stack.back_to_edge_a()
    stack.stop_agent(kill=True)
    stack.cp.switch(stack.ids["edge-a"], stack.ids["edge-b"])
    assert {stack.through_haproxy() for _ in range(5)} == {"edge-a"}  # nobody applied it
    stack.start_agent()
    stack.goes_to("edge-b")
    stack.back_to_edge_a()


def test_control_plane_stopped_traffic_keeps_the_last_state(stack: Stack) -> None:
    stack.back_to_edge_a()
    stack.serve.stop(kill=True)  # a crash: no goodbye to the stream either
    try:
        poll_until(lambda: stack.agent_metric("pfo_agent_control_plane_up") == 0, within=10)
        deadline = time.monotonic() + 2.5  # a few reconcile periods without the control plane
        while time.monotonic() < deadline:
            assert stack.through_haproxy() == "edge-a"
        assert "control plane unreachable" in (stack.directory / "agent.log").read_text()
    finally:
        stack.serve.start()
    poll_until(lambda: stack.agent_metric("pfo_agent_control_plane_up") == 1, within=10)
    stack.back_to_edge_a()


def test_load_balancing_makes_every_eligible_instance_ready_at_its_weight(stack: Stack) -> None:
    stack.back_to_edge_a()

    def weights() -> dict[str, int]:
        text = stack.haproxy.runtime(f"show servers state {stack.haproxy.backend}")
        rows = [line.split() for line in text.splitlines() if " relays " in line]
        return {row[3]: int(row[7]) for row in rows if not int(row[6]) & 0x01}

    with stack.toggled("enableLoadBalancing", True):
        stack.set_weight("edge-c", 300)
        try:
            # Every instance ready; weights 100/100/300 scaled into HAProxy's 0-256.
            poll_until(lambda: weights() == {"edge-a": 85, "edge-b": 85, "edge-c": 256})
            poll_until(lambda: {stack.through_haproxy() for _ in range(12)} == set(NAMES))
        finally:
            stack.set_weight("edge-c", 100)
    poll_until(lambda: {stack.through_haproxy() for _ in range(5)} == {"edge-a"})


@pytest.mark.parametrize(
    "text",
    ["check;shutdown sessions server relays/edge-a", "check inter\x011s", "backup", "weight 5"],
)
def test_server_options_that_could_reach_the_runtime_api_as_commands_are_refused(
    text: str,
) -> None:
    with pytest.raises(ValueError, match="server option"):
        parse_server_options(text)
    assert parse_server_options(DEFAULT_SERVER_OPTIONS)[0] == "check"
    assert parse_server_options("") == ()
    answer = subprocess.run(
        [
            *PROXY_FAILOVER,
            "agent",
            "haproxy",
            "--socket",
            "/x",
            "--map",
            "p=b",
            "--token",
            "t",
            "--server-options",
            text,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert answer.returncode == 2
    assert "--server-options" in answer.stderr


class RecordingRuntimeApi(RuntimeApi):
    """A Runtime API that records each connection's line and answers like HAProxy 2.6 would for
    an empty backend ``relays`` that the agent fills (servers keep the states set on them)."""

    def __init__(self) -> None:
        super().__init__("/nowhere")
        self.lines: list[str] = []
        self.on_spare: list[str] = []  # lines written on the connection opened ahead of time
        self.prepared = 0
        self.servers: dict[str, list[str]] = {}

    async def prepare(self) -> None:
        self.prepared += 1

    async def execute(self, command: str, *, spare: bool = False) -> str:
        self.lines.append(command)
        if spare:
            self.on_spare.append(command)
        answers = []
        for part in command.split(";"):
            words = part.split()
            if part.startswith("show servers state"):
                rows = [
                    f"3 relays {n} {name} {addr} 2 {admin} {w} {w} 0 1 0 2 6 0 0 0 - {port}"
                    " - 0 0 - - 0"
                    for n, (name, (addr, port, admin, w)) in enumerate(self.servers.items(), 1)
                ]
                header = "# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state "
                header += "srv_uweight srv_iweight srv_time_since_last_change srv_check_status "
                header += "srv_check_result srv_check_health srv_check_state srv_agent_state "
                header += "bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord "
                header += "srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port"
                answers.append("\n".join(["1", header, *rows]))
            elif part.startswith("add server"):
                addr, port = words[3].rsplit(":", 1)
                weight = words[words.index("weight") + 1]
                self.servers[words[2].split("/")[1]] = [addr, port, "1", weight]
                answers.append("New server registered.")
            elif part.startswith("set server") and words[3] == "state":
                self.servers[words[2].split("/")[1]][2] = "1" if words[4] == "maint" else "0"
                answers.append("")
            else:
                answers.append("")
        return "\n".join(answers) + "\n"


async def test_an_event_moves_haproxy_traffic_in_one_round_trip() -> None:
    """A move told by an event goes as one line of ';'-separated commands, ready before maint,
    without reading the servers first; a full apply reads them first."""
    api = RecordingRuntimeApi()
    plane = HaproxyDataPlane(
        api, {"p": "relays"}, AgentMetrics("test"), standby_backups=True, server_options=("check",)
    )
    instances = [inst(n, priority=i, endpoint=f"127.0.0.1:{9000 + i}") for i, n in enumerate("ab")]
    before = desired_state("p", instances, "a", 1, load_balanced=False)
    await plane.apply(before)
    assert api.lines[0] == "show servers state relays"
    assert {name: state[2] for name, state in api.servers.items()} == {
        "a": "0",
        "a.backup": "1",
        "b": "1",
        "b.backup": "0",
    }
    assert api.on_spare == []
    assert api.prepared == 1  # the next event's connection
    api.lines.clear()
    moved = moved_by_event(before, "b", 2)
    assert moved is not None
    await plane.apply_from_event(moved)
    assert (
        api.lines
        == api.on_spare
        == [
            "set server relays/b state ready;set server relays/a.backup state ready;"
            "set server relays/a state maint;set server relays/b.backup state maint"
        ]
    )
    assert api.prepared == 1  # the event's apply opens none (the full read that follows does)
    api.lines.clear()
    await plane.apply(moved)  # the full apply that follows: a read, nothing left to change
    assert api.lines == ["show servers state relays"]
    assert len(api.on_spare) == 1
    assert api.prepared == 2


async def test_a_line_for_a_spare_connection_haproxy_closed_goes_on_a_new_one(
    tmp_path: Path,
) -> None:
    """HAProxy closes an idle Runtime API connection (its ``stats timeout``): the line meant
    for it still runs, on a new connection, and its answer is HAProxy's."""
    haproxy = Haproxy(tmp_path).start()
    try:
        api = RuntimeApi(haproxy.socket)
        await api.prepare()
        # The spare is the CLI session older than the one asking (age counts whole seconds).
        spare: list[str] = []

        def spare_seen() -> bool:
            spare[:] = [
                line.split(":")[0]
                for line in haproxy.runtime("show sess").splitlines()
                if "fe=GLOBAL" in line and " age=0s " not in line
            ]
            return len(spare) == 1

        poll_until(spare_seen, within=5)
        haproxy.runtime(f"shutdown session {spare[0]}")
        poll_until(lambda: spare[0] not in haproxy.runtime("show sess"), within=5)
        answer = await api.execute(
            f"add server {haproxy.backend}/x 127.0.0.1:9 weight 1", spare=True
        )
        assert answer.startswith("New server registered")
        assert "x" in haproxy.servers()
    finally:
        haproxy.stop()


def _cli_sessions(haproxy: Haproxy) -> int:
    """Runtime API connections open on the worker answering the socket, the asking one included."""
    return haproxy.runtime("show sess").count("fe=GLOBAL")


async def test_the_connection_kept_for_events_follows_an_haproxy_reload(tmp_path: Path) -> None:
    """The connection opened ahead of time for the next event is replaced by every full apply:
    after a reload the one to the old, stopping worker is closed (it would keep that worker
    alive until HAProxy's 10 s idle timeout and take an event's commands there), and the new
    worker holds the next one."""
    haproxy = Haproxy(tmp_path).start()
    try:
        api = RuntimeApi(haproxy.socket)
        plane = HaproxyDataPlane(api, {"p": "relays"}, AgentMetrics("test"))
        state = desired_state("p", [inst("a", endpoint="127.0.0.1:9")], "a", 1, load_balanced=False)
        await plane.apply(state)
        assert _cli_sessions(haproxy) == 2  # the asking one and the one kept for events
        old_worker = haproxy.worker_pid()
        assert old_worker is not None
        haproxy.reload()
        assert _cli_sessions(haproxy) == 1  # the new worker: nothing kept there yet
        await plane.apply(state)  # the reconcile after a reload
        assert haproxy.servers()["a"][1] & 0x01 == 0  # restored, and ready
        assert _cli_sessions(haproxy) == 2
        poll_until(lambda: not _alive(old_worker), within=5)
        await api.aclose()
    finally:
        haproxy.stop()
