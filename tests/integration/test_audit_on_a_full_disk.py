"""Audit rows survive a full disk (SQLite) or a stopped server (PostgreSQL, a cluster of the
test's own): kept in a bounded backlog, retried by a task of their own and written once the
database takes writes again; closing the store makes one last attempt.

Before, 19 rows were lost when SQLite's disk filled: the group commit failed and nothing kept them.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from proxy_failover.core.webhooks import AuditEntry
from proxy_failover.store import Store
from proxy_failover.store.audit import AuditLog
from tests.helpers.full_disk import fill, small_filesystem
from tests.helpers.pg_cluster import own_cluster
from tests.helpers.processes import wait_for

T0 = datetime(2026, 12, 1, tzinfo=UTC)


def _entry(n: int) -> AuditEntry:
    return AuditEntry(
        occurred_at=T0 + timedelta(seconds=n),
        actor="alice",
        action="POST /proxy/instances",
        result="success",
        proxy_id="edge",
        target=f"row-{n}",
        status_code=201,
        request_id=f"req-{n}",
    )


async def test_audit_rows_refused_by_a_full_disk_are_written_once_space_returns() -> None:
    with small_filesystem() as folder:
        store = Store(f"sqlite+aiosqlite:///{folder / 'pfo.db'}")
        try:
            await store.migrate()
            audit = AuditLog(store.engine)
            await audit.record_audit(_entry(0))
            filler = fill(folder)
            for n in range(1, 20):
                await audit.record_audit(_entry(n))  # refused by the disk: never raises
            assert audit.backlog > 0
            assert await audit.flush_backlog() == audit.backlog  # still full: nothing written

            filler.unlink()
            await audit.record_audit(_entry(20))  # joins the backlog (retried once a second)
            assert await audit.flush_backlog() == 0  # what the next retry does
            assert audit.backlog == 0
            rows = await audit.list_audit("edge", limit=100)
        finally:
            await store.close()
    assert [row.target for row in reversed(rows)] == [f"row-{n}" for n in range(21)]


async def test_rows_waiting_when_the_store_closes_get_one_last_attempt() -> None:
    with small_filesystem() as folder:
        store = Store(f"sqlite+aiosqlite:///{folder / 'pfo.db'}")
        await store.migrate()
        audit = AuditLog(store.engine)
        store.before_close.append(audit.close)  # as the service does
        filler = fill(folder)
        for n in range(5):
            await audit.record_audit(_entry(n))
        assert audit.backlog == 5
        filler.unlink()
        await store.close()  # before the retry task's next try: close writes them
        reopened = Store(f"sqlite+aiosqlite:///{folder / 'pfo.db'}")
        try:
            rows = await AuditLog(reopened.engine).list_audit("edge", limit=100)
        finally:
            await reopened.close()
    assert [row.target for row in reversed(rows)] == [f"row-{n}" for n in range(5)]


@pytest.mark.postgres
async def test_audit_rows_refused_by_a_stopped_postgresql_are_written_once_it_returns() -> None:
    with own_cluster() as cluster:
        store = Store(cluster.url, timeout_seconds=1.0)
        try:
            await store.migrate()
            audit = AuditLog(store.engine)
            await audit.record_audit(_entry(0))
            cluster.stop("immediate")
            for n in range(1, 20):
                await audit.record_audit(_entry(n))  # refused: never raises, kept
            assert audit.backlog == 19
            cluster.start()

            async def written() -> bool:  # by the retry task: no new row pushes them
                return audit.backlog == 0

            await wait_for(written, within=20)
            rows = await audit.list_audit("edge", limit=100)
        finally:
            await store.close()
    assert [row.target for row in reversed(rows)] == [f"row-{n}" for n in range(20)]
