"""The audit log: who did what, when, with what result.

API calls are audited by the API itself, with their caller (``AuditLog.record_audit``). Automatic
actions (the engine's failovers, recoveries, health changes) are audited by the notification
writer (``store.notifications``), inside the transaction of the change, as ``system`` actions:
``current_actor`` tells the two apart. It stays a context variable, set by the API's middleware for
the request: passing it explicitly would add a parameter to every use case of the library's
public ``ProxyFailoverService`` API, which this layout must not change.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from proxy_failover.core.model import Notification
from proxy_failover.core.webhooks import AuditEntry
from proxy_failover.store import database
from proxy_failover.store.group_commit import GroupCommit
from proxy_failover.store.prepared import PreparedStatement, bound_columns
from proxy_failover.store.tables import audit_log

log = logging.getLogger("proxy_failover.audit")

#: Who is acting in the current task: set by the API for the duration of a request. Notifications
#: written while it is unset come from background work and are audited as ``system`` actions.
current_actor: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "pfo_current_actor", default=None
)

SYSTEM_ACTOR = "system"

_COLUMNS = (
    "occurred_at",
    "actor",
    "action",
    "proxy_id",
    "target",
    "result",
    "status_code",
    "request_id",
    "details",
)
_PARAMETERS = tuple(f"p_{name}" for name in _COLUMNS)
#: Every audit row is written by this one statement: the API's rows (after each mutating call,
#: group-committed) and the system rows of automatic actions (in their change's transaction).
INSERT_ROWS = PreparedStatement(
    "audit_insert",
    sa.insert(audit_log).values(bound_columns(audit_log, _COLUMNS)),
)


async def insert_rows(connection: AsyncConnection, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert audit rows (dicts of ``audit_log`` columns; absent ones are NULL) in one go."""
    values = [tuple(row.get(name) for name in _COLUMNS) for row in rows]
    await INSERT_ROWS.execute_many(connection, values, _PARAMETERS, {})


def _audit_target(notification: Notification) -> str | None:
    """The most specific thing an automatic action touched: its event, else its instance."""
    data = notification.data
    for key in ("eventId", "id", "instanceId", "targetInstanceId"):
        value = data.get(key)
        if isinstance(value, str) and value:
            return value[:255]
    return None


def system_row(notification: Notification, data: Any) -> dict[str, Any]:
    """The audit row of an automatic action; ``data`` is the payload's ``data`` as delivered."""
    return {
        "occurred_at": notification.occurred_at,
        "actor": SYSTEM_ACTOR,
        "action": notification.type,
        "proxy_id": notification.proxy_id,
        "target": _audit_target(notification),
        "result": "success",
        "details": {"epoch": notification.epoch, "data": data},
    }


def _audit_from(row: sa.RowMapping) -> AuditEntry:
    return AuditEntry(
        id=row["id"],
        occurred_at=row["occurred_at"],
        actor=row["actor"],
        action=row["action"],
        proxy_id=row["proxy_id"],
        target=row["target"],
        result=row["result"],
        status_code=row["status_code"],
        request_id=row["request_id"],
        details=dict(row["details"] or {}),
    )


#: Audit rows kept in memory while the database refuses them (a full disk), oldest dropped first.
BACKLOG_LIMIT = 10_000
#: While rows wait, new ones join the backlog and a write is retried this often (by a task of
#: its own, so rows are written once space returns even if no new row comes to push them).
BACKLOG_RETRY_SECONDS = 1.0


class AuditLog:
    """Writes (group-committed) and reads of ``audit_log``, on the store's engine.

    A row the database refuses (a full disk, a lost connection) is not dropped: it waits in a
    bounded backlog, retried every ``BACKLOG_RETRY_SECONDS`` by a task of its own and written
    before newer rows once writes succeed again (``flush_backlog``); ``close`` tries once more.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self._db = database.EngineAccess(engine)
        self._audit_rows: GroupCommit[str, dict[str, Any], None] = GroupCommit(self._insert_audit)
        self._backlog: collections.deque[dict[str, Any]] = collections.deque(maxlen=BACKLOG_LIMIT)
        self._retry_at = 0.0
        self._retrying: asyncio.Task[None] | None = None
        #: One flush at a time: two would both write the rows still waiting (duplicates).
        self._flushing = asyncio.Lock()

    @property
    def backlog(self) -> int:
        """Rows recorded but not yet written (the database refused them so far)."""
        return len(self._backlog)

    async def flush_backlog(self) -> int:
        """Write the rows the database refused earlier, oldest first; returns how many remain."""
        async with self._flushing:
            while self._backlog:
                rows = list(self._backlog)
                try:
                    async with self._db.write() as conn:
                        await insert_rows(conn, rows)
                except Exception as error:
                    log.warning(
                        "audit: %d rows still waiting for the database: %s", len(rows), error
                    )
                    self._retry_at = time.monotonic() + BACKLOG_RETRY_SECONDS
                    break
                for _ in rows:
                    self._backlog.popleft()
            return len(self._backlog)

    async def record_audit(self, entry: AuditEntry) -> None:
        """Write one audit row; returns once it is committed.

        Group commit (``store.group_commit``): rows recorded while a batch waits for the write
        gate join the next one, and one transaction (one multi-row INSERT) commits them all.
        Under load that is one transaction per batch instead of one per request.
        """
        row = {
            "occurred_at": entry.occurred_at,
            "actor": entry.actor[:255],
            "action": entry.action[:128],
            "proxy_id": None if entry.proxy_id is None else entry.proxy_id[:128],
            "target": None if entry.target is None else entry.target[:255],
            "result": entry.result[:64],
            "status_code": entry.status_code,
            "request_id": entry.request_id,
            "details": dict(entry.details) or None,
        }
        if self._backlog:  # keep the order: behind the rows still waiting
            self._backlog.append(row)
            if time.monotonic() >= self._retry_at:  # at most one retry a second, not per row
                await self.flush_backlog()
            return
        try:
            await self._audit_rows.submit("", row)
        except Exception as error:
            log.error("audit: the database refused a row, keeping it to retry: %s", error)
            self._backlog.append(row)
            self._retry_at = time.monotonic() + BACKLOG_RETRY_SECONDS
            self._keep_retrying()

    def _keep_retrying(self) -> None:
        """Start the task that retries the backlog until it is written (unless one runs)."""
        if self._retrying is None or self._retrying.done():
            self._retrying = asyncio.get_running_loop().create_task(self._retry_until_written())

    async def _retry_until_written(self) -> None:
        while self._backlog:
            await asyncio.sleep(max(0.0, self._retry_at - time.monotonic()))
            if time.monotonic() >= self._retry_at:  # a recorded row may have flushed meanwhile
                await self.flush_backlog()

    async def close(self) -> None:
        """Stop retrying; one last attempt at the backlog, and say loudly what could not go."""
        if self._retrying is not None:
            self._retrying.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._retrying
            self._retrying = None
        if self._backlog and await self.flush_backlog():
            log.error("audit: %d rows lost: the database refused them until shutdown", self.backlog)

    async def _insert_audit(
        self, _key: str, take: Callable[[], list[dict[str, Any]]]
    ) -> list[Exception | None]:
        """One multi-row INSERT of the audit rows waiting when the write gate opens."""
        async with self._db.write() as conn:
            rows = take()
            await insert_rows(conn, rows)
        return [None] * len(rows)

    async def prune(self, before: datetime, limit: int) -> int:
        """Delete up to ``limit`` rows that occurred before ``before`` (retention), oldest first.

        The newest row always stays, whatever its age: SQLite would otherwise hand its id out
        again (its ids are not AUTOINCREMENT), and ids are what clients page by.
        """
        a = audit_log
        newest = sa.select(sa.func.max(a.c.id)).scalar_subquery()
        async with self._db.write() as conn:
            return await database.delete_batch(
                conn,
                a.c.id,
                sa.and_(a.c.occurred_at < before, a.c.id != newest),
                a.c.occurred_at,  # the timestamp's index finds the old rows, none: no scan
                limit,
            )

    async def list_audit(
        self, proxy_id: str | None = None, limit: int = 100, before_id: int | None = None
    ) -> list[AuditEntry]:
        """Newest first; ``before_id``: only older rows (where a page ended)."""
        statement = sa.select(audit_log)
        if proxy_id is not None:
            statement = statement.where(audit_log.c.proxy_id == proxy_id)
        if before_id is not None:
            statement = statement.where(audit_log.c.id < before_id)
        statement = statement.order_by(audit_log.c.id.desc()).limit(limit)
        async with self._db.read() as conn:
            rows = (await conn.execute(statement)).mappings().all()
        return [_audit_from(row) for row in rows]
