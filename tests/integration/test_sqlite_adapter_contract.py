"""What ``store/sqlite_inline.py`` relies on inside SQLAlchemy's private aiosqlite adapter.

``InlineConnection`` stands in for an ``aiosqlite.Connection`` under SQLAlchemy's
``AsyncAdapt_aiosqlite_connection``, and ``store.prepared`` and ``database``'s BEGIN hook reach
through the adapter to the driver connection. None of that is public API: a SQLAlchemy release
may change it. ``pyproject.toml`` pins SQLAlchemy to the minor version tested; these tests fail,
saying what to re-check, the day the adapter stops behaving as the shim expects.
"""

from __future__ import annotations

import sqlite3
from importlib import metadata
from typing import Any

import pytest
import sqlalchemy as sa
from packaging.requirements import Requirement
from sqlalchemy.connectors import asyncio as sa_asyncio
from sqlalchemy.dialects.sqlite import aiosqlite as sa_aiosqlite

from proxy_failover.store import Store, sqlite_inline

RECHECK = (
    "SQLAlchemy's aiosqlite adapter changed: re-check store/sqlite_inline.py (InlineConnection, "
    "InlineCursor, _RunNow), store/prepared.py (driver_connection, cursor.execute/executemany) "
    "and database._install_sqlite_hooks (the BEGIN on dbapi_connection.cursor()) against "
    "sqlalchemy/dialects/sqlite/aiosqlite.py and sqlalchemy/connectors/asyncio.py of "
    f"SQLAlchemy {sa.__version__}, then move the SQLAlchemy pin in pyproject.toml"
)


def test_the_installed_sqlalchemy_is_the_pinned_minor_version() -> None:
    (pin,) = [
        Requirement(text)
        for text in metadata.requires("proxy-failover") or []
        if Requirement(text).name.lower() == "sqlalchemy"
    ]
    assert pin.specifier.contains(sa.__version__), (
        f"SQLAlchemy {sa.__version__} is outside the tested pin {pin.specifier}: {RECHECK}"
    )
    assert any(spec.operator == "<" for spec in pin.specifier), "SQLAlchemy needs an upper bound"


@pytest.mark.parametrize(
    ("owner", "name"),
    [
        (sa_aiosqlite.AsyncAdapt_aiosqlite_connection, "isolation_level"),
        (sa_aiosqlite.AsyncAdapt_aiosqlite_connection, "create_function"),
        (sa_aiosqlite.AsyncAdapt_aiosqlite_connection, "_terminate_force_close"),
        (sa_aiosqlite.AsyncAdapt_aiosqlite_connection, "_handle_exception_no_connection"),
        (sa_aiosqlite.AsyncAdapt_aiosqlite_dbapi, "connect"),
        (sa_aiosqlite.SQLiteDialect_aiosqlite, "get_driver_connection"),
        (sa_asyncio.AsyncAdapt_dbapi_cursor, "_execute_async"),
        (sa_asyncio.AsyncAdapt_dbapi_cursor, "_executemany_async"),
    ],
)
def test_the_adapter_still_has_what_the_shim_is_driven_by(owner: type, name: str) -> None:
    assert hasattr(owner, name), f"{owner.__qualname__}.{name} is gone: {RECHECK}"


def _drive_the_adapter(sync: sa.Connection) -> None:
    """Inside SQLAlchemy's greenlet, as its own execution runs: the adapter's sync face."""
    adapted: Any = sync.connection.dbapi_connection
    driver = sync.connection.driver_connection
    # The driver under the adapter is ours, reached by both names the store uses.
    assert isinstance(driver, sqlite_inline.InlineConnection), RECHECK
    assert adapted._connection is driver, RECHECK
    # The adapter's errors are the sqlite3 module's (store.prepared raises those).
    dbapi: Any = sync.dialect.loaded_dbapi
    assert dbapi.Error is sqlite3.Error, RECHECK
    assert dbapi.OperationalError is sqlite3.OperationalError, RECHECK
    # isolation_level is set through the call queue (_tx.put_nowait) on _conn.
    adapted.isolation_level = "DEFERRED"
    assert driver._conn.isolation_level == "DEFERRED", RECHECK
    adapted.isolation_level = None
    assert driver._conn.isolation_level is None, RECHECK
    # Cursors: the adapter wraps InlineCursor and runs statements through it.
    cursor = adapted.cursor()
    assert isinstance(cursor._cursor, sqlite_inline.InlineCursor), RECHECK
    cursor.execute("SELECT ? + 1", (41,))
    assert cursor.fetchall() == [(42,)], RECHECK
    cursor.execute("CREATE TEMP TABLE t (v)")
    cursor.executemany("INSERT INTO t VALUES (?)", [(1,), (2,)])
    cursor.execute("SELECT count(*) FROM t")
    assert cursor.fetchall() == [(2,)], RECHECK
    cursor.close()
    # A closed driver: the adapter's commit/rollback check _connection and do nothing; other
    # calls raise the ValueError the adapter maps to an OperationalError that is a disconnect.
    sync.rollback()
    assert driver._connection is not None
    driver._connection.close()
    driver._connection = None
    adapted.rollback()
    adapted.commit()
    with pytest.raises(sqlite3.OperationalError, match="no active connection") as raised:
        adapted.create_function("f", 0, lambda: 1)
    error: Any = raised.value
    assert sync.dialect.is_disconnect(error, adapted, None), RECHECK


async def test_the_adapter_drives_the_inline_connection_as_the_shim_expects(
    sqlite_url: str,
) -> None:
    store = Store(sqlite_url)
    try:
        async with store.engine.connect() as conn:
            await conn.run_sync(_drive_the_adapter)
            await conn.invalidate()
    finally:
        await store.close()


def _terminate(sync: sa.Connection) -> None:
    driver = sync.connection.driver_connection
    assert isinstance(driver, sqlite_inline.InlineConnection)
    assert sync.dialect.has_terminate, RECHECK
    sync.connection.dbapi_connection._terminate_force_close()  # type: ignore[union-attr]
    assert driver._connection is None, RECHECK


async def test_terminate_calls_the_inline_stop(sqlite_url: str) -> None:
    store = Store(sqlite_url)
    try:
        async with store.engine.connect() as conn:
            await conn.run_sync(_terminate)
            await conn.invalidate()
    finally:
        await store.close()
