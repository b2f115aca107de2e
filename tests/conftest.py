"""Shared fixtures: real databases (SQLite file, PostgreSQL), a ready service, a fake clock.

``database_url`` is parametrized over ``sqlite`` and ``postgres``: each test gets an empty,
migrated database. SQLite: a copy of a template migrated once per session. PostgreSQL: one fresh
database per test session, created on the server at ``PFO_TEST_POSTGRES_URL`` (default
``postgresql://postgres@127.0.0.1:5432/test``) and dropped at the end; tables are truncated
before each test. No server: the PostgreSQL cases skip with the reason, or fail when
``PFO_REQUIRE_POSTGRES=1``.
"""

from __future__ import annotations

import asyncio
import gc
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
import pytest

from proxy_failover.bootstrap import open_service
from proxy_failover.service import ProxyFailoverService
from proxy_failover.store import migrate
from tests.helpers.clock import FakeClock
from tests.helpers.outbound import LOOPBACK

# The suite's relays and receivers listen on loopback, which the built-in outbound policy refuses
# to non-admins (docs/security.md); every service the suite builds from settings allows it.
os.environ.setdefault("PFO_OUTBOUND_ALLOW", LOOPBACK)

DEFAULT_POSTGRES_SERVER_URL = "postgresql://postgres@127.0.0.1:5432/test"


def postgres_server_url() -> str:
    """The server (and an existing database to connect to) that test databases are made on."""
    return os.environ.get("PFO_TEST_POSTGRES_URL") or DEFAULT_POSTGRES_SERVER_URL


def _asyncpg_dsn(url: str) -> str:
    """asyncpg wants a libpq-style URL without the SQLAlchemy driver suffix."""
    scheme, rest = url.split("://", 1)
    return "postgresql://" + rest if scheme.startswith("postgres") else url


def _with_database(url: str, database: str) -> str:
    from sqlalchemy.engine import make_url

    parsed = make_url(url).set(drivername="postgresql+asyncpg", database=database)
    return parsed.render_as_string(hide_password=False)


async def _create_database(server_url: str, name: str) -> None:
    conn = await asyncpg.connect(_asyncpg_dsn(server_url), timeout=5)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def _drop_database(server_url: str, name: str) -> None:
    conn = await asyncpg.connect(_asyncpg_dsn(server_url), timeout=5)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def _empty_all_tables(url: str) -> None:
    """Delete every row (but the schema version) quickly; TRUNCATE when not a superuser."""
    conn = await asyncpg.connect(_asyncpg_dsn(url.replace("+asyncpg", "")), timeout=5)
    try:
        tables = await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
            "AND tablename <> 'alembic_version'"
        )
        names = [f'"{row["tablename"]}"' for row in tables]
        if not names:
            return
        try:
            async with conn.transaction():
                # Skip FK triggers so the order of deletes does not matter (superuser only).
                await conn.execute("SET LOCAL session_replication_role = replica")
                await conn.execute("; ".join(f"DELETE FROM {name}" for name in names))
        except asyncpg.InsufficientPrivilegeError:
            await conn.execute(f"TRUNCATE TABLE {', '.join(names)} RESTART IDENTITY CASCADE")
    finally:
        await conn.close()


@pytest.fixture(autouse=True)
def _collect_what_a_postgres_test_dropped(request: pytest.FixtureRequest) -> Iterator[None]:
    """A PostgreSQL test's unreachable objects are collected at its own teardown.

    An asyncpg connection dropped without being closed warns (an error here) only when the
    garbage collector frees it, which for objects in reference cycles can be minutes and many
    tests later (CI once failed a SQLite test that way). Collecting the young generations after
    every other fixture of the test is torn down (this one is set up first), where such a
    connection still is, files the warning under the test that leaked it (in the warnings
    summary: ResourceWarning is not an error, see pyproject.toml). Only for PostgreSQL tests,
    and only generations 0 and 1: a few milliseconds each.
    """
    yield
    if request.node.get_closest_marker("postgres") is not None:
        gc.collect(1)


@pytest.fixture(scope="session")
def postgres_database_url() -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for this test session (dropped at the end)."""
    server = postgres_server_url()
    name = f"pfo_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    try:
        asyncio.run(_create_database(server, name))
    except Exception as error:  # any failure to reach the server means "no PostgreSQL"
        reason = f"no PostgreSQL server usable at {server}: {type(error).__name__}: {error}"
        if os.environ.get("PFO_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"PFO_REQUIRE_POSTGRES=1 but {reason}")
        pytest.skip(reason)
    url = _with_database(server, name)
    try:
        asyncio.run(migrate(url))
        yield url
    finally:
        asyncio.run(_drop_database(server, name))


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file, copied for each test (migrating once keeps the suite fast)."""
    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    asyncio.run(migrate(f"sqlite+aiosqlite:///{path}"))
    return path


@pytest.fixture
def sqlite_url(sqlite_template: Path, tmp_path: Path) -> str:
    """An empty, migrated SQLite database file for this test."""
    path = tmp_path / "pfo.db"
    shutil.copyfile(sqlite_template, path)
    return f"sqlite+aiosqlite:///{path}"


@pytest.fixture
def postgres_url(postgres_database_url: str) -> str:
    """The session's PostgreSQL database, emptied for this test."""
    asyncio.run(_empty_all_tables(postgres_database_url))
    return postgres_database_url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest) -> str:
    """An empty, migrated database for this test: once on SQLite, once on PostgreSQL."""
    if request.param == "sqlite":
        return str(request.getfixturevalue("sqlite_url"))
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def clock() -> FakeClock:
    """A clock stepping a millisecond per reading, so rows written in a row get distinct times."""
    return FakeClock(step=timedelta(milliseconds=1))


@pytest.fixture
async def service(database_url: str, clock: FakeClock) -> AsyncIterator[ProxyFailoverService]:
    """A service on a fresh database (already migrated), driven by the ``clock`` fixture."""
    async with open_service(database_url, clock=clock, migrate=False) as opened:
        yield opened
