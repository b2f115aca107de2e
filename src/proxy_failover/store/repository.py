"""The store: read transactions, write units of work locked per proxy, rows <-> core values.

A write unit of work for a proxy starts by locking that proxy (``SELECT ... FOR UPDATE`` on its
redundancy row on PostgreSQL; ``BEGIN IMMEDIATE`` on SQLite takes the database write lock up front),
so every read inside it is current and every compare-and-swap holds across processes and replicas.
Nothing here returns ORM/Core rows: callers get the frozen dataclasses of ``core.model``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from proxy_failover.core.model import (
    SWITCHING_EVENT_TYPES,
    AdminState,
    EventStatus,
    EventType,
    FailoverConfig,
    FailoverEvent,
    FailoverStrategy,
    HealthCheckSpec,
    HealthCheckType,
    HealthStatus,
    Instance,
    LoadBalancingAlgorithm,
    MetricSample,
    Notification,
    ProxySummary,
    RedundancyLevel,
    RedundancyStatus,
    StoredMetricSample,
)
from proxy_failover.store import database
from proxy_failover.store.prepared import PreparedStatement
from proxy_failover.store.tables import configurations, events, instances, metrics, redundancy

#: Called inside a write transaction, just before commit, with the notifications it produced — so
#: the notification log (webhook deliveries, audit) is written atomically with the change.
NotificationWriter = Callable[[AsyncSession, Sequence[Notification]], Awaitable[None]]

_OPEN_STATUSES = (EventStatus.PENDING.value, EventStatus.IN_PROGRESS.value)
_SWITCH_TYPES = tuple(sorted(t.value for t in SWITCHING_EVENT_TYPES))


def is_uuid(value: object) -> bool:
    """Ids are server-made UUID strings; anything else simply finds nothing."""
    if not isinstance(value, str) or len(value) != 36:
        return False
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def new_id() -> str:
    return str(uuid.uuid4())


# --- row <-> value conversion ----------------------------------------------------------------


def _config_values(config: FailoverConfig) -> dict[str, Any]:
    return {
        "id": config.id,
        "proxy_id": config.proxy_id,
        "user_id": config.user_id,
        "failover_strategy": config.failover_strategy.value,
        "health_check_interval_seconds": config.health_check_interval_seconds,
        "health_check_timeout_seconds": config.health_check_timeout_seconds,
        "fast_interval_seconds": config.fast_interval_seconds,
        "down_interval_seconds": config.down_interval_seconds,
        "unhealthy_threshold": config.unhealthy_threshold,
        "healthy_threshold": config.healthy_threshold,
        "enable_auto_failover": config.enable_auto_failover,
        "enable_auto_recovery": config.enable_auto_recovery,
        "max_recovery_attempts": config.max_recovery_attempts,
        "recovery_backoff_seconds": config.recovery_backoff_seconds,
        "enable_auto_failback": config.enable_auto_failback,
        "failback_delay_seconds": config.failback_delay_seconds,
        "enable_load_balancing": config.enable_load_balancing,
        "load_balancing_algorithm": config.load_balancing_algorithm.value,
        "health_check": {
            "type": config.health_check.type.value,
            "path": config.health_check.path,
            "expected_status": config.health_check.expected_status,
        },
        "created_at": config.created_at,
        "updated_at": config.updated_at,
    }


def _config_from(row: Mapping[Any, Any]) -> FailoverConfig:
    check = dict(row["health_check"] or {})
    return FailoverConfig(
        id=row["id"],
        proxy_id=row["proxy_id"],
        user_id=row["user_id"],
        failover_strategy=FailoverStrategy(row["failover_strategy"]),
        health_check_interval_seconds=row["health_check_interval_seconds"],
        health_check_timeout_seconds=row["health_check_timeout_seconds"],
        fast_interval_seconds=row["fast_interval_seconds"],
        down_interval_seconds=row["down_interval_seconds"],
        unhealthy_threshold=row["unhealthy_threshold"],
        healthy_threshold=row["healthy_threshold"],
        enable_auto_failover=row["enable_auto_failover"],
        enable_auto_recovery=row["enable_auto_recovery"],
        max_recovery_attempts=row["max_recovery_attempts"],
        recovery_backoff_seconds=row["recovery_backoff_seconds"],
        enable_auto_failback=row["enable_auto_failback"],
        failback_delay_seconds=row["failback_delay_seconds"],
        enable_load_balancing=row["enable_load_balancing"],
        load_balancing_algorithm=LoadBalancingAlgorithm(row["load_balancing_algorithm"]),
        health_check=HealthCheckSpec(
            type=HealthCheckType(check.get("type", HealthCheckType.HTTP.value)),
            path=check.get("path", "/health"),
            expected_status=check.get("expected_status", "200-399"),
        ),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


_INSTANCE_FIELDS = tuple(f.name for f in dataclasses.fields(Instance))


def _instance_values(instance: Instance) -> dict[str, Any]:
    values = {name: getattr(instance, name) for name in _INSTANCE_FIELDS}
    values["admin_state"] = instance.admin_state.value
    values["health_status"] = instance.health_status.value
    values["metadata"] = dict(instance.metadata)
    return values


def _instance_from(row: Mapping[Any, Any]) -> Instance:
    values = {name: row[name] for name in _INSTANCE_FIELDS}
    values["admin_state"] = AdminState(row["admin_state"])
    values["health_status"] = HealthStatus(row["health_status"])
    values["metadata"] = dict(row["metadata"] or {})
    return Instance(**values)


_EVENT_FIELDS = tuple(f.name for f in dataclasses.fields(FailoverEvent))


def _event_values(event: FailoverEvent) -> dict[str, Any]:
    values = {name: getattr(event, name) for name in _EVENT_FIELDS}
    values["event_type"] = event.event_type.value
    values["status"] = event.status.value
    return values


def _event_from(row: Mapping[Any, Any]) -> FailoverEvent:
    values = {name: row[name] for name in _EVENT_FIELDS}
    values["event_type"] = EventType(row["event_type"])
    values["status"] = EventStatus(row["status"])
    return FailoverEvent(**values)


def _redundancy_values(status: RedundancyStatus) -> dict[str, Any]:
    return {
        "proxy_id": status.proxy_id,
        "total_instances": status.total_instances,
        "healthy_instances": status.healthy_instances,
        "unhealthy_instances": status.unhealthy_instances,
        "active_instance_id": status.active_instance_id,
        "backup_instance_ids": list(status.backup_instance_ids),
        "last_failover_at": status.last_failover_at,
        "last_failover_reason": status.last_failover_reason,
        "redundancy_level": status.redundancy_level.value,
        "is_degraded": status.is_degraded,
        "epoch": status.epoch,
        "overridden": status.overridden,
        "updated_at": status.updated_at,
    }


def _redundancy_from(row: Mapping[Any, Any]) -> RedundancyStatus:
    return RedundancyStatus(
        proxy_id=row["proxy_id"],
        total_instances=row["total_instances"],
        healthy_instances=row["healthy_instances"],
        unhealthy_instances=row["unhealthy_instances"],
        active_instance_id=row["active_instance_id"],
        backup_instance_ids=tuple(row["backup_instance_ids"] or ()),
        last_failover_at=row["last_failover_at"],
        last_failover_reason=row["last_failover_reason"],
        redundancy_level=RedundancyLevel(row["redundancy_level"]),
        is_degraded=row["is_degraded"],
        epoch=row["epoch"],
        overridden=row["overridden"],
        updated_at=row["updated_at"],
    )


_SAMPLE_FIELDS = tuple(f.name for f in dataclasses.fields(MetricSample))


def _metric_from(row: sa.RowMapping) -> StoredMetricSample:
    return StoredMetricSample(
        id=row["id"],
        instance_id=row["instance_id"],
        proxy_id=row["proxy_id"],
        user_id=row["user_id"],
        sample=MetricSample(**{name: row[name] for name in _SAMPLE_FIELDS}),
        recorded_at=row["recorded_at"],
    )


# --- reads -----------------------------------------------------------------------------------

# The statements every health report runs, built once with bound parameters: building and
# hashing a fresh statement per call cost more CPU than SQLite spends executing it.
_SELECT_REDUNDANCY = sa.select(redundancy).where(
    redundancy.c.proxy_id == sa.bindparam("p_proxy_id")
)
_LOCK_REDUNDANCY = _SELECT_REDUNDANCY.with_for_update()
_SELECT_INSTANCES = PreparedStatement(
    "select_instances",
    sa.select(instances)
    .where(instances.c.proxy_id == sa.bindparam("p_proxy_id"))
    .order_by(
        instances.c.priority, instances.c.weight.desc(), instances.c.created_at, instances.c.id
    ),
)
# The lock and the proxy's instances in one round trip (the redundancy row is the lock; its
# columns repeat on each instance row, prefixed r_, the instance columns prefixed i_).
_LOCK_WITH_INSTANCES = PreparedStatement(
    "lock_with_instances",
    sa.select(
        *(column.label(f"r_{column.name}") for column in redundancy.c),
        *(column.label(f"i_{column.name}") for column in instances.c),
    )
    .select_from(redundancy.outerjoin(instances, instances.c.proxy_id == redundancy.c.proxy_id))
    .where(redundancy.c.proxy_id == sa.bindparam("p_proxy_id"))
    .order_by(
        instances.c.priority, instances.c.weight.desc(), instances.c.created_at, instances.c.id
    )
    .with_for_update(of=redundancy),
)
# Row layout of _LOCK_WITH_INSTANCES: the redundancy columns, then the instance columns.
_REDUNDANCY_NAMES = tuple(column.name for column in redundancy.c)
_INSTANCE_NAMES = tuple(column.name for column in instances.c)
_SPLIT = len(_REDUNDANCY_NAMES)
_INSTANCE_ID_AT = _SPLIT + _INSTANCE_NAMES.index("id")
_SAVED_INSTANCE_FIELDS = tuple(
    name for name in _INSTANCE_FIELDS if name not in ("id", "proxy_id", "user_id", "created_at")
)
_UPDATE_INSTANCE = PreparedStatement(
    "update_instance",
    sa.update(instances)
    .where(instances.c.id == sa.bindparam("p_id"))
    .values(
        {
            name: sa.bindparam(f"p_{name}", type_=instances.c[name].type)
            for name in _SAVED_INSTANCE_FIELDS
        }
    ),
)


_SELECT_CONFIG = PreparedStatement(
    "select_config",
    sa.select(configurations).where(configurations.c.proxy_id == sa.bindparam("p_proxy_id")),
)
_SELECT_OPEN_SWITCH = PreparedStatement(
    "select_open_switch",
    sa.select(events)
    .where(
        events.c.proxy_id == sa.bindparam("p_proxy_id"),
        # OR of equalities, not IN: a prepared statement cannot expand a list at run time
        sa.or_(*(events.c.status == status for status in _OPEN_STATUSES)),
        sa.or_(*(events.c.event_type == kind for kind in _SWITCH_TYPES)),
    )
    .order_by(events.c.created_at.desc())
    .limit(1),
)
_UPDATE_REDUNDANCY = PreparedStatement(
    "update_redundancy",
    sa.update(redundancy)
    .where(redundancy.c.proxy_id == sa.bindparam("p_proxy_id"))
    .values(
        {
            column.name: sa.bindparam(f"p_{column.name}", type_=column.type)
            for column in redundancy.c
            if column.name not in ("id", "proxy_id", "user_id", "created_at", "change_version")
        }
    ),
)
_BUMP_VERSION = PreparedStatement(
    "bump_version",
    sa.update(redundancy)
    .where(redundancy.c.proxy_id == sa.bindparam("p_proxy_id"))
    .values(change_version=redundancy.c.change_version + 1),
)
_SELECT_VERSIONS = PreparedStatement(
    "select_versions", sa.select(redundancy.c.proxy_id, redundancy.c.change_version)
)
_CONFIG_NAMES = tuple(column.name for column in configurations.c)
_EVENT_NAMES = tuple(column.name for column in events.c)

# A probe's success on a steadily healthy instance moves only its counters and timestamps: one
# UPDATE doing the state machine's arithmetic (SQL sees the row's old values on the right, as
# ``service.checks._apply_checks`` reads ``before``), run for a whole batch with executemany.
_P_LATENCY = sa.bindparam("p_latency", type_=sa.Float())
_P_NOW = sa.bindparam("p_now", type_=instances.c.last_health_check.type)
_ROUTINE_SUCCESS = PreparedStatement(
    "routine_success",
    sa.update(instances)
    .where(instances.c.id == sa.bindparam("p_id"))
    .values(
        consecutive_successes=instances.c.consecutive_successes + 1,
        last_health_check=_P_NOW,
        last_error=None,
        last_latency_ms=_P_LATENCY,
        total_requests=instances.c.total_requests + 1,
        successful_requests=instances.c.successful_requests + 1,
        average_latency_ms=sa.case(
            (_P_LATENCY.is_(None), instances.c.average_latency_ms),
            (instances.c.average_latency_ms.is_(None), _P_LATENCY),
            else_=instances.c.average_latency_ms
            + (_P_LATENCY - instances.c.average_latency_ms) / (instances.c.total_requests + 1),
        ),
        error_rate=sa.cast(instances.c.failed_requests, sa.Float())
        / (instances.c.total_requests + 1),
        updated_at=sa.bindparam("p_updated", type_=instances.c.updated_at.type),
    ),
)
# What decides whether a success is routine, for a batch of instances (and their proxy's row).
_ROUTINE_STATE = sa.select(
    instances.c.id,
    instances.c.health_status,
    instances.c.consecutive_failures,
    instances.c.consecutive_successes,
    instances.c.admin_state,
    instances.c.status_changed_at,
    redundancy.c.overridden,
).select_from(instances.join(redundancy, redundancy.c.proxy_id == instances.c.proxy_id))


# SQLite: the ids as one JSON array parameter (json_each), so the statement can be prepared.
_ROUTINE_STATE_SQLITE = PreparedStatement(
    "routine_state_sqlite",
    _ROUTINE_STATE.where(
        instances.c.id.in_(
            sa.select(sa.column("value")).select_from(sa.func.json_each(sa.bindparam("p_ids")))
        )
    ),
)
_ROUTINE_STATE_NAMES = tuple(column.name for column in _ROUTINE_STATE.selected_columns)


class Reader:
    """Queries over one session/transaction; every result is a core value."""

    def __init__(self, connection: AsyncConnection) -> None:
        self.connection = connection
        self._session: AsyncSession | None = None

    @property
    def session(self) -> AsyncSession:
        """An ORM session joined to this transaction (made on first use; it never commits it).

        The queries here run Core statements on ``connection`` directly: nothing uses ORM
        entities, and the session's per-call machinery cost more CPU than the SQL itself.
        """
        if self._session is None:
            self._session = AsyncSession(bind=self.connection, expire_on_commit=False)
        return self._session

    async def _close_session(self) -> None:
        if self._session is not None:
            await self._session.close()

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

    async def _all(self, statement: Any, parameters: Any = None) -> Sequence[sa.RowMapping]:
        rows: Sequence[sa.RowMapping] = (
            (await self._execute(statement, parameters)).mappings().all()
        )
        return rows

    async def get_config(self, proxy_id: str) -> FailoverConfig | None:
        rows = await self._rows(_SELECT_CONFIG, _CONFIG_NAMES, {"p_proxy_id": proxy_id})
        return _config_from(rows[0]) if rows else None

    async def get_redundancy(self, proxy_id: str) -> RedundancyStatus | None:
        row = await self._one(_SELECT_REDUNDANCY, {"p_proxy_id": proxy_id})
        return None if row is None else _redundancy_from(row)

    async def list_instances(self, proxy_id: str) -> list[Instance]:
        """The proxy's instances in preference order (priority, weight desc, registration, id)."""
        rows = await self._rows(_SELECT_INSTANCES, _INSTANCE_NAMES, {"p_proxy_id": proxy_id})
        return [_instance_from(row) for row in rows]

    async def get_instance(self, instance_id: str) -> Instance | None:
        if not is_uuid(instance_id):
            return None
        row = await self._one(sa.select(instances).where(instances.c.id == instance_id))
        return None if row is None else _instance_from(row)

    async def get_event(self, event_id: str) -> FailoverEvent | None:
        if not is_uuid(event_id):
            return None
        row = await self._one(sa.select(events).where(events.c.id == event_id))
        return None if row is None else _event_from(row)

    async def open_switch_event(self, proxy_id: str) -> FailoverEvent | None:
        """The proxy's pending/in-progress failover, failback or switchover (at most one)."""
        rows = await self._rows(_SELECT_OPEN_SWITCH, _EVENT_NAMES, {"p_proxy_id": proxy_id})
        return _event_from(rows[0]) if rows else None

    async def open_recovery_event(self, instance_id: str) -> FailoverEvent | None:
        row = await self._one(
            sa.select(events)
            .where(
                events.c.target_instance_id == instance_id,
                events.c.event_type == EventType.RECOVERY.value,
                events.c.status.in_(_OPEN_STATUSES),
            )
            .order_by(events.c.created_at.desc())
            .limit(1)
        )
        return None if row is None else _event_from(row)

    async def list_events(
        self,
        proxy_id: str,
        limit: int,
        *,
        status: EventStatus | None = None,
        event_type: EventType | None = None,
        before: datetime | None = None,
    ) -> list[FailoverEvent]:
        """Newest first by start time."""
        statement = sa.select(events).where(events.c.proxy_id == proxy_id)
        if status is not None:
            statement = statement.where(events.c.status == status.value)
        if event_type is not None:
            statement = statement.where(events.c.event_type == event_type.value)
        if before is not None:
            statement = statement.where(events.c.created_at < before)
        statement = statement.order_by(events.c.created_at.desc(), events.c.id.desc()).limit(limit)
        return [_event_from(row) for row in await self._all(statement)]

    async def stale_switch_events(self, started_before: datetime) -> list[FailoverEvent]:
        rows = await self._all(
            sa.select(events)
            .where(
                events.c.status.in_(_OPEN_STATUSES),
                events.c.event_type.in_(_SWITCH_TYPES),
                events.c.created_at < started_before,
            )
            .order_by(events.c.created_at)
        )
        return [_event_from(row) for row in rows]

    async def proxy_versions(self) -> dict[str, int]:
        """Every proxy's change counter (see migration 0005), in one query."""
        rows = await self._rows(_SELECT_VERSIONS, ("proxy_id", "change_version"), {})
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
            ProxySummary(row["proxy_id"], row["owner_id"], _redundancy_from(row))
            for row in await self._all(statement)
        ]

    async def list_metrics(self, instance_id: str, limit: int) -> list[StoredMetricSample]:
        rows = await self._all(
            sa.select(metrics)
            .where(metrics.c.instance_id == instance_id)
            .order_by(metrics.c.recorded_at.desc(), metrics.c.id.desc())
            .limit(limit)
        )
        return [_metric_from(row) for row in rows]


# --- writes ----------------------------------------------------------------------------------


class UnitOfWork(Reader):
    """One write transaction. Call ``lock_proxy`` first; collect notifications with ``notify``."""

    def __init__(self, connection: AsyncConnection) -> None:
        super().__init__(connection)
        self.notifications: list[Notification] = []
        #: Proxies this unit locked to change: their change counter is bumped before commit.
        self.changed: set[str] = set()
        #: Set by a use case whose change moves nothing a listener acts on (e.g. a repeated
        #: health report): with no notifications either, after-commit listeners are not called.
        self.quiet = False

    def notify(self, *notifications: Notification) -> None:
        self.notifications.extend(notifications)

    async def lock_proxy(self, proxy_id: str) -> RedundancyStatus | None:
        """Lock the proxy's redundancy row (serialises writers per proxy); None if no proxy."""
        self.changed.add(proxy_id)
        row = await self._one(_LOCK_REDUNDANCY, {"p_proxy_id": proxy_id})
        return None if row is None else _redundancy_from(row)

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
        prepared = _LOCK_WITH_INSTANCES.compiled_for(self.connection)
        if prepared is None:
            locked = await self.lock_proxy(proxy_id)
            return locked, [] if locked is None else await self.list_instances(proxy_id)
        rows: Sequence[Sequence[Any]] = await prepared.run(self.connection, parameters)
        if not rows:
            return None, []
        status = _redundancy_from(dict(zip(_REDUNDANCY_NAMES, rows[0][:_SPLIT], strict=True)))
        found = [
            _instance_from(dict(zip(_INSTANCE_NAMES, row[_SPLIT:], strict=True)))
            for row in rows
            if row[_INSTANCE_ID_AT] is not None
        ]
        return status, found

    def _insert(self, table: sa.Table) -> Any:
        if self.connection.dialect.name == "postgresql":
            return postgresql.insert(table)
        return sqlite.insert(table)

    async def create_proxy(self, config: FailoverConfig, status: RedundancyStatus) -> bool:
        """Insert the config and redundancy rows unless another writer already did (then False)."""
        values = _config_values(config)
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
                **_redundancy_values(status),
            )
        )
        return True

    async def save_config(self, config: FailoverConfig) -> None:
        values = _config_values(config)
        for key in ("id", "proxy_id", "user_id", "created_at"):
            values.pop(key)
        await self._execute(
            sa.update(configurations)
            .where(configurations.c.proxy_id == config.proxy_id)
            .values(**values)
        )

    async def insert_instance(self, instance: Instance) -> None:
        await self._execute(sa.insert(instances).values(**_instance_values(instance)))

    async def save_instance(self, instance: Instance) -> None:
        values = _instance_values(instance)
        parameters = {f"p_{name}": values[name] for name in _SAVED_INSTANCE_FIELDS}
        parameters["p_id"] = instance.id
        await _UPDATE_INSTANCE.execute(self.connection, parameters)

    async def bump_versions(self) -> None:
        """Move the change counter of every proxy this unit locked (just before commit)."""
        changed = sorted(self.changed)
        if not changed:
            return
        await _BUMP_VERSION.execute_many(
            self.connection, [(p,) for p in changed], ("p_proxy_id",), {}
        )

    async def routine_states(
        self, instance_ids: Sequence[str]
    ) -> dict[str, tuple[bool, HealthStatus, int, int, datetime | None]]:
        """For each instance found: (a success would be routine, status, failures, successes,
        when its status last changed).

        Routine: healthy with no failure, not in maintenance, its proxy's redundancy row not
        overridden: a success then moves counters only (``record_routine_successes``).
        """
        if _ROUTINE_STATE_SQLITE.compiled_for(self.connection) is not None:
            rows = await self._rows(
                _ROUTINE_STATE_SQLITE, _ROUTINE_STATE_NAMES, {"p_ids": json.dumps(instance_ids)}
            )
        else:
            rows = [
                dict(row)
                for row in await self._all(
                    _ROUTINE_STATE.where(instances.c.id.in_(sa.bindparam("p_ids", expanding=True))),
                    {"p_ids": list(instance_ids)},
                )
            ]
        states: dict[str, tuple[bool, HealthStatus, int, int, datetime | None]] = {}
        for row in rows:
            status = HealthStatus(row["health_status"])
            routine = (
                status is HealthStatus.HEALTHY
                and row["consecutive_failures"] == 0
                and row["admin_state"] != AdminState.MAINTENANCE.value
                and not row["overridden"]
            )
            states[row["id"]] = (
                routine,
                status,
                row["consecutive_failures"],
                row["consecutive_successes"],
                row["status_changed_at"],
            )
        return states

    async def record_routine_successes(
        self, successes: Sequence[tuple[str, float | None]], now: datetime
    ) -> None:
        """Apply one success to each (instance id, latency ms) — instances ``routine_states``
        found routine under the proxies' locks — in one executemany."""
        if not successes:
            return
        shared = {"p_now": now, "p_updated": now}
        await _ROUTINE_SUCCESS.execute_many(
            self.connection, successes, ("p_id", "p_latency"), shared
        )

    async def lock_proxies(self, proxy_ids: Sequence[str]) -> None:
        """Lock several proxies' redundancy rows, in sorted order (SQLite: the write lock is
        already held)."""
        if self.connection.dialect.name == "sqlite" or not proxy_ids:
            return
        await self._execute(
            sa.select(redundancy.c.proxy_id)
            .where(redundancy.c.proxy_id.in_(sorted(proxy_ids)))
            .order_by(redundancy.c.proxy_id)
            .with_for_update()
        )

    async def delete_instance(self, instance_id: str) -> None:
        await self._execute(sa.delete(metrics).where(metrics.c.instance_id == instance_id))
        await self._execute(sa.delete(instances).where(instances.c.id == instance_id))

    async def mark_active(self, proxy_id: str, active_instance_id: str | None) -> None:
        """Keep the ``is_active`` mirror in step with the redundancy row's pointer."""
        await self._execute(
            sa.update(instances)
            .where(
                instances.c.proxy_id == proxy_id,
                instances.c.is_active.is_(True),
                instances.c.id != (active_instance_id or ""),
            )
            .values(is_active=False)
        )
        if active_instance_id is not None:
            await self._execute(
                sa.update(instances)
                .where(instances.c.id == active_instance_id)
                .values(is_active=True)
            )

    async def save_redundancy(self, status: RedundancyStatus) -> None:
        parameters = {f"p_{name}": value for name, value in _redundancy_values(status).items()}
        await _UPDATE_REDUNDANCY.execute(self.connection, parameters)

    async def insert_event(self, event: FailoverEvent) -> None:
        await self._execute(sa.insert(events).values(**_event_values(event)))

    async def save_event(self, event: FailoverEvent) -> None:
        values = _event_values(event)
        values.pop("id")
        await self._execute(sa.update(events).where(events.c.id == event.id).values(**values))

    async def insert_metric(self, sample: StoredMetricSample) -> None:
        values: dict[str, Any] = {name: getattr(sample.sample, name) for name in _SAMPLE_FIELDS}
        await self._execute(
            sa.insert(metrics).values(
                id=sample.id,
                instance_id=sample.instance_id,
                proxy_id=sample.proxy_id,
                user_id=sample.user_id,
                recorded_at=sample.recorded_at,
                **values,
            )
        )


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
    ) -> None:
        self.url = database.normalize_url(url)
        self.engine: AsyncEngine = database.create_engine(
            self.url, pool_size=pool_size, max_overflow=max_overflow
        )
        self.notification_writers: list[NotificationWriter] = list(notification_writers)
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
        """Apply pending Alembic migrations (idempotent; safe when replicas start together)."""
        await database.upgrade(self.engine)

    async def close(self) -> None:
        await self.engine.dispose()

    async def ping(self) -> None:
        """Raise ``StorageUnavailable`` unless the database answers (readiness)."""
        async with self.read() as reader:
            await reader.connection.execute(sa.text("SELECT 1"))

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[Reader]:
        """A read-only transaction: one consistent snapshot on both databases."""
        async with (
            database.mapped_errors(),
            self._read_engine.connect() as connection,
            connection.begin(),
        ):
            reader = Reader(connection)
            try:
                yield reader
            finally:
                await reader._close_session()

    @contextlib.asynccontextmanager
    async def write(self) -> AsyncIterator[UnitOfWork]:
        """A write transaction (SQLite: ``BEGIN IMMEDIATE``); commits on success, else rolls back.

        The caller locks the proxy it changes with ``UnitOfWork.lock_proxy`` as its first step.
        """
        async with (
            database.write_gate(self.engine),
            database.mapped_errors(),
            self._write_engine.connect() as connection,
            connection.begin(),
        ):
            unit = UnitOfWork(connection)
            try:
                yield unit
                await unit.bump_versions()
                if unit.notifications:
                    for writer in self.notification_writers:
                        await writer(unit.session, tuple(unit.notifications))
            finally:
                await unit._close_session()
