"""The shared agent loop against a scripted control plane (httpx's MockTransport): fencing of older
epochs (a lagging replica, a late event), stream resume with Last-Event-ID, keeping the last state
while the control plane is down. The real control plane is exercised by the HAProxy and forwarder
tests; only a scripted one can answer with an older epoch on demand.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from proxy_failover.adapters.dataplanes.agent import AgentSettings, DataPlaneError, ProxyFollower
from proxy_failover.adapters.dataplanes.metrics import AgentMetrics
from proxy_failover.client import AsyncFailoverClient
from proxy_failover.core.dataplane import DesiredState, SwitchPolicy, leaving_policy
from tests.helpers.processes import wait_for


@dataclass
class ScriptedControlPlane:
    """Answers config, instances and redundancy for proxy ``p`` at ``epoch`` with ``active``
    active; the stream replays ``events`` after the client's Last-Event-ID."""

    epoch: int = 5
    active: str = "i-a"
    up: bool = True
    events: list[tuple[int, str, dict[str, Any]]] = field(default_factory=list)
    stream_requests: list[str | None] = field(default_factory=list)
    reads_held: asyncio.Event | None = None  # REST reads wait until it is set

    async def handler(self, request: httpx.Request) -> httpx.Response:
        if not self.up:
            raise httpx.ConnectError("connection refused", request=request)
        path = request.url.path
        if self.reads_held is not None and not path.endswith("/stream"):
            await self.reads_held.wait()
        if path.endswith("/stream"):
            last = request.headers.get("Last-Event-ID")
            self.stream_requests.append(last)
            body = "".join(
                f"id: {seq}\nevent: {kind}\ndata: {json.dumps(data)}\n\n"
                for seq, kind, data in self.events
                if last is None or seq > int(last)
            )
            return httpx.Response(
                200, text=": connected\n\n" + body, headers={"content-type": "text/event-stream"}
            )
        if path == "/proxy/failover/config/p":
            data: Any = {"proxyId": "p", "userId": "u"}
        elif path == "/proxy/p/instances":
            data = [
                {
                    "id": iid,
                    "proxyId": "p",
                    "userId": "u",
                    "instanceName": iid,
                    "endpoint": f"127.0.0.1:{port}",
                    "priority": port,
                    "healthStatus": "healthy",
                    "isActive": iid == self.active,
                }
                for iid, port in (("i-a", 1001), ("i-b", 1002))
            ]
        elif path == "/proxy/p/redundancy":
            data = {"proxyId": "p", "activeInstanceId": self.active, "epoch": self.epoch}
        else:
            return httpx.Response(404, json={"error": {"code": "PROXY_FAILOVER_020"}})
        return httpx.Response(200, json={"data": data})


@dataclass
class RecordingPlane:
    applied: list[DesiredState] = field(default_factory=list)
    #: The states applied through ``apply_from_event`` (also in ``applied``).
    told: list[DesiredState] = field(default_factory=list)
    failing: bool = False

    async def apply(self, state: DesiredState) -> None:
        if self.failing:
            raise DataPlaneError("data plane down")
        self.applied.append(state)

    async def apply_from_event(self, state: DesiredState) -> None:
        await self.apply(state)
        self.told.append(state)


def _follower(
    cp: ScriptedControlPlane, plane: RecordingPlane
) -> tuple[ProxyFollower, AgentMetrics, AsyncFailoverClient]:
    client = AsyncFailoverClient("http://cp", "token", transport=httpx.MockTransport(cp.handler))
    metrics = AgentMetrics("test")
    settings = AgentSettings(reconcile_seconds=3600, retry_seconds=0.01)
    return ProxyFollower("p", client, plane, metrics, settings), metrics, client


@contextlib.asynccontextmanager
async def _running(follower: ProxyFollower, cp: ScriptedControlPlane) -> AsyncIterator[None]:
    """The follower's loop as a task for the block; held reads let go, then the loop cancelled."""
    task = asyncio.create_task(follower.run())
    try:
        yield
    finally:
        if cp.reads_held is not None:
            cp.reads_held.set()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def _sample(metrics: AgentMetrics, name: str) -> float:
    value = metrics.registry.get_sample_value(name, {"proxy_id": "p"})
    return value or 0.0


async def test_a_state_older_than_the_applied_epoch_is_ignored() -> None:
    cp, plane = ScriptedControlPlane(epoch=5, active="i-a"), RecordingPlane()
    follower, metrics, client = _follower(cp, plane)
    async with client:
        assert await follower.sync("start")
        cp.epoch, cp.active = 4, "i-b"  # a lagging replica still says i-b at epoch 4
        assert await follower.sync("reconcile")
        assert [(s.epoch, s.active_instance_id) for s in plane.applied] == [(5, "i-a")]
        assert _sample(metrics, "pfo_agent_stale_ignored_total") == 1
        cp.epoch = 6
        assert await follower.sync("reconcile")
        assert plane.applied[-1].epoch == 6
        assert _sample(metrics, "pfo_agent_applied_epoch") == 6


async def test_an_event_older_than_the_applied_epoch_triggers_nothing_and_the_stream_resumes() -> (
    None
):
    cp, plane = ScriptedControlPlane(epoch=5), RecordingPlane()
    cp.events = [(7, "failover.completed", {"epoch": 3})]
    follower, metrics, client = _follower(cp, plane)
    async with client:
        assert await follower.sync("start")
        async with _running(follower, cp):
            await wait_for(lambda: _async(follower.last_event_id == 7))
            await wait_for(lambda: _async(_sample(metrics, "pfo_agent_stale_ignored_total") == 1))
            assert {s.epoch for s in plane.applied} == {5}
            # The server closed the stream; the agent reconnects from where it was.
            await wait_for(lambda: _async("7" in cp.stream_requests))
            cp.epoch, cp.active = 8, "i-b"
            cp.events.append((8, "failover.completed", {"epoch": 8}))
            await wait_for(lambda: _async(plane.applied[-1].epoch == 8))
            assert plane.applied[-1].active_instance_id == "i-b"


async def test_a_switch_event_is_applied_at_once_and_a_lagging_read_does_not_undo_it() -> None:
    cp, plane = ScriptedControlPlane(epoch=5, active="i-a"), RecordingPlane()
    switch = {"eventType": "failover", "targetInstanceId": "i-b", "sourceInstanceId": "i-a"}
    follower, metrics, client = _follower(cp, plane)
    async with client:
        assert await follower.sync("start")
        # The event arrives; the REST reads still answer epoch 5 (a replica that lags).
        cp.events = [(9, "failover.completed", {"epoch": 6, "data": switch})]
        async with _running(follower, cp):
            await wait_for(lambda: _async(any(s.epoch == 6 for s in plane.applied)))
            await wait_for(lambda: _async(_sample(metrics, "pfo_agent_stale_ignored_total") >= 1))
            applied = [(s.epoch, s.active_instance_id) for s in plane.applied]
            assert applied[-1] == (6, "i-b")
            assert all(epoch == 6 for epoch, _ in applied[applied.index((6, "i-b")) :])


async def test_a_switch_event_is_applied_while_a_full_read_hangs() -> None:
    """The event moves the traffic at once; it does not queue behind a read in flight."""
    cp, plane = ScriptedControlPlane(epoch=5, active="i-a"), RecordingPlane()
    switch = {"eventType": "switchover", "targetInstanceId": "i-b", "sourceInstanceId": "i-a"}
    follower, metrics, client = _follower(cp, plane)
    async with client:
        assert await follower.sync("start")
        cp.reads_held = asyncio.Event()  # every read from now on hangs
        cp.events = [(9, "failover.started", {"epoch": 6, "data": switch})]
        async with _running(follower, cp):
            await wait_for(lambda: _async(plane.applied[-1].epoch == 6))
            assert plane.applied[-1].active_instance_id == "i-b"
            # The told state took the data plane's event path; the start's read did not.
            assert plane.told == [plane.applied[-1]]
            source = plane.applied[-1].target("i-a")
            assert source is not None
            assert source.healthy  # a planned move: i-a drains
            # The agent's own part of the follow time, from the event's arrival, is measured.
            assert _sample(metrics, "pfo_agent_event_apply_seconds_count") == 1
            assert 0 < _sample(metrics, "pfo_agent_event_apply_seconds_sum") < 10


async def test_a_health_event_makes_the_failover_that_follows_cut_the_source() -> None:
    """instance.unhealthy then failover.completed, both ahead of any read: the moved state knows
    its source is unhealthy, so a data plane cuts its connections instead of draining them."""
    cp, plane = ScriptedControlPlane(epoch=5, active="i-a"), RecordingPlane()
    failover = {"eventType": "failover", "targetInstanceId": "i-b", "sourceInstanceId": "i-a"}
    follower, _metrics, client = _follower(cp, plane)
    async with client:
        assert await follower.sync("start")
        cp.reads_held = asyncio.Event()
        cp.events = [
            (
                3,
                "instance.unhealthy",
                {"epoch": 5, "data": {"instanceId": "i-a", "status": "unhealthy"}},
            ),
            (4, "failover.completed", {"epoch": 6, "data": failover}),
        ]
        async with _running(follower, cp):
            await wait_for(lambda: _async(plane.applied[-1].epoch == 6))
            moved = plane.applied[-1]
            source = moved.target("i-a")
            assert moved.active_instance_id == "i-b"
            assert source is not None
            assert (source.healthy, source.serving) == (False, False)
            assert leaving_policy(source) is SwitchPolicy.CUT


async def test_control_plane_down_keeps_the_last_state_and_says_so() -> None:
    cp, plane = ScriptedControlPlane(epoch=5), RecordingPlane()
    follower, metrics, client = _follower(cp, plane)
    async with client:
        assert await follower.sync("start")
        cp.up = False
        assert not await follower.sync("reconcile")
        assert follower.applied is not None
        assert follower.applied.epoch == 5
        assert len(plane.applied) == 1  # nothing was torn down
        assert _sample(metrics, "pfo_agent_control_plane_up") == 0
        plane.failing = True
        cp.up = True
        assert not await follower.sync("reconcile")
        assert _sample(metrics, "pfo_agent_control_plane_up") == 1
        assert _sample(metrics, "pfo_agent_data_plane_up") == 0
        plane.failing = False
        assert await follower.sync("retry")
        assert _sample(metrics, "pfo_agent_data_plane_up") == 1


async def _async(value: object) -> object:
    return value
