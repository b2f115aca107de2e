"""Hot constant statements, declared once at module level and run prepared on the driver.

Why: per call, ``Connection.execute`` (compiled-cache lookup, execution context, result and row
objects, greenlet hops) cost several times what the database spends on the statement: on SQLite
several times the statement itself, on PostgreSQL about four times asyncpg's own round trip for
a one-row read. A ``PreparedStatement`` is compiled once per dialect and run on the driver
connection of the caller's transaction, with the same bind and result processing SQLAlchemy
applies: SQLite's cursor, or asyncpg's own statement cache (prepared once per connection, then
one round trip each).

The compiled form lives on the ``PreparedStatement`` object itself, so the cache holds exactly the
declared statements: nothing keyed by ``id()`` that could grow with statements built per call, or
run another statement's SQL once an id is recycled. Declaring a name twice (a statement built per
call) is refused.
"""

from __future__ import annotations

import contextlib
import operator
import sqlite3
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, NoReturn

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection

#: What can be prepared: a SELECT (rows), an UPDATE (none) or an INSERT (rows with RETURNING).
Statement = sa.Select[Any] | sa.Update | sa.Insert


def bound_columns(table: sa.Table, names: Sequence[str]) -> dict[str, sa.BindParameter[Any]]:
    """``{name: :p_name}`` for the ``values`` of a prepared INSERT or UPDATE of ``table``, each
    parameter typed as its column (so the prepared path applies the column's bind processing)."""
    return {name: sa.bindparam(f"p_{name}", type_=table.c[name].type) for name in names}


class _Compiled:
    """A statement compiled for SQLite, run on the driver connection of the unit's transaction
    (``_CompiledAsyncpg``: the same for PostgreSQL)."""

    def __init__(self, statement: Statement, dialect: Dialect) -> None:
        compiled = statement.compile(dialect=dialect)
        self.sql: str = compiled.string
        if "POSTCOMPILE" in self.sql:  # an IN list, expanded per call: not preparable
            raise ValueError(f"cannot prepare a statement with an expanding IN: {self.sql}")
        self._binds: list[tuple[str, Callable[[Any], Any] | None]] = [
            (name, compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect))
            for name in compiled.positiontup or ()
        ]
        # Literals in the statement (``count + 1``) are binds too, with their value built in;
        # the caller's values are the ``p_*`` ones.
        self._constants = {
            name: bind.effective_value
            for name, bind in compiled.binds.items()
            if not name.startswith("p_")
        }
        self._dialect = dialect
        self._columns = list(statement.exported_columns)  # a SELECT's, a DML's RETURNING
        self._results = self._processors([None] * len(self._columns))
        self._returns_rows = bool(self._columns)

    def _processors(self, column_types: Sequence[object]) -> list[tuple[int, Callable[[Any], Any]]]:
        """Only the columns that need converting (datetimes, JSON, booleans), by position;
        ``column_types`` are the driver's types of the result's columns, where it needs them."""
        dialect = self._dialect
        processors = (
            column.type.dialect_impl(dialect).result_processor(dialect, column_type)
            for column, column_type in zip(self._columns, column_types, strict=True)
        )
        return [(at, process) for at, process in enumerate(processors) if process]

    async def run(self, connection: AsyncConnection, values: Mapping[str, Any]) -> list[Any]:
        """Execute with ``values`` (by bind name); the rows in select order (tuples, or lists
        when a column was converted)."""
        raw = await self._fetch(connection, self._parameters(values))
        if not self._results:
            return raw
        rows = []
        for row in raw:
            converted = list(row)
            for at, process in self._results:
                converted[at] = process(converted[at])
            rows.append(converted)
        return rows

    def _parameters(self, values: Mapping[str, Any]) -> tuple[Any, ...]:
        if self._constants:
            values = {**self._constants, **values}
        return tuple(
            values[name] if process is None else process(values[name])
            for name, process in self._binds
        )

    async def run_many(
        self,
        connection: AsyncConnection,
        rows: Sequence[Sequence[Any]],
        names: Sequence[str],
        shared: Mapping[str, Any],
    ) -> None:
        """Execute a statement that returns nothing once per item of ``rows`` (executemany).

        Each row holds the values of ``names``, in that order; ``shared`` values are the same for
        every row and are converted once.
        """
        fixed = self._parameters({**shared, **dict.fromkeys(names)})
        slots: list[tuple[int, int, Callable[[Any], Any] | None]] = []
        for position, (name, process) in enumerate(self._binds):
            if name in names:
                slots.append((position, names.index(name), process))
        parameters: list[Any]
        if len(self._binds) > 1 and all(process is None for _, _, process in slots):
            # Nothing to convert per row (ints, floats, strings): each row's parameters are
            # picked from the row and the shared values in one C call, not slot by slot.
            width = len(names)
            picks = [
                next((index for at, index, _ in slots if at == position), width + position)
                for position in range(len(self._binds))
            ]
            pick = operator.itemgetter(*picks)
            parameters = [pick((*row, *fixed)) for row in rows]
        else:
            parameters = []
            for row in rows:
                values = list(fixed)
                for position, index, process in slots:
                    value = row[index]
                    values[position] = value if process is None else process(value)
                parameters.append(values)
        await self._execute_many(connection, parameters)

    async def _fetch(self, connection: AsyncConnection, parameters: tuple[Any, ...]) -> list[Any]:
        async with self._cursor(connection, parameters) as cursor:
            await cursor.execute(self.sql, parameters)
            return list(await cursor.fetchall()) if self._returns_rows else []

    async def _execute_many(self, connection: AsyncConnection, parameters: list[Any]) -> None:
        async with self._cursor(connection, parameters) as cursor:
            await cursor.executemany(self.sql, parameters)

    @contextlib.asynccontextmanager
    async def _cursor(self, connection: AsyncConnection, parameters: Any) -> AsyncIterator[Any]:
        """A cursor on the driver connection of ``connection``'s transaction (already begun),
        closed after use; a driver error is raised as SQLAlchemy would raise it (so
        ``database.mapped_errors`` maps it like any other)."""
        sync: Any = connection.sync_connection
        cursor = sync.connection.driver_connection.cursor()
        try:
            yield cursor
            await cursor.close()
        except sqlite3.Error as error:
            raise sa.exc.DBAPIError.instance(self.sql, parameters, error, sqlite3.Error) from error


class _CompiledAsyncpg(_Compiled):
    """A statement compiled for PostgreSQL, run on asyncpg's connection of the unit's
    transaction through asyncpg's statement cache.

    The transaction is the adapter's: SQLAlchemy's asyncpg adapter sends ``BEGIN`` before the
    first statement of a transaction, so a statement that opens one starts it through the
    adapter (which then commits or rolls it back), and a driver error is raised as the adapter
    and SQLAlchemy raise it (so ``database.mapped_errors`` maps it like any other). Both use
    the adapter's private ``_transaction``, ``_start_transaction`` and ``_handle_exception``:
    every PostgreSQL test of a unit of work runs through here, so a SQLAlchemy that changes
    them fails the suite, not production."""

    def __init__(self, statement: Statement, dialect: Dialect) -> None:
        super().__init__(statement, dialect)
        #: asyncpg's result processors need the columns' type OIDs: read from the statement
        #: prepared by its first run (as SQLAlchemy reads them from each cursor's description).
        self._typed = not self._returns_rows

    def _processors(self, column_types: Sequence[object]) -> list[tuple[int, Callable[[Any], Any]]]:
        if any(column_type is None for column_type in column_types):
            return []  # not known before the first run
        return super()._processors(column_types)

    async def _fetch(self, connection: AsyncConnection, parameters: tuple[Any, ...]) -> list[Any]:
        adapter = _adapter(connection)
        try:
            driver = await _in_transaction(adapter)
            if not self._typed:
                prepared = await driver.prepare(self.sql)
                oids = [attribute.type.oid for attribute in prepared.get_attributes()]
                self._results, self._typed = self._processors(oids), True
            return list(await driver.fetch(self.sql, *parameters))
        except Exception as error:
            _raise_as_sqlalchemy(adapter, self.sql, parameters, error)

    async def _execute_many(self, connection: AsyncConnection, parameters: list[Any]) -> None:
        adapter = _adapter(connection)
        try:
            driver = await _in_transaction(adapter)
            await driver.executemany(self.sql, parameters)
        except Exception as error:
            _raise_as_sqlalchemy(adapter, self.sql, parameters, error)


def _adapter(connection: AsyncConnection) -> Any:
    """SQLAlchemy's asyncpg adapter under ``connection`` (its DBAPI connection)."""
    sync: Any = connection.sync_connection
    return sync.connection.dbapi_connection


async def _in_transaction(adapter: Any) -> Any:
    """The asyncpg connection of ``adapter``, its transaction begun (``BEGIN`` at the first
    statement, as the adapter's own cursor does)."""
    if adapter._transaction is None:
        await adapter._start_transaction()  # raises the adapter's DBAPI error on failure
    return adapter.driver_connection


def _raise_as_sqlalchemy(adapter: Any, sql: str, parameters: Any, error: Exception) -> NoReturn:
    """Raise ``error`` as SQLAlchemy's execution would: the adapter's DBAPI error wrapped in
    ``sqlalchemy.exc.DBAPIError``'s subclass of the same name (IntegrityError, ...), marked
    ``connection_invalidated`` when the connection is gone; anything the adapter does not
    translate (a timeout) as it is."""
    dbapi = adapter.dbapi
    try:
        if not isinstance(error, dbapi.Error):
            adapter._handle_exception(error)
        raise error
    except dbapi.Error as translated:
        gone = adapter.driver_connection.is_closed()
        raise sa.exc.DBAPIError.instance(
            sql, parameters, translated, dbapi.Error, connection_invalidated=gone
        ) from error


#: The dialects whose statements run prepared on the driver, and how.
_COMPILERS: dict[str, type[_Compiled]] = {"sqlite": _Compiled, "postgresql": _CompiledAsyncpg}


@dataclass(frozen=True, eq=False)
class PreparedStatement:
    """A constant statement with ``p_*`` bind parameters, declared once at module level.

    ``name`` is unique: declaring it again (e.g. building the statement per call) raises.
    """

    name: str
    statement: Statement
    _compiled: dict[str, _Compiled] = field(default_factory=dict, init=False, repr=False)

    _declared: ClassVar[set[str]] = set()

    def __post_init__(self) -> None:
        if self.name in PreparedStatement._declared:
            raise ValueError(
                f"prepared statement {self.name!r} declared twice: declare each one once, "
                "at module level (a statement built per call would be compiled per call)"
            )
        PreparedStatement._declared.add(self.name)

    def compiled_for(self, connection: AsyncConnection) -> _Compiled | None:
        """The statement compiled for this connection's dialect (once; the URLs
        ``database.normalize_url`` accepts use aiosqlite or asyncpg), or None (SQLAlchemy's
        regular execution)."""
        dialect = connection.dialect
        compiled = self._compiled.get(dialect.name)
        if compiled is None:
            compiler = _COMPILERS.get(dialect.name)
            if compiler is None:
                return None
            compiled = self._compiled[dialect.name] = compiler(self.statement, dialect)
        return compiled

    async def rows(
        self, connection: AsyncConnection, names: Sequence[str], parameters: Mapping[str, Any]
    ) -> list[dict[str, Any]]:
        """The rows as dicts of ``names`` (the selected columns' names, in order)."""
        compiled = self.compiled_for(connection)
        if compiled is None:
            result = await connection.execute(self.statement, dict(parameters))
            return [dict(row) for row in result.mappings().all()]
        return [
            dict(zip(names, row, strict=True)) for row in await compiled.run(connection, parameters)
        ]

    async def tuples(
        self, connection: AsyncConnection, parameters: Mapping[str, Any]
    ) -> Sequence[Sequence[Any]]:
        """The rows as tuples in select order (no dict per row: for the hot bulk reads)."""
        compiled = self.compiled_for(connection)
        if compiled is None:
            return (await connection.execute(self.statement, dict(parameters))).all()
        return await compiled.run(connection, parameters)

    async def execute(self, connection: AsyncConnection, parameters: Mapping[str, Any]) -> None:
        """Run a statement that returns nothing (an UPDATE, an INSERT) once."""
        compiled = self.compiled_for(connection)
        if compiled is None:
            await connection.execute(self.statement, dict(parameters))
        else:
            await compiled.run(connection, parameters)

    async def execute_many(
        self,
        connection: AsyncConnection,
        rows: Sequence[Sequence[Any]],
        names: Sequence[str],
        shared: Mapping[str, Any],
    ) -> None:
        """Run a statement that returns nothing once per row (executemany); each row holds the
        values of ``names`` in order, ``shared`` the values common to every row."""
        compiled = self.compiled_for(connection)
        if compiled is None:
            batch = [{**dict(zip(names, row, strict=True)), **shared} for row in rows]
            await connection.execute(self.statement, batch)
        else:
            await compiled.run_many(connection, rows, names, shared)
