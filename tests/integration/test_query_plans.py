"""The open-switch lookup that every snapshot load makes is served by the partial unique index,
on both databases, once a proxy has a history: a plan that walks a proxy's events grows with
them (with 20,000 of them, the lookup took 14.7 ms on SQLite instead of 21 µs; PostgreSQL's
generic plan of the prepared statement walked 4,000 in 1.7 ms instead of 0.05 ms)."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Sequence
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine.url import make_url

from proxy_failover.store import statements
from proxy_failover.store.tables import OPEN_STATUSES, SWITCH_TYPES, events

OPEN_SWITCH_INDEX = "uq_proxy_failover_events_one_open_switch"
PROXY = "p-1"
HISTORY = 2000  # closed events of the proxy

#: The same lookup with its statuses and types bound as parameters (as it was): what the partial
#: index cannot serve, so that the test of the real statement could fail.
BOUND_LOOKUP = (
    sa.select(events)
    .where(
        events.c.proxy_id == sa.bindparam("p_proxy_id"),
        sa.or_(*(events.c.status == status for status in OPEN_STATUSES)),
        sa.or_(*(events.c.event_type == kind for kind in SWITCH_TYPES)),
    )
    .order_by(events.c.created_at.desc())
    .limit(1)
)
COLUMNS = "id, proxy_id, user_id, event_type, reason, status, triggered_by, epoch, created_at"
#: One closed switchover: (id, epoch, created_at) as SQL expressions.
CLOSED = "{}, '" + PROXY + "', 'u', 'switchover', 'planned', 'completed', 'manual', {}, {}"


def _arguments(compiled: Any, names: Sequence[str]) -> list[object]:
    """Values for the placeholders ``names`` (in their order): the proxy id, else the
    statement's own constants."""
    return [PROXY if name == "p_proxy_id" else compiled.params[name] for name in names]


def _sqlite_plan(path: str, statement: sa.ClauseElement) -> str:
    compiled = statement.compile(dialect=sqlite.dialect())
    arguments = _arguments(compiled, getattr(compiled, "positiontup", None) or ())
    with sqlite3.connect(path) as connection:
        rows = connection.execute(f"EXPLAIN QUERY PLAN {compiled}", arguments)
        return " | ".join(str(row[3]) for row in rows.fetchall())


async def _postgres_generic_plan(
    connection: asyncpg.Connection, statement: sa.ClauseElement
) -> str:
    """The plan of the statement prepared, as the store runs it, once PostgreSQL has settled on
    a generic plan (parameters unknown to the planner)."""
    compiled = statement.compile(dialect=postgresql.dialect())  # type: ignore[no-untyped-call]
    names = re.findall(r"%\((\w+)\)s", str(compiled))  # psycopg's placeholders, in order
    arguments = _arguments(compiled, names)
    numbered = str(compiled)
    for position, name in enumerate(names, 1):
        numbered = numbered.replace(f"%({name})s", f"${position}", 1)
    types = ", ".join("text" if isinstance(value, str) else "integer" for value in arguments)
    values = ", ".join(f"'{v}'" if isinstance(v, str) else str(v) for v in arguments)
    await connection.execute("DEALLOCATE ALL")
    await connection.execute(f"PREPARE lookup ({types}) AS {numbered}")
    rows = await connection.fetch(f"EXPLAIN EXECUTE lookup ({values})")
    return " | ".join(str(row[0]) for row in rows)


def _sqlite_history(path: str) -> None:
    with sqlite3.connect(path) as connection:
        for n in range(HISTORY):
            stamp = f"'2026-01-01 00:{n // 60 % 60:02d}:{n % 60:02d}.{n:06d}'"
            values = CLOSED.format(f"'e{n}'", n, stamp)
            connection.execute(f"INSERT INTO proxy_failover_events ({COLUMNS}) VALUES ({values})")


async def test_the_open_switch_lookup_uses_the_partial_unique_index(database_url: str) -> None:
    if database_url.startswith("sqlite"):
        path = make_url(database_url).database or ""
        _sqlite_history(path)
        plan, bound = (
            _sqlite_plan(path, s) for s in (statements.SELECT_OPEN_SWITCH.statement, BOUND_LOOKUP)
        )
    else:
        plain = make_url(database_url).set(drivername="postgresql")
        connection = await asyncpg.connect(plain.render_as_string(hide_password=False))
        try:
            values = CLOSED.format("'e' || g", "g", "now() - g * interval '1 second'")
            await connection.execute(
                f"INSERT INTO proxy_failover_events ({COLUMNS}) SELECT {values} "
                f"FROM generate_series(1, {HISTORY}) AS g"
            )
            await connection.execute("ANALYZE proxy_failover_events")
            await connection.execute("SET plan_cache_mode = force_generic_plan")
            plan = await _postgres_generic_plan(connection, statements.SELECT_OPEN_SWITCH.statement)
            bound = await _postgres_generic_plan(connection, BOUND_LOOKUP)
        finally:
            await connection.close()
    assert OPEN_SWITCH_INDEX in plan, plan
    assert OPEN_SWITCH_INDEX not in bound, bound
