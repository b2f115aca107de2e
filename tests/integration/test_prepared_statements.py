"""Prepared statements are declared module-level objects: each compiled once, nothing else run.

The store used to cache compiled statements by ``id(statement)``: a statement built per call grew
that cache forever, and a recycled id could run another statement's SQL. These pin the type that
replaced it, on SQLite and PostgreSQL (both prepared on the driver, with SQLAlchemy's answers).
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from proxy_failover.store import Store
from proxy_failover.store.leases import Leases
from proxy_failover.store.prepared import PreparedStatement
from proxy_failover.store.tables import leases

#: Declared once, at module level, as the store's own statements are.
_SELECT_LEASE = PreparedStatement(
    "test_select_lease",
    sa.select(leases.c.name, leases.c.holder, leases.c.epoch, leases.c.expires_at).where(
        leases.c.name == sa.bindparam("p_name")
    ),
)
_NAMES = ("name", "holder", "epoch", "expires_at")


async def test_a_statement_is_prepared_once_and_answers_as_sqlalchemy_does(
    database_url: str,
) -> None:
    store = Store(database_url)
    try:
        lease = await Leases(store.engine).try_acquire("prep", "holder-a", 30)
        assert lease is not None
        seen = []
        for _ in range(3):  # separate transactions, each on a pooled connection
            async with store.read() as reader:
                rows = await reader._rows(_SELECT_LEASE, _NAMES, {"p_name": "prep"})
                plain = await reader._all(_SELECT_LEASE.statement, {"p_name": "prep"})
                seen.append(_SELECT_LEASE.compiled_for(reader.connection))
            assert rows == [dict(row) for row in plain]
        async with store.write() as unit:  # a write transaction shares the same compiled form
            assert await unit._rows(_SELECT_LEASE, _NAMES, {"p_name": "prep"}) == rows
            seen.append(_SELECT_LEASE.compiled_for(unit.connection))
    finally:
        await store.close()
    (row,) = rows
    assert (row["holder"], row["epoch"]) == ("holder-a", 1)
    assert isinstance(row["expires_at"], datetime)
    assert row["expires_at"].tzinfo is UTC
    assert seen[0] is not None
    assert all(compiled is seen[0] for compiled in seen)  # compiled once, then reused
    assert sa.make_url(database_url).get_backend_name() in _SELECT_LEASE._compiled


def test_a_statement_built_per_call_is_refused() -> None:
    def build() -> PreparedStatement:
        return PreparedStatement("test_built_per_call", sa.select(leases.c.name))

    build()
    with pytest.raises(ValueError, match="declared twice"):
        build()


async def test_rows_runs_nothing_but_a_prepared_statement(sqlite_url: str) -> None:
    store = Store(sqlite_url)
    try:
        async with store.read() as reader:
            with pytest.raises(TypeError, match="PreparedStatement"):
                # mypy refuses this call too: the ignore below is checked (warn_unused_ignores)
                await reader._rows(sa.select(leases.c.name), ("name",), {})  # type: ignore[arg-type]
    finally:
        await store.close()
