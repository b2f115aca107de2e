"""Migrations and table metadata agree, on SQLite and PostgreSQL; URLs map to async drivers."""

from __future__ import annotations

import importlib
import pkgutil
import runpy
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

import proxy_failover.store
from proxy_failover.core.errors import ErrorCode, FailoverError, StorageUnavailable
from proxy_failover.store import DEFAULT_DATABASE_URL, Store, migrate, normalize_url
from proxy_failover.store.tables import OPEN_SWITCH, metadata


def _load_every_table_module() -> None:
    """Every store module loaded: a table defined outside ``tables.py`` would still be compared."""
    for module in pkgutil.iter_modules(proxy_failover.store.__path__):
        if module.name != "migrations":
            importlib.import_module(f"proxy_failover.store.{module.name}")


async def test_migrations_match_table_metadata(database_url: str) -> None:
    _load_every_table_module()
    store = Store(database_url)
    try:

        def diff(connection: sa.Connection) -> list[Any]:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            return list(compare_metadata(context, metadata))

        async with store.engine.connect() as conn:
            differences = await conn.run_sync(diff)
    finally:
        await store.close()
    assert differences == []


def test_the_one_open_switch_index_is_built_from_cores_vocabulary_as_migrated() -> None:
    """tables.py builds the partial index's predicate from core's open statuses and switching
    event types; it must stay the text migration 0001 created (autogenerate does not compare
    a partial index's predicate)."""
    versions = Path(proxy_failover.store.__file__).parent / "migrations" / "versions"
    migrated = runpy.run_path(str(versions / "0001_initial.py"))["OPEN_SWITCH"]
    assert migrated == OPEN_SWITCH


async def test_migrate_is_idempotent_and_reaches_head(database_url: str) -> None:
    await migrate(database_url)
    await migrate(database_url)
    store = Store(database_url)
    try:
        async with store.engine.connect() as conn:
            revision = (
                await conn.execute(sa.text("SELECT version_num FROM alembic_version"))
            ).scalar_one()
            tables = await conn.run_sync(lambda sync: set(sa.inspect(sync).get_table_names()))
    finally:
        await store.close()
    assert revision >= "0001_initial"
    assert {
        "proxy_failover_configurations",
        "proxy_instances",
        "proxy_failover_events",
        "proxy_redundancy_status",
        "proxy_instance_metrics",
    } <= tables


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgresql://u@h:5432/db", "postgresql+asyncpg://u@h:5432/db"),
        ("postgres://u@h/db", "postgresql+asyncpg://u@h/db"),
        ("postgresql+asyncpg://u@h/db", "postgresql+asyncpg://u@h/db"),
        ("sqlite:///./x.db", "sqlite+aiosqlite:///./x.db"),
        ("sqlite+aiosqlite:///x.db", "sqlite+aiosqlite:///x.db"),
        (None, DEFAULT_DATABASE_URL),
    ],
)
def test_urls_map_to_the_async_drivers(given: str | None, expected: str) -> None:
    assert normalize_url(given).render_as_string(hide_password=False) == expected


def test_unsupported_url_is_refused() -> None:
    with pytest.raises(FailoverError) as caught:
        normalize_url("mysql://u@h/db")
    assert caught.value.code is ErrorCode.INVALID_INPUT


async def test_unreachable_postgres_is_storage_unavailable() -> None:
    with pytest.raises(StorageUnavailable) as caught:
        await migrate("postgresql://postgres@127.0.0.1:1/nothing")
    assert caught.value.code is ErrorCode.STORAGE_UNAVAILABLE
    assert caught.value.status_code == 503


async def test_unopenable_sqlite_file_is_storage_unavailable(tmp_path: Any) -> None:
    with pytest.raises(StorageUnavailable):
        await migrate(f"sqlite:///{tmp_path}/missing-dir/x.db")


async def test_every_migration_downgrades_and_upgrades_again(sqlite_url: str) -> None:
    store = Store(sqlite_url)

    def cycle(connection: sa.Connection) -> tuple[set[str], set[str]]:
        from alembic import command

        from proxy_failover.store.database import alembic_config

        command.downgrade(alembic_config(connection), "base")
        emptied = set(sa.inspect(connection).get_table_names())
        command.upgrade(alembic_config(connection), "head")
        return emptied, set(sa.inspect(connection).get_table_names())

    try:
        async with store.engine.begin() as conn:
            emptied, restored = await conn.run_sync(cycle)
    finally:
        await store.close()
    assert emptied <= {"alembic_version"}
    assert "proxy_failover_events" in restored
    assert "proxy_instance_metrics" in restored
