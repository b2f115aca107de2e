"""The store: read transactions and write units of work locked per proxy.

A write unit of work for a proxy starts by locking that proxy (``SELECT ... FOR UPDATE`` on its
redundancy row on PostgreSQL; ``BEGIN IMMEDIATE`` on SQLite takes the database write lock up front),
so every read inside it is current and every compare-and-swap holds across processes and replicas.
Nothing here returns ORM/Core rows: callers get the frozen dataclasses of ``core.model``
(converted in ``store.rows``). The statements they run are declared in ``store.statements``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from proxy_failover.core.health import CheckCounters
from proxy_failover.core.model import (
    AdminState,
    EventStatus,
    EventType,
    FailoverConfig,
    FailoverEvent,
    HealthState,
    HealthStatus,
    Instance,
    Notification,
    ProxySummary,
    RedundancyStatus,
    StoredMetricSample,
)
from proxy_failover.core.pagination import EventPosition
from proxy_failover.store import database, statements
from proxy_failover.store.prepared import PreparedStatement
from proxy_failover.store.rows import (
    config_from,
    config_values,
    event_from,
    event_values,
    instance_from,
    instance_values,
    is_uuid,
    metric_from,
    metric_values,
    new_id,
    redundancy_from,
    redundancy_values,
)
from proxy_failover.store.tables import (
    OPEN_STATUSES,
    SWITCH_TYPES,
    configurations,
    events,
    instances,
    metrics,
    redundancy,
)

#: A stored health status's value -> the enum member (a dict lookup; calling the enum costs more).
_HEALTH_STATUS = {status.value: status for status in HealthStatus}

#: What a notification writer asks to be done once the change committed (e.g. hand the entries it
#: logged to live streams); called on the committing thread, never raising into the commit.
AfterCommit = Callable[[], None]

#: Called inside a write transaction, just before commit, on its connection, with the
#: notifications it produced — so the notification log (webhook deliveries, audit) is written
#: atomically with the change. May return an ``AfterCommit``.
NotificationWriter = Callable[
    [AsyncConnection, Sequence[Notification]], Awaitable[AfterCommit | None]
]

_log = logging.getLogger("proxy_failover.store")


#: What the bulk probe path reads of an instance (and its proxy's redundancy row) to decide, with
#: ``core.health.is_routine_success``, whether a success may be written in bulk: (health, request
#: counters, in maintenance, redundancy row overridden, when its status last changed). Plain
#: tuples, unpacked by position: the bulk path makes one per result, and a named tuple's
#: construction and attribute reads were a tenth of its CPU (frozen dataclasses a third).
ProbeState = tuple[HealthState, CheckCounters, bool, bool, datetime | None]

#: One routine success to write, with the values ``core.health`` computed: (instance id, run of
#: successes, total requests, successful requests, average latency ms, error rate, latency ms
#: measured) - the parameters of the bulk UPDATE (``statements.ROUTINE_SUCCESS_PARAMETERS``), in
#: order. A plain tuple for the same reason as ``ProbeState``.
RoutineSuccess = tuple[str, int, int, int, float | None, float | None, float | None]


class Reader:
    """Queries over one session/transaction; every result is a core value."""

    def __init__(self, connection: AsyncConnection) -> None:
        self.connection = connection

    async def _execute(self, statement: Any, parameters: Any = None) -> sa.CursorResult[Any]:
        result: sa.CursorResult[Any] = await self.connection.execute(statement, parameters)
        return result

    async def _one(self, statement: Any, parameters: Any = None) -> sa.RowMapping | None:
        row: sa.RowMapping | None = (await self._execute(statement, parameters)).mappings().first()
        return row

    async def _rows(
        self, statement: PreparedStatement, names: Sequence[str], parameters: Mapping[str, Any]
    ) -> list[dict[str, Any]]:
        """A declared statement's rows as dicts of ``names``; prepared on SQLite (see
        ``store.prepared``), through SQLAlchemy on PostgreSQL. Nothing else is accepted."""
        if not isinstance(statement, PreparedStatement):
            raise TypeError(
                f"_rows runs only module-level PreparedStatement objects, not {type(statement)!r}"
            )
        return await statement.rows(self.connection, names, parameters)

    async def _tuples(
        self, statement: PreparedStatement, parameters: Mapping[str, Any]
    ) -> Sequence[Sequence[Any]]:
        """A declared statement's rows as tuples in select order (see ``_rows``)."""
        if not isinstance(statement, PreparedStatement):
            raise TypeError(
                f"_tuples runs only module-level PreparedStatement objects, not {type(statement)!r}"
            )
        return await statement.tuples(self.connection, parameters)

    async def _all(self, statement: Any, parameters: Any = None) -> Sequence[sa.RowMapping]:
        rows: Sequence[sa.RowMapping] = (
            (await self._execute(statement, parameters)).mappings().all()
        )
        return rows

    async def get_config(self, proxy_id: str) -> FailoverConfig | None:
        rows = await self._rows(
            statements.SELECT_CONFIG, statements.CONFIG_NAMES, {"p_proxy_id": proxy_id}
        )
        return config_from(rows[0]) if rows else None

    async def get_redundancy(self, proxy_id: str) -> RedundancyStatus | None:
        row = await self._one(statements.SELECT_REDUNDANCY, {"p_proxy_id": proxy_id})
        return None if row is None else redundancy_from(row)

    async def list_instances(self, proxy_id: str) -> list[Instance]:
        """The proxy's instances in preference order (priority, weight desc, registration, id)."""
        rows = await self._rows(
            statements.SELECT_INSTANCES, statements.INSTANCE_NAMES, {"p_proxy_id": proxy_id}
        )
        return [instance_from(row) for row in rows]

    async def get_instance(self, instance_id: str) -> Instance | None:
        if not is_uuid(instance_id):
            return None
        rows = await self._rows(
            statements.SELECT_INSTANCE, statements.INSTANCE_NAMES, {"p_id": instance_id}
        )
        return instance_from(rows[0]) if rows else None

    async def get_event(self, event_id: str) -> FailoverEvent | None:
        if not is_uuid(event_id):
            return None
        rows = await self._rows(statements.SELECT_EVENT, statements.EVENT_NAMES, {"p_id": event_id})
        return event_from(rows[0]) if rows else None

    async def open_switch_event(self, proxy_id: str) -> FailoverEvent | None:
        """The proxy's pending/in-progress failover, failback or switchover (at most one)."""
        rows = await self._rows(
            statements.SELECT_OPEN_SWITCH, statements.EVENT_NAMES, {"p_proxy_id": proxy_id}
        )
        return event_from(rows[0]) if rows else None

    async def open_recovery_event(self, instance_id: str) -> FailoverEvent | None:
        row = await self._one(
            sa.select(events)
            .where(
                events.c.target_instance_id == instance_id,
                events.c.event_type == EventType.RECOVERY.value,
                events.c.status.in_(OPEN_STATUSES),
            )
            .order_by(events.c.created_at.desc())
            .limit(1)
        )
        return None if row is None else event_from(row)

    async def list_events(
        self,
        proxy_id: str,
        limit: int,
        *,
        status: EventStatus | None = None,
        event_type: EventType | None = None,
        before: datetime | None = None,
        since: datetime | None = None,
        after: EventPosition | None = None,
    ) -> list[FailoverEvent]:
        """Newest first by start time; ``since`` inclusive, ``before`` exclusive; ``after``: the
        rows past the end of a page (keyset on the start time and id, by their index)."""
        statement = sa.select(events).where(events.c.proxy_id == proxy_id)
        if after is not None:
            statement = statement.where(
                sa.or_(
                    events.c.created_at < after.created_at,
                    sa.and_(events.c.created_at == after.created_at, events.c.id < after.id),
                )
            )
        if status is not None:
            statement = statement.where(events.c.status == status.value)
        if event_type is not None:
            statement = statement.where(events.c.event_type == event_type.value)
        if before is not None:
            statement = statement.where(events.c.created_at < before)
        if since is not None:
            statement = statement.where(events.c.created_at >= since)
        statement = statement.order_by(events.c.created_at.desc(), events.c.id.desc()).limit(limit)
        return [event_from(row) for row in await self._all(statement)]

    async def last_event_epoch(self, proxy_id: str) -> int:
        """The highest epoch any recorded event of ``proxy_id`` carries (0 when none): where a
        proxy re-created under a deleted one's id continues, so epochs never go back."""
        found = await self._execute(
            sa.select(sa.func.max(events.c.epoch)).where(events.c.proxy_id == proxy_id)
        )
        return int(found.scalar() or 0)

    async def stale_switch_events(self, started_before: datetime) -> list[FailoverEvent]:
        rows = await self._all(
            sa.select(events)
            .where(
                events.c.status.in_(OPEN_STATUSES),
                events.c.event_type.in_(SWITCH_TYPES),
                events.c.created_at < started_before,
            )
            .order_by(events.c.created_at)
        )
        return [event_from(row) for row in rows]

    async def proxy_versions(self) -> dict[str, int]:
        """Every proxy's change counter (see migration 0005), in one query."""
        rows = await self._rows(statements.SELECT_VERSIONS, ("proxy_id", "change_version"), {})
        return {row["proxy_id"]: row["change_version"] for row in rows}

    async def list_proxy_ids(self) -> list[str]:
        rows = await self._execute(
            sa.select(configurations.c.proxy_id).order_by(configurations.c.proxy_id)
        )
        return list(rows.scalars().all())

    async def list_proxies(self, user_id: str | None) -> list[ProxySummary]:
        statement = (
            sa.select(configurations.c.user_id.label("owner_id"), redundancy)
            .join(redundancy, redundancy.c.proxy_id == configurations.c.proxy_id)
            .order_by(configurations.c.proxy_id)
        )
        if user_id is not None:
            statement = statement.where(configurations.c.user_id == user_id)
        return [
            ProxySummary(row["proxy_id"], row["owner_id"], redundancy_from(row))
            for row in await self._all(statement)
        ]

    async def list_metrics(self, instance_id: str, limit: int) -> list[StoredMetricSample]:
        rows = await self._all(
            sa.select(metrics)
            .where(metrics.c.instance_id == instance_id)
            .order_by(metrics.c.recorded_at.desc(), metrics.c.id.desc())
            .limit(limit)
        )
        return [metric_from(row) for row in rows]


# --- writes ----------------------------------------------------------------------------------


class UnitOfWork(Reader):
    """One write transaction. Call ``lock_proxy`` first; collect notifications with ``notify``."""

    def __init__(self, connection: AsyncConnection) -> None:
        super().__init__(connection)
        self.notifications: list[Notification] = []
        #: Proxies this unit locked to change: their change counter is bumped before commit.
        self.changed: set[str] = set()
        #: Proxies whose counter moved already, with their redundancy row (``save_redundancy``).
        self.bumped: set[str] = set()
        #: Set by a use case whose change moves nothing a listener acts on (e.g. a repeated
        #: health report): with no notifications either, after-commit listeners are not called.
        self.quiet = False

    def notify(self, *notifications: Notification) -> None:
        self.notifications.extend(notifications)

    async def lock_proxy(self, proxy_id: str) -> RedundancyStatus | None:
        """Lock the proxy's redundancy row (serialises writers per proxy); None if no proxy."""
        self.changed.add(proxy_id)
        rows = await self._rows(
            statements.LOCK_REDUNDANCY, statements.REDUNDANCY_NAMES, {"p_proxy_id": proxy_id}
        )
        return redundancy_from(rows[0]) if rows else None

    async def lock_proxy_with_instances(
        self, proxy_id: str
    ) -> tuple[RedundancyStatus | None, list[Instance]]:
        """``lock_proxy`` then ``list_instances``; on SQLite in one statement (one round trip).

        PostgreSQL takes two: under READ COMMITTED a ``SELECT ... FOR UPDATE`` that waited for the
        lock re-reads only the locked row, so instance rows joined to it would come from before
        the previous holder's commit, and writing them back would undo its change.
        """
        self.changed.add(proxy_id)
        parameters = {"p_proxy_id": proxy_id}
        if self.connection.dialect.name != "sqlite":
            locked = await self.lock_proxy(proxy_id)
            return locked, [] if locked is None else await self.list_instances(proxy_id)
        rows = await statements.LOCK_WITH_INSTANCES.tuples(self.connection, parameters)
        if not rows:
            return None, []
        status = redundancy_from(
            dict(zip(statements.REDUNDANCY_NAMES, rows[0][: statements.SPLIT], strict=True))
        )
        found = [
            instance_from(
                dict(zip(statements.INSTANCE_NAMES, row[statements.SPLIT :], strict=True))
            )
            for row in rows
            if row[statements.INSTANCE_ID_AT] is not None
        ]
        return status, found

    def _insert(self, table: sa.Table) -> Any:
        if self.connection.dialect.name == "postgresql":
            return postgresql.insert(table)
        return sqlite.insert(table)

    async def create_proxy(self, config: FailoverConfig, status: RedundancyStatus) -> bool:
        """Insert the config and redundancy rows unless another writer already did (then False)."""
        values = config_values(config)
        inserted = await self._execute(
            self._insert(configurations)
            .values(**values)
            .on_conflict_do_nothing(index_elements=["proxy_id"])
        )
        if not getattr(inserted, "rowcount", 0):
            return False
        await self._execute(
            sa.insert(redundancy).values(
                id=new_id(),
                user_id=config.user_id,
                created_at=config.created_at,
                **redundancy_values(status),
            )
        )
        return True

    async def save_config(self, config: FailoverConfig) -> None:
        values = config_values(config)
        for key in ("id", "proxy_id", "user_id", "created_at"):
            values.pop(key)
        await self._execute(
            sa.update(configurations)
            .where(configurations.c.proxy_id == config.proxy_id)
            .values(**values)
        )

    async def insert_instance(self, instance: Instance) -> None:
        await self._execute(sa.insert(instances).values(**instance_values(instance)))

    async def save_instance(self, instance: Instance) -> None:
        values = instance_values(instance)
        parameters = {f"p_{name}": values[name] for name in statements.SAVED_INSTANCE_FIELDS}
        parameters["p_id"] = instance.id
        await statements.UPDATE_INSTANCE.execute(self.connection, parameters)

    async def bump_versions(self) -> None:
        """Before commit, move the change counter of each locked proxy no redundancy write moved."""
        changed = sorted(self.changed - self.bumped)
        if not changed:
            return
        await statements.BUMP_VERSION.execute_many(
            self.connection, [(p,) for p in changed], ("p_proxy_id",), {}
        )

    async def routine_states(self, instance_ids: Sequence[str]) -> dict[str, ProbeState]:
        """For each instance found, what ``core.health.is_routine_success`` needs to know and
        the counters a success moves (``record_routine_successes``).

        Rows are read as tuples in ``statements.ROUTINE_STATE``'s column order: at thousands of
        results a second a dict per row was a tenth of the bulk path's CPU."""
        if self.connection.dialect.name == "sqlite":
            rows = await self._tuples(
                statements.ROUTINE_STATE_SQLITE, {"p_ids": json.dumps(instance_ids)}
            )
        else:
            found = await self._execute(
                statements.ROUTINE_STATE_POSTGRES, {"p_ids": list(instance_ids)}
            )
            rows = found.all()
        status_of = _HEALTH_STATUS
        maintenance = AdminState.MAINTENANCE.value
        new = tuple.__new__  # CheckCounters without its generated __new__'s Python frame
        return {
            id_: (
                HealthState(status_of[status], failures, successes),
                new(CheckCounters, (total, successful, failed, average, error_rate)),
                admin_state == maintenance,
                bool(overridden),
                status_changed_at,
            )
            for (
                id_,
                status,
                failures,
                successes,
                admin_state,
                status_changed_at,
                total,
                successful,
                failed,
                average,
                error_rate,
                overridden,
            ) in rows
        }

    async def record_routine_successes(
        self, successes: Sequence[RoutineSuccess], now: datetime
    ) -> None:
        """Write each routine success (instances ``routine_states`` read under the proxies'
        locks, with the values core computed) in one executemany."""
        if not successes:
            return
        shared = {"p_now": now, "p_updated": now}
        if self.connection.dialect.name == "postgresql":
            columns = map(list, zip(*successes, strict=True))
            arrays = dict(zip(statements.ROUTINE_SUCCESS_PARAMETERS, columns, strict=True))
            await self._execute(statements.ROUTINE_SUCCESS_POSTGRES, {**arrays, **shared})
            return
        await statements.ROUTINE_SUCCESS.execute_many(
            self.connection, successes, statements.ROUTINE_SUCCESS_PARAMETERS, shared
        )

    async def lock_proxies(self, proxy_ids: Sequence[str]) -> None:
        """Lock several proxies' redundancy rows, in sorted order (SQLite: the write lock is
        already held)."""
        if self.connection.dialect.name == "sqlite" or not proxy_ids:
            return
        await self._execute(statements.LOCK_PROXIES_POSTGRES, {"p_ids": sorted(proxy_ids)})

    async def delete_proxy(self, proxy_id: str) -> None:
        """Delete the proxy's metric samples, instances, redundancy row and configuration (its
        events, notifications and audit rows stay: they are history)."""
        await self._execute(sa.delete(metrics).where(metrics.c.proxy_id == proxy_id))
        await self._execute(sa.delete(instances).where(instances.c.proxy_id == proxy_id))
        await self._execute(sa.delete(redundancy).where(redundancy.c.proxy_id == proxy_id))
        await self._execute(sa.delete(configurations).where(configurations.c.proxy_id == proxy_id))

    async def delete_instance(self, instance_id: str) -> None:
        await self._execute(sa.delete(metrics).where(metrics.c.instance_id == instance_id))
        await self._execute(sa.delete(instances).where(instances.c.id == instance_id))

    async def mark_active(self, proxy_id: str, active_instance_id: str | None) -> None:
        """Keep the ``is_active`` mirror in step with the redundancy row's pointer."""
        await statements.MARK_ACTIVE.execute(
            self.connection, {"p_proxy_id": proxy_id, "p_active_id": active_instance_id or ""}
        )

    async def save_redundancy(self, status: RedundancyStatus) -> None:
        """Write the proxy's redundancy row; its change counter moves with it."""
        parameters = {f"p_{name}": value for name, value in redundancy_values(status).items()}
        await statements.UPDATE_REDUNDANCY.execute(self.connection, parameters)
        self.bumped.add(status.proxy_id)

    async def insert_event(self, event: FailoverEvent) -> None:
        parameters = {f"p_{name}": value for name, value in event_values(event).items()}
        await statements.INSERT_EVENT.execute(self.connection, parameters)

    async def save_event(self, event: FailoverEvent) -> None:
        parameters = {f"p_{name}": value for name, value in event_values(event).items()}
        await statements.UPDATE_EVENT.execute(self.connection, parameters)

    async def insert_metric(self, sample: StoredMetricSample) -> None:
        await self._execute(sa.insert(metrics).values(**metric_values(sample)))


# --- the store -------------------------------------------------------------------------------


class Store:
    """Owns the engine; hands out read transactions and per-proxy write units of work.

    ``notification_writers`` run inside every write transaction that produced notifications, just
    before commit (e.g. ``store.notifications``); an exception there rolls the whole change back.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        notification_writers: Sequence[NotificationWriter] = (),
        pool_size: int = 5,
        max_overflow: int = 10,
        timeout_seconds: float = database.DATABASE_TIMEOUT_SECONDS,
    ) -> None:
        self.url = database.normalize_url(url)
        self.engine: AsyncEngine = database.create_engine(
            self.url,
            pool_size=pool_size,
            max_overflow=max_overflow,
            timeout_seconds=timeout_seconds,
        )
        self.notification_writers: list[NotificationWriter] = list(notification_writers)
        self.before_close: list[Callable[[], Awaitable[None]]] = []  # last writes, then dispose
        # Reads see one snapshot: SQLite's deferred WAL transaction does; PostgreSQL needs
        # REPEATABLE READ (read-only, so it never meets a serialization failure).
        read_engine = (
            self.engine.execution_options(isolation_level="REPEATABLE READ")
            if self.engine.dialect.name == "postgresql"
            else self.engine
        )
        self._read_engine = read_engine
        write_engine = self.engine.execution_options(**{database.SQLITE_BEGIN_OPTION: "IMMEDIATE"})
        self._write_engine = write_engine

    @property
    def dialect_name(self) -> str:
        return self.engine.dialect.name

    async def migrate(self) -> None:
        """Apply pending Alembic migrations (idempotent; safe when replicas start together), on
        a connection of their own with the long migration timeout."""
        await database.migrate(self.url)

    async def close(self) -> None:
        for last_writes in self.before_close:
            await last_writes()
        await self.engine.dispose()

    async def ping(self) -> None:
        """Raise ``StorageUnavailable`` unless the database answers (readiness). SQLite: and its
        write lock is free within the deadline (an empty write transaction): a file another
        process keeps locked reads fine, but a control plane that cannot write cannot fail over."""
        async with self.read() as reader:
            await reader.connection.execute(sa.text("SELECT 1"))
        if self.dialect_name == "sqlite":
            async with database.EngineAccess(self.engine).write():
                pass

    async def prune_events(self, before: datetime, limit: int) -> int:
        """Retention: up to ``limit`` finished events created before ``before`` (never open)."""
        where = statements.finished_events_before(before)
        return await self._prune(events.c.id, where, events.c.created_at, limit)

    async def prune_metric_samples(self, before: datetime, limit: int) -> int:
        """Retention: up to ``limit`` metric samples recorded before ``before``."""
        where = statements.samples_before(before)
        return await self._prune(metrics.c.id, where, metrics.c.recorded_at, limit)

    async def _prune(self, key: Any, where: Any, order_by: Any, limit: int) -> int:
        async with database.EngineAccess(self.engine).write() as conn:
            return await database.delete_batch(conn, key, where, order_by, limit)

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[Reader]:
        """A read-only transaction: one consistent snapshot on both databases."""
        async with (
            database.mapped_errors(),
            database.connection(self._read_engine) as connection,
            connection.begin(),
        ):
            yield Reader(connection)

    @contextlib.asynccontextmanager
    async def write(self) -> AsyncIterator[UnitOfWork]:
        """A write transaction (SQLite: ``BEGIN IMMEDIATE``); commits on success, else rolls back.

        The caller locks the proxy it changes with ``UnitOfWork.lock_proxy`` as its first step.
        What the notification writers ask for after commit runs right after it (before the write
        gate opens: no later commit's hand-over overtakes it); then the caller yields the loop
        once, so the streams it woke write first (docs/dataplanes.md, "The control plane")."""
        after: list[AfterCommit] = []
        gate, errors = database.write_gate(self.engine), database.mapped_errors()
        async with gate, errors, database.connection(self._write_engine) as connection:
            async with connection.begin():
                unit = UnitOfWork(connection)
                yield unit
                await unit.bump_versions()
                if unit.notifications:
                    for writer in self.notification_writers:
                        action = await writer(connection, tuple(unit.notifications))
                        if action is not None:
                            after.append(action)
            for action in after:
                try:
                    action()
                except Exception:  # the change is committed: a follower's error must not undo it
                    _log.exception("after-commit action failed")
        if after:
            await asyncio.sleep(0)
