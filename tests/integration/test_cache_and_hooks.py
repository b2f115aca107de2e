"""The read cache never serves a value older than this service's own last write; the TTL bounds
staleness across replicas; notification writers run inside the transaction they describe."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from proxy_failover.bootstrap import open_service
from proxy_failover.core.model import Notification
from proxy_failover.service import ProxyFailoverService
from proxy_failover.store.tables import events
from tests.helpers.scenario import ADMIN, OWNER, activate, proxy_with


async def test_a_read_after_a_write_never_returns_the_old_value(database_url: str) -> None:
    async with open_service(database_url, cache_ttl_seconds=3600, migrate=False) as service:
        made = await proxy_with(service, "p1", ["a", "b"])
        for threshold in range(2, 7):
            assert await service.get_failover_configuration("p1") is not None  # cached
            await service.create_failover_configuration(
                "p1", OWNER, {"unhealthyThreshold": threshold}
            )
            config = await service.get_failover_configuration("p1")
            assert config is not None
            assert config.unhealthy_threshold == threshold
        for status in ("unhealthy", "healthy", "unknown"):
            await service.get_proxy_instances("p1")
            await service.get_redundancy_status("p1")
            await service.update_instance_health(made["b"].id, status)
            (_, b) = await service.get_proxy_instances("p1")
            assert b.health_status.value == status
            redundancy = await service.get_redundancy_status("p1")
            assert redundancy is not None
            assert redundancy.healthy_instances == (2 if status == "healthy" else 1)
        await activate(service, "p1", made["a"])
        redundancy = await service.get_redundancy_status("p1")
        assert redundancy is not None
        assert redundancy.active_instance_id == made["a"].id


async def test_a_read_racing_a_write_does_not_cache_the_old_value(database_url: str) -> None:
    """A read that runs while a write is open (here: from inside it) must not be cached."""
    seen_during: list[int] = []
    holder: list[ProxyFailoverService] = []

    async def read_during_write(_conn: AsyncConnection, notes: Sequence[Notification]) -> None:
        status = await holder[0].get_redundancy_status("p1")
        assert status is not None
        seen_during.append(status.epoch)

    async with open_service(
        database_url,
        cache_ttl_seconds=3600,
        notification_writers=[read_during_write],
        migrate=False,
    ) as service:
        holder.append(service)
        made = await proxy_with(service, "p1", ["a"])
        seen_during.clear()
        await service.execute_failover("p1", ADMIN, None, made["a"].id)
        assert seen_during == [0]  # the uncommitted change was invisible to the racing read
        status = await service.get_redundancy_status("p1")
        assert status is not None
        assert status.epoch == 1


async def _poll(deadline_seconds: float, check: object) -> bool:
    assert callable(check)
    deadline = time.monotonic() + deadline_seconds
    while time.monotonic() < deadline:
        if await check():
            return True
        await asyncio.sleep(0.02)
    return False


async def test_the_ttl_bounds_staleness_across_replicas(database_url: str) -> None:
    async with (
        open_service(database_url, cache_ttl_seconds=0.1, migrate=False) as reader,
        open_service(database_url, migrate=False) as writer,
    ):
        await writer.create_failover_configuration("p1", OWNER, {"unhealthyThreshold": 3})
        config = await reader.get_failover_configuration("p1")
        assert config is not None
        await writer.create_failover_configuration("p1", OWNER, {"unhealthyThreshold": 9})

        async def sees_new_value() -> bool:
            current = await reader.get_failover_configuration("p1")
            return current is not None and current.unhealthy_threshold == 9

        assert await _poll(5.0, sees_new_value)


async def test_a_zero_ttl_disables_the_cache(database_url: str) -> None:
    async with (
        open_service(database_url, cache_ttl_seconds=0, migrate=False) as reader,
        open_service(database_url, migrate=False) as writer,
    ):
        await writer.create_failover_configuration("p1", OWNER, {})
        assert await reader.get_redundancy_status("p1") is not None
        await writer.register_proxy_instance("p1", OWNER, {"instanceName": "a"})
        status = await reader.get_redundancy_status("p1")
        assert status is not None
        assert status.total_instances == 1
        assert len(await reader.get_proxy_instances("p1")) == 1


async def test_notification_writers_run_inside_the_transaction(database_url: str) -> None:
    received: list[tuple[list[str], int]] = []

    async def outbox(conn: AsyncConnection, notes: Sequence[Notification]) -> None:
        # the event written by this very transaction is visible to the writer
        count = (await conn.execute(sa.select(sa.func.count()).select_from(events))).scalar()
        received.append(([n.type for n in notes], int(count or 0)))

    async with open_service(database_url, notification_writers=[outbox], migrate=False) as service:
        made = await proxy_with(service, "p1", ["a"])
        received.clear()
        await service.execute_failover("p1", ADMIN, None, made["a"].id)
    assert received == [(["redundancy.restored", "failover.started"], 1)]


async def test_a_failing_notification_writer_rolls_the_change_back(database_url: str) -> None:
    armed: list[bool] = []

    async def broken_outbox(_conn: AsyncConnection, notes: Sequence[Notification]) -> None:
        if armed:
            raise RuntimeError("outbox unavailable")

    async with open_service(
        database_url, notification_writers=[broken_outbox], migrate=False
    ) as service:
        made = await proxy_with(service, "p1", ["a"])
        armed.append(True)
        with pytest.raises(RuntimeError):
            await service.execute_failover("p1", ADMIN, None, made["a"].id)
        status = await service.get_redundancy_status("p1")
        assert status is not None
        assert status.active_instance_id is None
        assert await service.get_failover_events("p1") == []


async def test_a_failing_change_listener_does_not_undo_the_commit(
    service: ProxyFailoverService,
) -> None:
    def listener(proxy_id: str, notes: Sequence[Notification]) -> None:
        raise RuntimeError("listener bug")

    service.on_change = listener
    await service.create_failover_configuration("p1", OWNER, {})
    assert await service.get_failover_configuration("p1") is not None
