"""Engines for SQLite and PostgreSQL, driver errors mapped to the error vocabulary, migrations.

SQLite: WAL, foreign keys on, a busy timeout, and write transactions opened with
``BEGIN IMMEDIATE`` so the write lock is taken up front (the compare-and-swap then holds across
processes and no deferred transaction ever fails to upgrade its lock). PostgreSQL (asyncpg): write
units of work lock the proxy's redundancy row with ``SELECT ... FOR UPDATE`` (see ``repository``).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
import weakref
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy import event, exc
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.util import await_

from proxy_failover.core.errors import (
    Conflict,
    ErrorCode,
    FailoverError,
    StorageTimeout,
    StorageUnavailable,
)
from proxy_failover.store import sqlite_inline

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./proxy-failover.db"
MIGRATIONS_DIR = Path(__file__).parent / "migrations"
#: Execution option naming the BEGIN flavour SQLite uses for a connection's transactions.
SQLITE_BEGIN_OPTION = "pfo_sqlite_begin"
SQLITE_BUSY_TIMEOUT_MS = 30_000
#: Every database call's deadline, by default: a hung, frozen or locked database is an outage
#: (503/018) within it, and the call's connection is freed, instead of requests piling up.
DATABASE_TIMEOUT_SECONDS = 1.5
#: Migrations run once at start-up and may wait for another replica's migration lock.
MIGRATION_TIMEOUT_SECONDS = 300.0
#: Key of a PostgreSQL advisory lock taken while migrating, so replicas starting together agree.
_MIGRATION_LOCK_KEY = 0x5046_4F4D  # "PFOM"


_SUPPORTED_URLS = "use sqlite+aiosqlite:///file.db or postgresql+asyncpg://user@host/db"


def normalize_url(url: str | None) -> URL:
    """Map ``postgresql://``, ``postgres://`` and ``sqlite:///`` URLs to the async drivers."""
    text = url or DEFAULT_DATABASE_URL
    if text.startswith("postgres://"):
        text = "postgresql://" + text[len("postgres://") :]
    try:
        parsed = make_url(text)
    except (exc.ArgumentError, ValueError):  # no URL at all, or a port that is not a number
        # The text is not echoed: it may hold a password that could not be told apart.
        raise FailoverError(
            f"the database URL cannot be parsed: {_SUPPORTED_URLS}",
            ErrorCode.INVALID_INPUT,
            {"unparseable": True},
        ) from None
    backend = parsed.get_backend_name()
    if backend == "postgresql":
        return parsed.set(drivername="postgresql+asyncpg")
    if backend == "sqlite":
        return parsed.set(drivername="sqlite+aiosqlite")
    raise FailoverError(
        f"unsupported database URL {parsed.render_as_string(hide_password=True)!r}: "
        f"{_SUPPORTED_URLS}",
        ErrorCode.INVALID_INPUT,
    )


def create_engine(
    url: str | URL | None,
    *,
    pool_size: int = 5,
    max_overflow: int = 10,
    timeout_seconds: float = DATABASE_TIMEOUT_SECONDS,
) -> AsyncEngine:
    """An async engine with this project's SQLite pragmas and transaction hooks installed.

    ``timeout_seconds`` bounds every wait on the database: PostgreSQL's connect, pool checkout,
    ``statement_timeout`` and ``lock_timeout`` server-side and asyncpg's ``command_timeout``
    client-side (a frozen server answers nothing, so only the client can give up); SQLite's wait
    for another process's lock and for this process's write gate."""
    parsed = url if isinstance(url, URL) else normalize_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database in ("", ":memory:") or database.startswith("file::memory:"):
            raise FailoverError(
                "in-memory SQLite is not supported (each connection would see its own database); "
                "use a file",
                ErrorCode.INVALID_INPUT,
            )
        folder = Path(database).expanduser().parent
        if not folder.is_dir():
            # Refuse before the driver tries: a failed aiosqlite connect leaves a worker thread
            # that reports to the event loop after the fact.
            raise StorageUnavailable(
                f"storage unavailable: cannot create SQLite database {database!r}: "
                f"directory {str(folder)!r} does not exist"
            )
        # Statements run on the event loop's thread (see ``sqlite_inline``): no thread hop per
        # call; waits for other processes' locks are async back-off, not SQLite's busy handler.
        engine = create_async_engine(
            parsed,
            pool_size=pool_size,
            max_overflow=max_overflow,
            pool_timeout=timeout_seconds,
            async_creator=sqlite_inline.connector(database, timeout_seconds),
        )
        _install_sqlite_hooks(engine)
        _gate_timeouts[engine.sync_engine] = timeout_seconds
        return engine
    milliseconds = str(max(1, round(timeout_seconds * 1000)))
    engine = create_async_engine(
        parsed,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_pre_ping=True,
        pool_timeout=timeout_seconds,
        connect_args={
            "timeout": timeout_seconds,
            "command_timeout": timeout_seconds,
            "server_settings": {"statement_timeout": milliseconds, "lock_timeout": milliseconds},
        },
    )
    _terminate_invalidated_at_once(engine)
    _ping_in_one_round_trip_when_idle(engine)
    _checkout_timeouts[engine.sync_engine.pool] = timeout_seconds
    return engine


#: A pooled PostgreSQL connection checked in this recently is handed out again without a ping:
#: its last transaction just got its answers (HikariCP's ``aliveBypassWindowMs`` is the same
#: idea, at the same 500 ms).
PING_BYPASS_SECONDS = 0.5


#: PostgreSQL: how long getting a connection may take all told, per pool (``connection``).
_checkout_timeouts: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()


@contextlib.asynccontextmanager
async def connection(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """``engine.connect()``; on PostgreSQL the checkout (the wait for a free slot of the pool,
    the pre-ping, a new connection) is bounded by the database timeout all told.

    Each step has the timeout on its own, so against a frozen server they added up: a request
    that found the pool taken by requests waiting on the server waited for a slot, then as long
    again on a new connection (3.0 s at the 1.5 s default). Statements keep their own deadline.
    Errors are raised as they come: wrap the block in ``mapped_errors``."""
    seconds = _checkout_timeouts.get(engine.sync_engine.pool)
    if seconds is None:  # SQLite: a local file, its waits bounded by the write gate and busy budget
        async with engine.connect() as conn:
            yield conn
        return
    conn = engine.connect()
    async with asyncio.timeout(seconds):
        await conn.start()
    try:
        yield conn
    finally:
        await conn.close()


def _terminate_invalidated_at_once(engine: AsyncEngine) -> None:
    """A connection the pool invalidates (a missed deadline, a failed pre-ping) is dropped at
    once instead of closed politely: SQLAlchemy's asyncpg adapter asks a frozen server to end the
    session and waits up to 2 s for an answer that never comes, which doubled the time to 503
    (1.5 s deadline, 3.0 s answer). The server sees the socket close, as after a crash."""
    dialect = engine.dialect

    def terminate(dbapi_connection: Any) -> None:
        dialect.get_driver_connection(dbapi_connection).terminate()

    dialect.do_terminate = terminate  # type: ignore[method-assign]


def _ping_in_one_round_trip_when_idle(engine: AsyncEngine) -> None:
    """The pre-ping of a pooled PostgreSQL connection: a connection the server dropped is
    never handed out, at the cost of one round trip, and none on a busy pool.

    SQLAlchemy's asyncpg ping costs three round trips (``BEGIN``, ``;``, ``ROLLBACK``: the
    transaction is for PgBouncer, whose transaction pooling mishandles an extended-protocol
    query outside one), about a millisecond before every transaction on a loaded machine.
    Here: a connection whose socket asyncpg saw close (a restarted or terminated server) fails
    the ping without a word to the server; one checked in less than ``PING_BYPASS_SECONDS`` ago
    passes; any other is pinged with ``SELECT 1`` over the simple query protocol, one message
    that is its own transaction, so PgBouncer's transaction pooling is served too (asyncpg
    cannot take ``;`` that way: the empty query's missing status breaks its ``execute``). A
    failed ping is what it was: the pool replaces the connection (and, on a disconnect, every
    older one). What no ping closes: a server that drops the connection after it, or before
    the loop has read the socket's end, fails the transaction (503), as it always could."""
    dialect = engine.dialect
    checked_in: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()

    @event.listens_for(engine.sync_engine.pool, "checkin")
    def _on_checkin(dbapi_connection: Any, _record: Any) -> None:
        if dbapi_connection is not None:  # None: the connection was invalidated
            checked_in[dialect.get_driver_connection(dbapi_connection)] = time.monotonic()

    def ping(dbapi_connection: Any) -> bool:
        driver = dialect.get_driver_connection(dbapi_connection)
        if driver.is_closed():
            return False
        if time.monotonic() - checked_in.get(driver, float("-inf")) < PING_BYPASS_SECONDS:
            return True
        try:
            await_(driver.execute("SELECT 1"))  # no arguments: the simple query protocol
        except Exception as error:  # raised as the adapter raises it, so the pool can tell a
            dbapi_connection._handle_exception(error)  # disconnect from another failure
        return True

    dialect.do_ping = ping  # type: ignore[method-assign]


def _install_sqlite_hooks(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let us emit BEGIN ourselves (the driver's implicit BEGIN is always DEFERRED).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=0")  # waits happen in sqlite_inline, off SQLite
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        flavour = conn.get_execution_options().get(SQLITE_BEGIN_OPTION, "DEFERRED")
        statement = f"BEGIN {flavour}"
        # Straight on the DBAPI cursor (busy retries included): ``exec_driver_sql`` builds an
        # execution context and a result for a statement that returns nothing, on every
        # transaction. A failure is raised as SQLAlchemy's error, as exec_driver_sql would.
        dbapi = conn.dialect.loaded_dbapi
        try:
            cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
            try:
                cursor.execute(statement)
            finally:
                cursor.close()
        except dbapi.Error as error:
            raise exc.DBAPIError.instance(statement, None, error, dbapi.Error) from error


def is_sqlite(engine: AsyncEngine) -> bool:
    return engine.dialect.name == "sqlite"


class _Gate:
    """A SQLite engine's write gate: the lock, and when a holder last missed its deadline on the
    file's lock (another process holds it)."""

    __slots__ = ("lock", "missed_at")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.missed_at = float("-inf")


#: One in-process write gate per SQLite engine, shared by every writer on it (the store's units
#: of work, ``EngineAccess``). Keyed by the base engine so derived option engines share it.
_write_gates: weakref.WeakKeyDictionary[sa.Engine, _Gate] = weakref.WeakKeyDictionary()


#: How long a writer of each SQLite engine may queue on its gate (the engine's database timeout).
_gate_timeouts: weakref.WeakKeyDictionary[sa.Engine, float] = weakref.WeakKeyDictionary()


class _BoundedGate:
    """Holds the gate for a block; a wait longer than ``seconds`` is an outage (018).

    Writers behind one stuck on another process's lock would otherwise each add their own full
    wait, so the last of ten waited ten times the budget. And a writer that queued behind a holder
    which then missed the deadline on the file's lock gives up with it instead of starting its
    own full wait: the gate's wait and the file's would otherwise add up to twice the budget (a
    request behind the previous request's audit row answered 503 after 3.0 s, not 1.5 s)."""

    __slots__ = ("_gate", "_seconds")

    def __init__(self, gate: _Gate, seconds: float) -> None:
        self._gate = gate
        self._seconds = seconds

    async def __aenter__(self) -> None:
        lock = self._gate.lock
        if not lock.locked():
            await lock.acquire()  # free: no timer needed on the hot path
            return
        queued_at = time.monotonic()
        try:
            async with asyncio.timeout(self._seconds):
                await lock.acquire()
        except TimeoutError:
            raise StorageTimeout(
                f"storage unavailable: the database stayed locked for {self._seconds:g} s"
            ) from None
        if self._gate.missed_at >= queued_at:  # the file is locked: no second full wait
            lock.release()
            raise StorageTimeout("storage unavailable: the database is locked by another process")

    async def __aexit__(
        self, _type: type[BaseException] | None, error: BaseException | None, _tb: object
    ) -> None:
        if isinstance(error, StorageTimeout):
            self._gate.missed_at = time.monotonic()
        self._gate.lock.release()


def write_gate(engine: AsyncEngine) -> contextlib.AbstractAsyncContextManager[Any]:
    """The lock this process's SQLite writers queue on before ``BEGIN IMMEDIATE`` (else a no-op).

    SQLite has one writer at a time: a writer that finds the file locked waits in SQLite's busy
    handler, which sleeps and backs off (1, 2, 5, ... 100 ms), so two in-process writers that
    bypass each other's queue cost tens of milliseconds each. Every writer of one engine must
    therefore take the same gate; ``BEGIN IMMEDIATE`` still guards against other processes.
    PostgreSQL writers need no gate (row locks serialise per proxy).
    """
    if not is_sqlite(engine):
        return contextlib.nullcontext()
    base = engine.sync_engine
    gate = _write_gates.get(base)
    if gate is None:
        gate = _write_gates[base] = _Gate()
    return _BoundedGate(gate, _gate_timeouts.get(base, DATABASE_TIMEOUT_SECONDS))


class EngineAccess:
    """Gated write transactions and plain read connections on one engine.

    The repositories outside the per-proxy unit of work (webhooks, audit, event log, leases) each
    write in a short transaction of their own: through the engine's write gate, with
    ``BEGIN IMMEDIATE`` on SQLite and driver errors mapped, written once here.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.is_postgres = engine.dialect.name == "postgresql"
        self._writer = engine.execution_options(**{SQLITE_BEGIN_OPTION: "IMMEDIATE"})

    @contextlib.asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """One write transaction; commits when the block ends normally."""
        async with (
            write_gate(self.engine),
            mapped_errors(),
            connection(self._writer) as conn,
            conn.begin(),
        ):
            yield conn

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A connection for reads (autobegin; rolled back on release)."""
        async with mapped_errors(), connection(self.engine) as conn:
            yield conn


def unindexed(column: sa.Column[str]) -> sa.ColumnElement[str]:
    """``column || ''``: the same value, but no index on ``column`` can serve a condition on it.

    Retention's conditions pair a status (most rows are finished) with a timestamp range (few
    rows are old). Without statistics SQLite prefers the status index and scans every finished
    row inside the prune's write transaction; so the status is only filtered, and the timestamp's
    index finds the rows. PostgreSQL plans by its statistics and is not hurt.
    """
    return column.concat("")


async def delete_batch(
    conn: AsyncConnection,
    key: sa.Column[Any],
    where: sa.ColumnElement[bool],
    order_by: sa.ColumnElement[Any],
    limit: int,
) -> int:
    """Delete at most ``limit`` rows of ``key``'s table matching ``where``, oldest (``order_by``)
    first; returns how many went. Retention prunes through it, one short transaction per batch."""
    doomed = sa.select(key).where(where).order_by(order_by).limit(limit).scalar_subquery()
    result = await conn.execute(sa.delete(key.table).where(key.in_(doomed)))
    return int(result.rowcount or 0)


# --- error mapping ---------------------------------------------------------------------------

_UNAVAILABLE_HINTS = (
    "database is locked",
    "unable to open database",
    "disk i/o error",
    "connection",
    "could not connect",
    "server closed",
    "terminating",
    "timeout",
    "too many clients",
    "cannot connect now",
    "the database system is",
)


#: Messages of a missed deadline: another process's SQLite lock, PostgreSQL's statement_timeout
#: ("canceling statement due to statement timeout") and lock_timeout.
_DEADLINE_HINTS = ("database is locked", "statement timeout", "lock timeout")


def _is_deadline(error: BaseException | None) -> bool:
    """asyncpg's own deadline errors (its ``command_timeout``, the server's cancellations)."""
    return type(error).__name__ in (
        "QueryCanceledError",
        "LockNotAvailableError",
        "TimeoutError",
    ) or isinstance(error, asyncio.TimeoutError | TimeoutError)


def map_database_error(error: BaseException) -> FailoverError | None:
    """The error-vocabulary equivalent of a driver/SQLAlchemy error, or None to re-raise as is."""
    if isinstance(error, FailoverError):
        return None
    if isinstance(error, exc.IntegrityError):
        text = str(error.orig).lower()
        if "instance_name" in text:
            return Conflict(
                "an instance with this name already exists for the proxy",
                ErrorCode.DUPLICATE_INSTANCE_NAME,
            )
        if "one_open_switch" in text or "proxy_failover_events.proxy_id" in text:
            return Conflict(
                "a failover is already in progress for this proxy",
                ErrorCode.FAILOVER_IN_PROGRESS,
            )
        return None
    if isinstance(error, exc.DBAPIError):
        text = str(error.orig).lower()
        if any(hint in text for hint in _DEADLINE_HINTS) or _is_deadline(error.orig):
            return StorageTimeout(f"storage unavailable: {_first_line(error.orig)}")
        if error.connection_invalidated or isinstance(
            error, exc.OperationalError | exc.InterfaceError
        ):
            return StorageUnavailable(f"storage unavailable: {_first_line(error.orig)}")
        if any(hint in text for hint in _UNAVAILABLE_HINTS):
            return StorageUnavailable(f"storage unavailable: {_first_line(error.orig)}")
        return None
    if isinstance(error, exc.TimeoutError):  # pool exhausted
        return StorageTimeout("storage unavailable: connection pool timeout")
    if isinstance(error, asyncio.TimeoutError | TimeoutError) or _is_deadline(error):
        return StorageTimeout(f"storage unavailable: no answer in time ({error or 'timeout'})")
    if isinstance(error, OSError | socket.gaierror):
        return StorageUnavailable(f"storage unavailable: {error}")
    if type(error).__module__.startswith("asyncpg") and (
        "Connection" in type(error).__name__ or "CannotConnect" in type(error).__name__
    ):
        return StorageUnavailable(f"storage unavailable: {error}")
    return None


def _first_line(error: object) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


@contextlib.asynccontextmanager
async def mapped_errors() -> AsyncIterator[None]:
    """Re-raise database errors as ``FailoverError`` subclasses (018 outage, 005/009 integrity)."""
    try:
        yield
    except Exception as error:
        mapped = map_database_error(error)
        if mapped is None:
            raise
        raise mapped from error


# --- migrations ------------------------------------------------------------------------------


def alembic_config(connection: sa.Connection | None = None) -> Config:
    """An Alembic config pointing at the packaged migrations (no alembic.ini needed)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def _upgrade(connection: sa.Connection) -> None:
    if connection.dialect.name == "postgresql":
        # Lifted for this transaction only: DDL may wait for another replica's migration.
        connection.execute(sa.text("SET LOCAL statement_timeout = 0"))
        connection.execute(sa.text("SET LOCAL lock_timeout = 0"))
        connection.execute(
            sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK_KEY}
        )
    command.upgrade(alembic_config(connection), "head")


async def upgrade(engine: AsyncEngine) -> None:
    """Apply every pending migration in one transaction (SQLite: under its write lock)."""
    writer = engine.execution_options(**{SQLITE_BEGIN_OPTION: "IMMEDIATE"})
    async with mapped_errors(), writer.begin() as conn:
        await conn.run_sync(_upgrade)


async def migrate(url: str | URL | None) -> None:
    """Bring the database at ``url`` to the latest schema (``proxy-failover migrate``)."""
    engine = create_engine(
        url, pool_size=1, max_overflow=0, timeout_seconds=MIGRATION_TIMEOUT_SECONDS
    )
    try:
        await upgrade(engine)
    finally:
        await engine.dispose()


async def current_revision(conn: AsyncConnection) -> str | None:
    """The Alembic revision the database is at (None before the first migration)."""

    def _read(sync_conn: sa.Connection) -> str | None:
        from alembic.migration import MigrationContext

        return MigrationContext.configure(sync_conn).get_current_revision()

    return await conn.run_sync(_read)
