"""``proxy-failover agent nginx --mode njs`` with real processes: ``serve``, three relays,
Debian's nginx with njs (an HTTP and a stream listener whose ``proxy_pass`` takes the block the
agent's njs module picks from its state file) and the agent. A planned switchover moves the
traffic with no reload (nginx's master and workers are the same processes before and after) and
no lost request; a kill -9 of the active relay under counted load; a change of the blocks (a
standby in maintenance) reloads once.

One stack per module; each test leaves edge-a active and all three relays healthy for the next,
and waits on conditions with deadlines.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.dataplanes import poll_until, stop
from tests.helpers.load import ask, moved_under_load
from tests.helpers.nginx_stack import NginxStack
from tests.helpers.polled_planes import nginx_binary
from tests.helpers.processes import free_port
from tests.helpers.relay_stack import NAMES

pytestmark = pytest.mark.slow


class Stack(NginxStack):
    njs = True

    def chosen(self) -> list[str]:
        """The blocks the state file names for the upstream, best first."""
        state = json.loads((self.directory / "upstreams.state.json").read_text())
        names: list[str] = state[self.nginx.upstream]
        return names

    def block(self, name: str) -> str:
        return f"{self.nginx.upstream}.{self.ids[name]}"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path) -> Iterator[Stack]:
    with Stack.with_nginx(tmp_path_factory, sqlite_template, "nginx-njs-agent") as built:
        yield built


def test_the_njs_module_sends_http_and_stream_traffic_to_the_active_relays_block(
    stack: Stack,
) -> None:
    stack.goes_to("edge-a")
    assert stack.chosen() == [stack.block("edge-a"), stack.block("edge-b"), stack.block("edge-c")]
    text = stack.nginx.upstreams.read_text()
    a, b, c = (stack.relays[name].address for name in NAMES)
    # One block per relay, that relay primary and the others backup.
    assert f"upstream {stack.block('edge-b')} {{\n    server {b};  # edge-b (active)\n" in text
    assert f"    server {a} backup;  # edge-a (standby)\n    server {c} backup;" in text
    known = " ".join([*(stack.block(name) for name in NAMES), "relays.none"])
    assert f'js_var $pfo_upstreams "{known}";\n' in text
    assert {ask(stack.nginx.http_port) for _ in range(10)} == {"edge-a"}
    assert {ask(stack.nginx.tcp_port) for _ in range(10)} == {"edge-a"}
    poll_until(lambda: stack.agent_metric("pfo_agent_data_plane_up") == 1)
    assert not list(stack.directory.glob(".upstreams.*"))  # no temporary file left


def test_planned_switchover_moves_the_traffic_without_a_reload_or_a_lost_request(
    stack: Stack,
) -> None:
    stack.back_to_edge_a()
    processes, reloads = stack.nginx.processes(), stack.reloads()
    loads, _ = moved_under_load(stack.listeners, stack.switch_to_edge_b)
    for load in loads:
        counts = load.counts()
        assert counts[None] == 0, counts  # not one request lost
        assert counts["edge-a"] > 0, counts
        assert counts["edge-b"] >= 5, counts
    assert stack.chosen()[0] == stack.block("edge-b")
    # Same master, no new worker: nginx was not reloaded; the agent ran no reload command. (A
    # worker of an earlier test's reload may still be draining and exit meanwhile: a subset.)
    master, workers = processes
    after = stack.nginx.processes()
    assert after[0] == master, (processes, after)
    assert after[1] <= workers, (processes, after)
    assert stack.reloads() == reloads
    stack.back_to_edge_a()
    after = stack.nginx.processes()
    assert after[0] == master, (processes, after)
    assert after[1] <= workers, (processes, after)


def test_kill_9_of_the_active_relay_moves_traffic_to_the_next(stack: Stack) -> None:
    stack.back_to_edge_a()
    reloads = stack.reloads()
    loads, _ = moved_under_load(stack.listeners, stack.kill_edge_a)
    # nginx moves a refused connect to the backups of edge-a's block by itself, before the
    # control plane decides; the state file then names edge-b's block.
    for load in loads:
        counts = load.counts()
        assert counts["edge-b"] >= 5, counts
        assert counts[None] <= 1, counts
    poll_until(lambda: stack.chosen()[0] == stack.block("edge-b"))
    # edge-a is no longer eligible: it is down in the others' blocks, which took a reload.
    poll_until(lambda: "edge-a (not eligible)" in stack.nginx.upstreams.read_text())
    poll_until(lambda: stack.reloads() > reloads)
    assert stack.block("edge-a") not in stack.chosen()
    stack.back_to_edge_a()


def test_a_change_of_the_blocks_reloads_once_and_the_state_alone_none(stack: Stack) -> None:
    stack.back_to_edge_a()
    reloads = stack.reloads()
    applies = stack.reconciles()
    poll_until(lambda: stack.reconciles() >= applies + 2, within=10)
    assert stack.reloads() == reloads  # reconciles of an unchanged state: nothing reloaded
    path = f"/proxy/instances/{stack.ids['edge-c']}"
    stack.cp.call("PATCH", path, json={"adminState": "maintenance"})
    try:
        poll_until(lambda: "edge-c (not eligible)" in stack.nginx.upstreams.read_text())
        poll_until(lambda: stack.reloads() == reloads + 1)
        assert stack.chosen() == [stack.block("edge-a"), stack.block("edge-b")]
    finally:
        stack.cp.call("PATCH", path, json={"adminState": "enabled"})
    poll_until(lambda: "edge-c (not eligible)" not in stack.nginx.upstreams.read_text())
    poll_until(lambda: stack.reloads() == reloads + 2)
    stack.goes_to("edge-a")


def _docs_nginx_conf(replacements: dict[str, str]) -> str:
    """The nginx.conf of docs/dataplanes.md's njs walkthrough, with ``replacements`` made."""
    text = (Path(__file__).parents[2] / "docs" / "dataplanes.md").read_text()
    opening = "cat > nginx-njs/nginx.conf <<'EOF'\n"
    start = text.index(opening) + len(opening)
    conf = text[start : text.index("\nEOF\n", start)]
    for old, new in replacements.items():
        assert old in conf, f"{old!r} is no longer in the docs' nginx.conf"
        conf = conf.replace(old, new)
    return conf + "\n"


def test_the_nginx_conf_of_the_docs_runs_as_written(stack: Stack) -> None:
    stack.back_to_edge_a()
    http_port, tcp_port = free_port(), free_port()
    # Its own prefix beside the agent's files (the docs' paths are relative to the prefix); as
    # root, the user line the walkthrough's note asks for.
    user = "daemon off;\nuser root;" if os.geteuid() == 0 else "daemon off;"
    conf = _docs_nginx_conf(
        {
            "127.0.0.1:9080": f"127.0.0.1:{http_port}",
            "127.0.0.1:9081": f"127.0.0.1:{tcp_port}",
            "daemon off;": user,
        }
    )
    prefix = stack.directory / "docs-nginx"
    (prefix / "tmp").mkdir(parents=True)
    (prefix / "nginx.conf").write_text(conf)
    for name in ("upstreams.conf", "upstreams.js"):
        (prefix / name).symlink_to(stack.directory / name)
    command = [nginx_binary(), "-p", str(prefix), "-c", "nginx.conf", "-e", "error.log"]
    nginx = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for port in (http_port, tcp_port):
            poll_until(lambda p=port: ask(p) == "edge-a")  # type: ignore[misc]
        stack.switch_to_edge_b()
        for port in (http_port, tcp_port):
            poll_until(lambda p=port: ask(p) == "edge-b")  # type: ignore[misc]
        # njs read the state file (an unreadable one is logged and sends to relays.none).
        assert "proxy-failover:" not in (prefix / "error.log").read_text()
    finally:
        stop(nginx)
    stack.back_to_edge_a()
