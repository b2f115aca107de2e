"""The store's own guarantees: SQLite settings, database-level constraints mapped to SPEC codes,
outages reported as 018, timestamps read back as aware UTC, and stale in-process knowledge."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa

from proxy_failover.bootstrap import open_service
from proxy_failover.core import failover as core_failover
from proxy_failover.core.errors import (
    Conflict,
    ErrorCode,
    FailoverError,
    InvalidInput,
    NotFound,
    StorageUnavailable,
)
from proxy_failover.core.model import (
    CheckResult,
    DecisionAction,
    EventStatus,
    EventType,
    FailoverEvent,
)
from proxy_failover.service import ProxyFailoverService
from proxy_failover.store import Store, database, new_id
from tests.helpers.clock import FakeClock
from tests.helpers.processes import wait_for
from tests.helpers.scenario import ADMIN, OWNER, activate, proxy_with


async def test_sqlite_runs_in_wal_mode_with_foreign_keys(sqlite_url: str) -> None:
    store = Store(sqlite_url)
    try:
        async with store.read() as reader:
            journal = (await reader.connection.execute(sa.text("PRAGMA journal_mode"))).scalar()
            keys = (await reader.connection.execute(sa.text("PRAGMA foreign_keys"))).scalar()
            busy = (await reader.connection.execute(sa.text("PRAGMA busy_timeout"))).scalar()
    finally:
        await store.close()
    assert journal == "wal"
    assert keys == 1
    # SQLite itself never waits (it would block the event loop): sqlite_inline retries instead
    assert busy == 0


async def test_a_write_waits_for_another_process_lock_without_blocking_the_loop(
    sqlite_url: str,
) -> None:
    store = Store(sqlite_url)
    try:
        await store.migrate()
        other = sqlite3.connect(sa.make_url(sqlite_url).database or "", isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        released = asyncio.Event()

        def release() -> None:  # runs only if the loop is free while the writer waits
            other.execute("COMMIT")
            released.set()

        asyncio.get_running_loop().call_later(0.2, release)
        try:
            async with store.write() as unit:  # BEGIN IMMEDIATE is busy until release()
                assert await unit.lock_proxy("p-none") is None
            assert released.is_set()
        finally:
            other.close()
    finally:
        await store.close()


def test_in_memory_sqlite_is_refused() -> None:
    with pytest.raises(FailoverError) as caught:
        Store("sqlite+aiosqlite:///:memory:")
    assert caught.value.code is ErrorCode.INVALID_INPUT


async def test_duplicate_names_are_refused_by_the_database_too(
    service: ProxyFailoverService,
) -> None:
    made = await proxy_with(service, "p1", ["a"])

    async def insert_twin() -> None:
        async with service.store.write() as unit:
            await unit.lock_proxy("p1")
            await unit.insert_instance(dataclasses.replace(made["a"], id=new_id()))

    with pytest.raises(Conflict) as caught:
        await insert_twin()
    assert caught.value.code is ErrorCode.DUPLICATE_INSTANCE_NAME
    assert len(await service.get_proxy_instances("p1")) == 1


async def test_two_open_switches_are_refused_by_the_database_too(
    service: ProxyFailoverService, clock: FakeClock
) -> None:
    made = await proxy_with(service, "p1", ["a", "b"])
    first = await service.execute_failover("p1", ADMIN, None, made["a"].id)

    async def insert_second_switch() -> None:
        async with service.store.write() as unit:
            await unit.lock_proxy("p1")
            await unit.insert_event(
                FailoverEvent(
                    id=new_id(),
                    proxy_id="p1",
                    user_id=ADMIN,
                    event_type=EventType.SWITCHOVER,
                    source_instance_id=made["a"].id,
                    target_instance_id=made["b"].id,
                    reason="bypassing the service",
                    status=EventStatus.IN_PROGRESS,
                    triggered_by=ADMIN,
                    epoch=2,
                    created_at=clock(),
                )
            )

    with pytest.raises(Conflict) as caught:
        await insert_second_switch()
    assert caught.value.code is ErrorCode.FAILOVER_IN_PROGRESS
    assert [e.id for e in await service.get_failover_events("p1")] == [first.id]


async def test_an_unreachable_database_is_storage_unavailable() -> None:
    async with open_service("postgresql://postgres@127.0.0.1:1/none", migrate=False) as service:
        for call in (
            service.get_failover_configuration("p1"),
            service.create_failover_configuration("p1", OWNER, {}),
            service.list_proxies(),
        ):
            with pytest.raises(StorageUnavailable) as caught:
                await call
            assert caught.value.status_code == 503


async def _backend_pid(store: Store) -> int:
    async with store.read() as reader:
        found = await reader.connection.execute(sa.text("SELECT pg_backend_pid()"))
        return int(found.scalar_one())


@pytest.mark.postgres
async def test_a_pooled_connection_the_server_dropped_is_not_handed_out(
    postgres_url: str,
) -> None:
    store = Store(postgres_url, pool_size=1, max_overflow=0)
    other = Store(postgres_url, pool_size=1, max_overflow=0)
    try:
        dropped = await _backend_pid(store)  # pooled, checked in just now: no ping would be sent
        async with other.read() as reader:
            await reader.connection.execute(
                sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": dropped}
            )

        async def gone() -> bool:
            async with other.read() as reader:
                found = await reader.connection.execute(
                    sa.text("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid"),
                    {"pid": dropped},
                )
                return found.scalar() == 0

        await wait_for(gone, within=5)
        assert await _backend_pid(store) != dropped  # a new connection, and no error
        kept = await _backend_pid(store)
        assert await _backend_pid(store) == kept  # a live connection stays in use
        # Idle past the window: pinged (one round trip) before it is handed out again.
        await asyncio.sleep(database.PING_BYPASS_SECONDS)
        assert await _backend_pid(store) == kept
    finally:
        await store.close()
        await other.close()


async def test_timestamps_are_stored_as_utc_and_read_back_aware(database_url: str) -> None:
    plus_two = timezone(timedelta(hours=2))
    local = datetime(2026, 3, 1, 14, 0, tzinfo=plus_two)
    async with open_service(database_url, clock=lambda: local, migrate=False) as service:
        config = await service.create_failover_configuration("p1", OWNER, {})
    async with open_service(database_url, migrate=False) as fresh:
        read = await fresh.get_failover_configuration("p1")
    assert read is not None
    assert read.created_at == datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    assert read.created_at is not None
    assert read.created_at.utcoffset() == timedelta(0)
    assert config.created_at == read.created_at


async def test_a_naive_clock_is_a_bug_not_a_silent_local_time(database_url: str) -> None:
    async with open_service(
        database_url, clock=lambda: datetime(2026, 1, 1), migrate=False
    ) as service:
        with pytest.raises(ValueError, match="timezone-aware"):
            await service.create_failover_configuration("p1", OWNER, {})


async def test_an_instance_deleted_by_another_replica_is_not_found(database_url: str) -> None:
    async with (
        open_service(database_url, migrate=False) as here,
        open_service(database_url, migrate=False) as there,
    ):
        made = await proxy_with(here, "p1", ["a", "b"])
        await here.update_instance_health(made["b"].id, "healthy")  # remembers b's proxy
        await there.delete_instance(made["b"].id, OWNER)
        for call in (
            here.update_instance_health(made["b"].id, "unhealthy"),
            here.record_check_result(made["b"].id, CheckResult(True)),
            here.update_instance(made["b"].id, OWNER, {"priority": 1}),
        ):
            with pytest.raises(NotFound) as caught:
                await call
            assert caught.value.code is ErrorCode.INSTANCE_NOT_FOUND


async def test_wrongly_typed_arguments_are_invalid_input(service: ProxyFailoverService) -> None:
    made = await proxy_with(service, "p1", ["a"])
    instance_id = made["a"].id
    bad: Any = ["not", "a", "mapping"]
    calls: dict[str, Callable[[], Awaitable[object]]] = {
        "register_not_mapping": lambda: service.register_proxy_instance("p1", OWNER, bad),
        "patch_not_mapping": lambda: service.update_instance(instance_id, OWNER, bad),
        "check_not_result": lambda: service.record_check_result(instance_id, bad),
        "before_not_datetime": lambda: service.get_failover_events("p1", before=bad),
        "metrics_without_proxy": lambda: service.record_instance_metrics(
            instance_id, bad, OWNER, {"cpuPercent": 1}
        ),
    }
    for name, call in calls.items():
        with pytest.raises(InvalidInput) as caught:
            await call()
        assert caught.value.code is ErrorCode.INVALID_INPUT, name


async def test_a_config_body_of_none_means_defaults(service: ProxyFailoverService) -> None:
    config = await service.create_failover_configuration("p1", OWNER, None)  # type: ignore[arg-type]
    assert config.unhealthy_threshold == 3


async def test_an_engine_failback_is_recorded_as_a_failback(
    service: ProxyFailoverService, clock: FakeClock
) -> None:
    made = await proxy_with(
        service, "p1", ["a", "b"], config={"enableAutoFailback": True, "failbackDelaySeconds": 5}
    )
    await activate(service, "p1", made["b"])
    clock.advance(6)
    decision = core_failover.decide(await service.load_snapshot("p1"), clock.now)
    assert decision.action is DecisionAction.FAILBACK
    event = await service.apply_decision("p1", decision, clock.now)
    assert event is not None
    assert event.event_type is EventType.FAILBACK
    assert event.status is EventStatus.COMPLETED
    assert event.target_instance_id == made["a"].id
    status = await service.get_redundancy_status("p1")
    assert status is not None
    assert status.active_instance_id == made["a"].id
