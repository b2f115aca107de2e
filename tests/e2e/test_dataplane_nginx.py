"""``proxy-failover agent nginx`` with real processes: ``serve``, three relays, Debian's nginx (an
HTTP and a stream listener including the one rendered file) and the agent; a planned switchover
and a kill -9 under counted load, reloads only on a change.

One stack per module (starting it costs seconds); each test leaves edge-a active and all three
relays healthy for the next, and waits on conditions with deadlines.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.dataplanes import poll_until, stop
from tests.helpers.load import ask, moved_under_load
from tests.helpers.nginx_stack import NginxStack as Stack
from tests.helpers.relay_stack import NAMES

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path) -> Iterator[Stack]:
    with Stack.with_nginx(tmp_path_factory, sqlite_template, "nginx-agent") as built:
        yield built


def test_the_rendered_file_sends_http_and_stream_traffic_to_the_active_relay(stack: Stack) -> None:
    stack.goes_to("edge-a")
    text = stack.nginx.upstreams.read_text()
    a, b, c = (stack.relays[name].address for name in NAMES)
    assert f"    server {a};  # edge-a (active)\n" in text
    assert f"    server {b} backup;  # edge-b (standby)\n" in text
    assert f"    server {c} backup;  # edge-c (standby)\n" in text
    assert {ask(stack.nginx.http_port) for _ in range(10)} == {"edge-a"}
    assert {ask(stack.nginx.tcp_port) for _ in range(10)} == {"edge-a"}
    # Its first reload failed (nginx was not running yet) and was retried.
    poll_until(lambda: stack.agent_metric("pfo_agent_data_plane_up") == 1)
    assert not list(stack.directory.glob(".upstreams.conf.*"))  # no temporary file left


def test_planned_switchover_loses_no_request_and_reloads_once(stack: Stack) -> None:
    stack.back_to_edge_a()
    before = stack.reloads()
    loads, _ = moved_under_load(stack.listeners, stack.switch_to_edge_b)
    for load in loads:
        counts = load.counts()
        assert counts[None] == 0, counts  # not one request lost
        assert counts["edge-a"] > 0, counts
        assert counts["edge-b"] >= 5, counts
    assert stack.reloads() == before + 1
    stack.back_to_edge_a()


def test_kill_9_of_the_active_relay_moves_traffic_to_the_next(stack: Stack) -> None:
    stack.back_to_edge_a()
    loads, _ = moved_under_load(stack.listeners, stack.kill_edge_a)
    # nginx moves a refused connect to the backup servers itself (edge-b and edge-c in turn),
    # before the control plane decides; the agent then makes edge-b the primary, edge-a down.
    for load in loads:
        counts = load.counts()
        assert counts["edge-b"] >= 5, counts
        assert counts[None] <= 1, counts
    poll_until(lambda: "edge-a (not eligible)" in stack.nginx.upstreams.read_text())
    stack.back_to_edge_a()


def test_reload_runs_only_when_the_text_changes(stack: Stack) -> None:
    stack.back_to_edge_a()
    before = stack.reloads()
    applies = stack.reconciles()
    poll_until(lambda: stack.reconciles() >= applies + 2, within=10)
    assert stack.reloads() == before  # reconciles of an unchanged state: no reload
    # A standby put in maintenance changes its line (backup -> down): one reload, and one
    # more when it is enabled again.
    path = f"/proxy/instances/{stack.ids['edge-c']}"
    stack.cp.call("PATCH", path, json={"adminState": "maintenance"})
    try:
        poll_until(lambda: "edge-c (not eligible)" in stack.nginx.upstreams.read_text())
        poll_until(lambda: stack.reloads() == before + 1)
    finally:
        stack.cp.call("PATCH", path, json={"adminState": "enabled"})
    poll_until(lambda: "edge-c (standby)" in stack.nginx.upstreams.read_text())
    poll_until(lambda: stack.reloads() == before + 2)
    stack.back_to_edge_a()


def test_agent_restarted_on_an_unchanged_file_does_not_reload(stack: Stack) -> None:
    stack.back_to_edge_a()
    poll_until(lambda: "edge-c (standby)" in stack.nginx.upstreams.read_text())
    stop(stack.agent)
    before = stack.reloads()
    stack.start_agent()
    poll_until(
        lambda: stack.agent_metric("pfo_agent_data_plane_up") == 1,
        within=15,
    )
    assert stack.reloads() == before
    stack.goes_to("edge-a")
