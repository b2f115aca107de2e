"""An aiosqlite-compatible SQLite connection that runs each call on the event loop's own thread.

Why: aiosqlite hands every call (cursor, execute, fetch, close, commit) to a worker thread and
back, four hops per statement; a health report cost ~30 hops, and each hop costs the event loop
more CPU (queue, futex, GIL hand-over, loop wake-up) than the SQLite work itself, which on a WAL
database with ``synchronous=NORMAL`` is microseconds of page-cache reads and buffered appends.

What keeps that safe: the one call that can wait, a lock held by another *process*
(``BEGIN IMMEDIATE``, rarely a read during WAL recovery), never waits inside SQLite: the busy
timeout is 0 and ``SQLITE_BUSY`` is retried here with ``asyncio.sleep`` back-off up to the same
30 s budget, so the loop keeps serving. Writers of this process queue on ``database.write_gate``
before ``BEGIN IMMEDIATE`` and so never meet each other's lock. SQLAlchemy's aiosqlite dialect
drives these objects through ``create_async_engine(..., async_creator=...)``.

The adapter's side of that contract is private to SQLAlchemy: ``pyproject.toml`` pins SQLAlchemy
to the minor version tested, and ``tests/integration/test_sqlite_adapter_contract.py`` fails,
saying what to re-check, when the adapter stops driving these objects as expected.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

T = TypeVar("T")

#: Default time a statement may wait for another process's lock before ``database is locked``
#: (the store passes its database timeout, so a locked file is an outage within it).
BUSY_BUDGET_SECONDS = 1.5
_FIRST_BACKOFF = 0.001
_MAX_BACKOFF = 0.05


def _is_busy(error: sqlite3.OperationalError) -> bool:
    code = getattr(error, "sqlite_errorcode", None)
    if code is not None:
        return bool(code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED))
    return "locked" in str(error).lower()


async def _retry_busy(call: Callable[[], T], budget_seconds: float) -> T:
    """Run ``call``; while SQLite answers busy (another process holds the lock), sleep and retry
    for at most ``budget_seconds``.

    A statement that returned ``SQLITE_BUSY`` had no effect, so running it again is safe.
    """
    deadline = time.monotonic() + budget_seconds
    backoff = _FIRST_BACKOFF
    while True:
        try:
            return call()
        except sqlite3.OperationalError as error:
            if not _is_busy(error) or time.monotonic() >= deadline:
                raise
        await asyncio.sleep(backoff)
        backoff = min(backoff * 2, _MAX_BACKOFF)


class InlineCursor:
    """The async cursor API SQLAlchemy's aiosqlite adapter uses, over a ``sqlite3.Cursor``."""

    def __init__(self, cursor: sqlite3.Cursor, busy_budget_seconds: float) -> None:
        self._cursor = cursor
        self._budget = busy_budget_seconds

    async def __aenter__(self) -> InlineCursor:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        self._cursor.close()

    async def execute(self, sql: str, parameters: Any = None) -> InlineCursor:
        if parameters is None:
            await _retry_busy(lambda: self._cursor.execute(sql), self._budget)
        else:
            await _retry_busy(lambda: self._cursor.execute(sql, parameters), self._budget)
        return self

    async def executemany(self, sql: str, parameters: Iterable[Any]) -> InlineCursor:
        rows = list(parameters)
        await _retry_busy(lambda: self._cursor.executemany(sql, rows), self._budget)
        return self

    async def fetchone(self) -> Any:
        return self._cursor.fetchone()

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        return self._cursor.fetchmany(size if size is not None else self._cursor.arraysize)

    async def fetchall(self) -> list[Any]:
        return self._cursor.fetchall()

    async def close(self) -> None:
        self._cursor.close()

    async def nextset(self) -> None:
        return None

    async def setinputsizes(self, *_sizes: Any) -> None:
        return None

    @property
    def description(self) -> Any:
        return self._cursor.description

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    @property
    def lastrowid(self) -> int | None:
        return self._cursor.lastrowid

    @property
    def arraysize(self) -> int:
        return self._cursor.arraysize

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        self._cursor.arraysize = value


class _RunNow:
    """Stands in for aiosqlite's call queue: SQLAlchemy queues a few calls on it directly."""

    def put_nowait(self, item: tuple[asyncio.Future[Any] | None, Callable[[], Any]]) -> None:
        future, function = item
        try:
            result = function()
        except BaseException as error:  # handed to the awaiting caller, as aiosqlite does
            if future is not None:
                future.set_exception(error)
            return
        if future is not None:
            future.set_result(result)


class InlineConnection:
    """The subset of ``aiosqlite.Connection`` that SQLAlchemy's aiosqlite dialect calls."""

    def __init__(
        self, connection: sqlite3.Connection, busy_budget_seconds: float = BUSY_BUDGET_SECONDS
    ) -> None:
        self._connection: sqlite3.Connection | None = connection
        self._budget = busy_budget_seconds
        self._tx = _RunNow()

    @property
    def _conn(self) -> sqlite3.Connection:
        if self._connection is None:
            raise ValueError("no active connection")
        return self._connection

    @property
    def isolation_level(self) -> str | None:
        return self._conn.isolation_level

    def cursor(self) -> InlineCursor:
        return InlineCursor(self._conn.cursor(), self._budget)

    async def execute(self, sql: str, parameters: Sequence[Any] | None = None) -> InlineCursor:
        cursor = self.cursor()
        return await cursor.execute(sql, parameters)

    async def commit(self) -> None:
        await _retry_busy(self._conn.commit, self._budget)

    async def rollback(self) -> None:
        self._conn.rollback()

    async def create_function(self, *args: Any, **kwargs: Any) -> None:
        self._conn.create_function(*args, **kwargs)

    async def close(self) -> None:
        if self._connection is not None:
            connection, self._connection = self._connection, None
            connection.close()

    def stop(self) -> None:
        """Terminate (SQLAlchemy's forced close): closing is immediate here anyway."""
        if self._connection is not None:
            connection, self._connection = self._connection, None
            connection.close()


def connector(database: str, busy_budget_seconds: float = BUSY_BUDGET_SECONDS) -> Callable[[], Any]:
    """The ``async_creator`` for ``create_async_engine``: opens one inline connection whose
    statements wait at most ``busy_budget_seconds`` for another process's lock."""

    async def connect() -> InlineConnection:
        # busy_timeout 0: a lock held by another process is waited for in ``_retry_busy``, with
        # the event loop free, never inside SQLite.
        connection = sqlite3.connect(
            database,
            timeout=0,
            isolation_level=None,
            check_same_thread=False,
            uri=database.startswith("file:"),
        )
        return InlineConnection(connection, busy_budget_seconds)

    return connect
