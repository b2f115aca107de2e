"""The engine end to end: real service on SQLite, real instance processes, real probes, kill -9.

Intervals are 0.1 s so each scenario takes a second or two; every wait polls a condition with a
deadline. Figures (how fast) belong to bench/failover.py, not here.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from proxy_failover.adapters.probes import Prober
from proxy_failover.bootstrap import open_service
from proxy_failover.core.model import EventStatus, EventType, FailoverEvent, HealthStatus
from proxy_failover.engine import Engine
from proxy_failover.service import ProxyFailoverService
from tests.helpers.processes import InstanceProcess, wait_for

pytestmark = pytest.mark.slow

FAST = {
    # Killed instances refuse at once, so no test here waits on the timeout; 80 ms made a
    # healthy instance's first probe miss once on a busy machine (the wrong one was activated).
    "healthCheckIntervalSeconds": 0.2,
    "healthCheckTimeoutSeconds": 0.2,
    "unhealthyThreshold": 2,
    "healthyThreshold": 2,
}


@pytest.fixture
async def service(database_url: str) -> AsyncIterator[ProxyFailoverService]:
    """The real service with the real clock, on SQLite and on PostgreSQL (row locks)."""
    async with open_service(database_url, migrate=False) as svc:
        yield svc


@pytest.fixture
async def sqlite_service(sqlite_url: str) -> AsyncIterator[ProxyFailoverService]:
    """SQLite only, for scenarios whose storage path the two above already cover."""
    async with open_service(sqlite_url, migrate=False) as svc:
        yield svc


@asynccontextmanager
async def running_engine(service: ProxyFailoverService) -> AsyncIterator[Engine]:
    prober = Prober()
    engine = Engine(service, prober)
    service.on_change = engine.notify
    task = asyncio.create_task(engine.run())
    try:
        yield engine
    finally:
        engine.stop()
        await task
        service.on_change = None
        await prober.aclose()


async def setup_proxy(
    service: ProxyFailoverService,
    instances: list[InstanceProcess],
    recovery_url: str | None = None,
    **config: Any,
) -> list[str]:
    await service.create_failover_configuration("edge", "owner", {**FAST, **config})
    ids = []
    for n, proc in enumerate(instances):
        data: dict[str, Any] = {
            "instanceName": f"edge-{'abc'[n]}",
            "endpoint": proc.endpoint,
            "priority": n + 1,
        }
        if recovery_url and n == 0:
            data["recoveryUrl"] = recovery_url
        ids.append((await service.register_proxy_instance("edge", "owner", data)).id)
    return ids


async def active_of(service: ProxyFailoverService) -> str | None:
    status = await service.get_redundancy_status("edge")
    return status.active_instance_id if status else None


def becomes_active(service: ProxyFailoverService, instance_id: str) -> Any:
    async def check() -> bool:
        return await active_of(service) == instance_id

    return check


async def switch_events(service: ProxyFailoverService) -> list[FailoverEvent]:
    events = await service.get_failover_events("edge", 100)
    return sorted(
        (e for e in events if e.event_type is not EventType.RECOVERY), key=lambda e: e.epoch
    )


async def test_kill_active_fails_over_by_priority_then_recovers_without_failback(
    service: ProxyFailoverService, instances: list[InstanceProcess]
) -> None:
    a, b, _ = await setup_proxy(service, instances)
    async with running_engine(service):
        await wait_for(becomes_active(service, a))
        instances[0].kill()
        await wait_for(becomes_active(service, b))
        [activation, failover] = await switch_events(service)
        assert (activation.source_instance_id, activation.target_instance_id) == (None, a)
        assert (failover.source_instance_id, failover.target_instance_id) == (a, b)
        assert failover.event_type is EventType.FAILOVER
        assert failover.status is EventStatus.COMPLETED
        assert failover.triggered_by == "system"
        assert failover.reason == "active edge-a unhealthy (2 failures): failing over to edge-b"
        status = await service.get_redundancy_status("edge")
        assert status is not None
        assert status.is_degraded
        assert status.epoch == failover.epoch

        instances[0].restart()

        async def recovered() -> list[FailoverEvent]:
            events = await service.get_failover_events("edge", 100, event_type=EventType.RECOVERY)
            return [e for e in events if e.target_instance_id == a]

        [recovery] = await wait_for(recovered)
        assert recovery.status is EventStatus.COMPLETED
        assert (await service.get_instance(a)).health_status is HealthStatus.HEALTHY
        assert await active_of(service) == b  # no failback: it is off by default
        assert len(await switch_events(service)) == 2


async def test_recovered_preferred_instance_fails_back_when_enabled(
    sqlite_service: ProxyFailoverService, instances: list[InstanceProcess]
) -> None:
    a, b, _ = await setup_proxy(
        sqlite_service, instances, enableAutoFailback=True, failbackDelaySeconds=0.3
    )
    async with running_engine(sqlite_service):
        await wait_for(becomes_active(sqlite_service, a))
        instances[0].kill()
        await wait_for(becomes_active(sqlite_service, b))
        instances[0].restart()
        await wait_for(becomes_active(sqlite_service, a))
    events = await switch_events(sqlite_service)
    assert [e.event_type for e in events] == [
        EventType.FAILOVER,
        EventType.FAILOVER,
        EventType.FAILBACK,
    ]
    assert events[-1].reason.startswith("preferred edge-a healthy for 0.3s")


async def test_flapping_active_never_causes_failovers(sqlite_service: ProxyFailoverService) -> None:
    with InstanceProcess(flap=True) as flapper, InstanceProcess() as steady:
        await sqlite_service.create_failover_configuration(
            "edge", "owner", {**FAST, "enableAutoFailback": True, "failbackDelaySeconds": 0.2}
        )
        flap_id = (
            await sqlite_service.register_proxy_instance(
                "edge", "owner", {"instanceName": "flappy", "endpoint": flapper.endpoint}
            )
        ).id
        async with running_engine(sqlite_service):
            await wait_for(becomes_active(sqlite_service, flap_id))
            await sqlite_service.register_proxy_instance(
                "edge",
                "owner",
                {"instanceName": "steady", "endpoint": steady.endpoint, "priority": 200},
            )

            async def probed_enough() -> bool:
                stats = await asyncio.to_thread(flapper.request, "GET", "/stats")
                return bool(stats["healthRequests"] >= 16)

            await wait_for(probed_enough)
        assert [e.target_instance_id for e in await switch_events(sqlite_service)] == [flap_id]
        assert await active_of(sqlite_service) == flap_id


async def test_engine_restart_mid_failover_neither_loses_nor_duplicates_events(
    service: ProxyFailoverService, instances: list[InstanceProcess]
) -> None:
    a, b, _ = await setup_proxy(service, instances, unhealthyThreshold=4)
    async with running_engine(service):
        await wait_for(becomes_active(service, a))
        instances[0].kill()

        async def failing() -> bool:
            return (await service.get_instance(a)).consecutive_failures >= 1

        await wait_for(failing)
    # the first engine stopped with edge-a failing but below the threshold: no switch yet
    assert (await service.get_instance(a)).health_status is not HealthStatus.UNHEALTHY
    async with running_engine(service):
        await wait_for(becomes_active(service, b))
    async with running_engine(service):  # a third engine after the switch: nothing to redo

        async def probed_again() -> bool:
            instance = await service.get_instance(b)
            return instance.total_requests >= 10

        await wait_for(probed_again)
    events = await switch_events(service)
    assert [(e.source_instance_id, e.target_instance_id) for e in events] == [(None, a), (a, b)]
    assert all(e.status is EventStatus.COMPLETED for e in events)


async def test_reported_failure_switches_at_once_without_waiting_for_probes(
    sqlite_service: ProxyFailoverService, instances: list[InstanceProcess]
) -> None:
    a, b, _ = await setup_proxy(
        sqlite_service, instances, healthCheckIntervalSeconds=30, healthCheckTimeoutSeconds=1
    )
    async with running_engine(sqlite_service):
        await wait_for(becomes_active(sqlite_service, a))
        await sqlite_service.update_instance_health(a, "unhealthy")
        # probes run every 30 s here, so only the wake-up can explain a switch within seconds
        await wait_for(becomes_active(sqlite_service, b), within=3.0)
    [_, failover] = await switch_events(sqlite_service)
    assert failover.reason.startswith("active edge-a unhealthy")


async def test_recovery_url_is_called_until_the_instance_is_back(
    sqlite_service: ProxyFailoverService, instances: list[InstanceProcess]
) -> None:
    recovery_sink = instances[2]  # edge-a's recovery URL points at a process that stays up
    a, _, _ = await setup_proxy(
        sqlite_service,
        instances,
        recovery_url=f"{recovery_sink.url}/recover",
        maxRecoveryAttempts=3,
        recoveryBackoffSeconds=0.2,
    )
    async with running_engine(sqlite_service):
        await wait_for(becomes_active(sqlite_service, a))
        instances[0].kill()

        async def posted_twice() -> list[Any]:
            posts = await asyncio.to_thread(recovery_sink.request, "GET", "/recoveries")
            return list(posts) if len(posts) >= 2 else []

        posts = await wait_for(posted_twice)
        assert posts[:2] == [
            {"instanceId": a, "proxyId": "edge", "attempt": 1},
            {"instanceId": a, "proxyId": "edge", "attempt": 2},
        ]
        [open_event] = await sqlite_service.get_failover_events(
            "edge", 10, event_type=EventType.RECOVERY, status=EventStatus.IN_PROGRESS
        )
        instances[0].restart()

        async def closed() -> bool:
            event = await sqlite_service.get_event(open_event.id)
            return event.status is EventStatus.COMPLETED

        await wait_for(closed)
    recoveries = await sqlite_service.get_failover_events("edge", 10, event_type=EventType.RECOVERY)
    assert [e.id for e in recoveries] == [open_event.id]  # one event for one recovery
