"""The hot statements run on the driver connection (``store.prepared``: SQLite's cursor, asyncpg's
statement cache; and SQLite's ``BEGIN`` hook): they must read and write exactly what SQLAlchemy's
own execution does, inside the unit's transaction, and fail the same way."""

from __future__ import annotations

import dataclasses
import sqlite3
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from proxy_failover.core.errors import StorageUnavailable
from proxy_failover.service import ProxyFailoverService
from proxy_failover.store import Store, statements
from proxy_failover.store.rows import instance_from
from proxy_failover.store.tables import instances
from tests.helpers.scenario import proxy_with


async def test_prepared_lock_and_update_match_sqlalchemy(
    service: ProxyFailoverService, database_url: str
) -> None:
    made = await proxy_with(service, "p-prep", ["a", "b"], healthy=["a"], unhealthy=["b"])
    await service.update_instance(made["a"].id, "user-456", {"metadata": {"zone": "eu", "n": [1]}})
    store = service.store
    async with store.write() as unit:
        status, found = await unit.lock_proxy_with_instances("p-prep")
        # The same statement through SQLAlchemy's regular execution.
        rows = await unit._all(statements.LOCK_WITH_INSTANCES.statement, {"p_proxy_id": "p-prep"})
        expected = [
            instance_from({c.name: row[f"i_{c.name}"] for c in instances.c}) for row in rows
        ]
        assert found == expected
        assert status is not None
        assert status.proxy_id == "p-prep"
        assert status.updated_at is not None
        assert status.updated_at.tzinfo is UTC
        assert found[0].metadata == {"zone": "eu", "n": [1]}
        assert found[0].last_health_check is not None
        assert found[0].last_health_check.tzinfo is UTC
        assert isinstance(found[0].is_active, bool)
        changed = dataclasses.replace(
            found[1],
            metadata={"k": "v"},
            last_error="boom",
            last_latency_ms=None,
            consecutive_failures=7,
            is_active=True,
            last_health_check=datetime(2026, 2, 3, 4, 5, 6, 789000, tzinfo=UTC),
        )
        await unit.save_instance(changed)
        assert await unit.get_instance(changed.id) == changed
    async with store.write() as unit:
        assert await unit.lock_proxy_with_instances("missing") == (None, [])
    assert statements.UPDATE_INSTANCE.compiled_for(unit.connection) is not None


async def test_a_prepared_statement_that_opens_a_unit_runs_in_its_transaction(
    service: ProxyFailoverService,
) -> None:
    """On PostgreSQL the statement itself starts the transaction (SQLAlchemy's asyncpg adapter
    sends ``BEGIN`` lazily): a write that rolls back leaves nothing behind."""
    made = await proxy_with(service, "p-tx", ["a"])
    instance_id = made["a"].id

    class Refused(Exception):
        pass

    async def activate_then_refuse() -> None:
        async with service.store.write() as unit:
            await unit.mark_active("p-tx", instance_id)  # the unit's first statement
            raise Refused

    with pytest.raises(Refused):
        await activate_then_refuse()
    assert (await service.get_instance(instance_id)).is_active is False
    async with service.store.write() as unit:
        await unit.mark_active("p-tx", instance_id)
    assert (await service.get_instance(instance_id)).is_active is True


async def test_a_failing_prepared_statement_is_mapped_like_any_other(
    service: ProxyFailoverService, database_url: str
) -> None:
    if not database_url.startswith("sqlite"):
        # PostgreSQL's missing table is no outage; its prepared statements' errors are mapped
        # as SQLAlchemy's: test_two_open_switches_are_refused_by_the_database_too.
        pytest.skip("a missing table is an outage (OperationalError) on SQLite only")
    made = await proxy_with(service, "p-gone", ["a"])

    async def lock_without_the_table() -> None:
        async with service.store.write() as unit:
            await unit.connection.execute(sa.text("DROP TABLE proxy_instances"))
            await unit.lock_proxy_with_instances("p-gone")

    with pytest.raises(StorageUnavailable):  # a driver OperationalError is an outage (018)
        await lock_without_the_table()
    # The transaction rolled back: the table and the instance are still there.
    assert (await service.get_instance(made["a"].id)).id == made["a"].id


async def test_a_begin_that_stays_busy_is_an_outage_and_the_store_recovers(
    sqlite_url: str,
) -> None:
    store = Store(sqlite_url, timeout_seconds=0.05)
    other = sqlite3.connect(sa.make_url(sqlite_url).database or "", isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # another process keeps the write lock

        async def write() -> None:
            async with store.write() as unit:
                await unit.lock_proxy("p-none")

        with pytest.raises(StorageUnavailable):  # 018, as when exec_driver_sql ran the BEGIN
            await write()
        other.execute("COMMIT")
        await write()  # the connection went back to the pool usable
    finally:
        other.close()
        await store.close()
