"""The statements the units of work run on every health report and engine tick, declared once.

Built once with ``p_*`` bound parameters (building and hashing a fresh statement per call cost
more CPU than SQLite spends executing it) and, where they are hot, as ``PreparedStatement``s run
on SQLite's driver connection (``store.prepared``). ``repository`` runs them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from proxy_failover.core import retention
from proxy_failover.store import database
from proxy_failover.store.prepared import PreparedStatement, bound_columns
from proxy_failover.store.rows import INSTANCE_FIELDS
from proxy_failover.store.tables import (
    OPEN_SWITCH,
    configurations,
    events,
    instances,
    metrics,
    redundancy,
)

#: A proxy's instances in preference order: priority, weight (desc), registration, id.
PREFERENCE_ORDER = (
    instances.c.priority,
    instances.c.weight.desc(),
    instances.c.created_at,
    instances.c.id,
)


SELECT_REDUNDANCY = sa.select(redundancy).where(redundancy.c.proxy_id == sa.bindparam("p_proxy_id"))
# The first statement of every write unit of work (SQLite compiles it without FOR UPDATE: its
# BEGIN IMMEDIATE already holds the write lock).
LOCK_REDUNDANCY = PreparedStatement("lock_redundancy", SELECT_REDUNDANCY.with_for_update())
SELECT_INSTANCES = PreparedStatement(
    "select_instances",
    sa.select(instances)
    .where(instances.c.proxy_id == sa.bindparam("p_proxy_id"))
    .order_by(*PREFERENCE_ORDER),
)
# The lock and the proxy's instances in one round trip (the redundancy row is the lock; its
# columns repeat on each instance row, prefixed r_, the instance columns prefixed i_).
LOCK_WITH_INSTANCES = PreparedStatement(
    "lock_with_instances",
    sa.select(
        *(column.label(f"r_{column.name}") for column in redundancy.c),
        *(column.label(f"i_{column.name}") for column in instances.c),
    )
    .select_from(redundancy.outerjoin(instances, instances.c.proxy_id == redundancy.c.proxy_id))
    .where(redundancy.c.proxy_id == sa.bindparam("p_proxy_id"))
    .order_by(*PREFERENCE_ORDER)
    .with_for_update(of=redundancy),
)
# Row layout of LOCK_WITH_INSTANCES: the redundancy columns, then the instance columns.
REDUNDANCY_NAMES = tuple(column.name for column in redundancy.c)
INSTANCE_NAMES = tuple(column.name for column in instances.c)
SPLIT = len(REDUNDANCY_NAMES)
INSTANCE_ID_AT = SPLIT + INSTANCE_NAMES.index("id")
SAVED_INSTANCE_FIELDS = tuple(
    name for name in INSTANCE_FIELDS if name not in ("id", "proxy_id", "user_id", "created_at")
)
UPDATE_INSTANCE = PreparedStatement(
    "update_instance",
    sa.update(instances)
    .where(instances.c.id == sa.bindparam("p_id"))
    .values(bound_columns(instances, SAVED_INSTANCE_FIELDS)),
)


SELECT_INSTANCE = PreparedStatement(
    "select_instance", sa.select(instances).where(instances.c.id == sa.bindparam("p_id"))
)
# The ``is_active`` mirror of the redundancy row's pointer (``UnitOfWork.mark_active``), in one
# statement: the active instance on, every other instance of the proxy that is on, off (no active
# instance: ``p_active_id`` is '', which names none).
MARK_ACTIVE = PreparedStatement(
    "mark_active",
    sa.update(instances)
    .where(
        instances.c.proxy_id == sa.bindparam("p_proxy_id"),
        sa.or_(instances.c.is_active.is_(True), instances.c.id == sa.bindparam("p_active_id")),
    )
    .values(is_active=instances.c.id == sa.bindparam("p_active_id")),
)


SELECT_CONFIG = PreparedStatement(
    "select_config",
    sa.select(configurations).where(configurations.c.proxy_id == sa.bindparam("p_proxy_id")),
)
SELECT_OPEN_SWITCH = PreparedStatement(
    "select_open_switch",
    sa.select(events)
    # The partial unique index's own condition, word for word, as constants: SQLite uses a
    # partial index only for a query whose WHERE repeats its terms, and PostgreSQL's generic plan
    # of a prepared statement cannot prove it from parameters. Otherwise each snapshot load
    # walked every event the proxy ever had, newest first (tests/integration/test_query_plans.py).
    .where(events.c.proxy_id == sa.bindparam("p_proxy_id"), sa.text(OPEN_SWITCH))
    .order_by(events.c.created_at.desc())
    .limit(1),
)
UPDATE_REDUNDANCY = PreparedStatement(
    "update_redundancy",
    sa.update(redundancy)
    .where(redundancy.c.proxy_id == sa.bindparam("p_proxy_id"))
    .values(
        {
            column.name: sa.bindparam(f"p_{column.name}", type_=column.type)
            for column in redundancy.c
            if column.name not in ("id", "proxy_id", "user_id", "created_at", "change_version")
        }
        # The change counter moves with the row (``UnitOfWork.bump_versions`` then skips it).
        | {"change_version": redundancy.c.change_version + 1}
    ),
)
BUMP_VERSION = PreparedStatement(
    "bump_version",
    sa.update(redundancy)
    .where(redundancy.c.proxy_id == sa.bindparam("p_proxy_id"))
    .values(change_version=redundancy.c.change_version + 1),
)
SELECT_VERSIONS = PreparedStatement(
    "select_versions", sa.select(redundancy.c.proxy_id, redundancy.c.change_version)
)
CONFIG_NAMES = tuple(column.name for column in configurations.c)
EVENT_NAMES = tuple(column.name for column in events.c)

# A failover event: read by id, recorded, closed (execute, complete, the engine's decisions).
SELECT_EVENT = PreparedStatement(
    "select_event", sa.select(events).where(events.c.id == sa.bindparam("p_id"))
)
INSERT_EVENT = PreparedStatement(
    "insert_event",
    sa.insert(events).values(bound_columns(events, EVENT_NAMES)),
)
UPDATE_EVENT = PreparedStatement(
    "update_event",
    sa.update(events)
    .where(events.c.id == sa.bindparam("p_id"))
    .values(bound_columns(events, [name for name in EVENT_NAMES if name != "id"])),
)

# A probe's success on a steadily healthy instance moves only its counters and timestamps: one
# UPDATE setting the values core.health computed (``count``, ``count_check``) from the row as
# ``routine_states`` read it under the proxy's lock, run for a whole batch with executemany.
P_LATENCY = sa.bindparam("p_latency", type_=sa.Float())
P_NOW = sa.bindparam("p_now", type_=instances.c.last_health_check.type)
ROUTINE_SUCCESS_PARAMETERS = (
    "p_id",
    "p_successes",
    "p_total",
    "p_successful",
    "p_average",
    "p_error_rate",
    "p_latency",
)
ROUTINE_SUCCESS = PreparedStatement(
    "routine_success",
    sa.update(instances)
    .where(instances.c.id == sa.bindparam("p_id"))
    .values(
        consecutive_successes=sa.bindparam("p_successes", type_=sa.Integer()),
        last_health_check=P_NOW,
        last_error=None,
        last_latency_ms=P_LATENCY,
        total_requests=sa.bindparam("p_total", type_=sa.Integer()),
        successful_requests=sa.bindparam("p_successful", type_=sa.Integer()),
        average_latency_ms=sa.bindparam("p_average", type_=sa.Float()),
        error_rate=sa.bindparam("p_error_rate", type_=sa.Float()),
        updated_at=sa.bindparam("p_updated", type_=instances.c.updated_at.type),
    ),
)


def _array(name: str, of: sa.types.TypeEngine[Any]) -> sa.BindParameter[Any]:
    """A PostgreSQL array parameter (asyncpg's dialect renders its type: ``$1::VARCHAR[]``)."""
    return sa.bindparam(name, type_=postgresql.ARRAY(of))


# PostgreSQL: the same UPDATE for a whole batch as one statement over parallel arrays (one per
# parameter of ROUTINE_SUCCESS_PARAMETERS, in order): one round trip and one plan instead of a
# bind/execute per row, the flush's main cost there. The same columns get the same values as
# ROUTINE_SUCCESS; tests compare the rows both paths leave.
_ROUTINE_ROWS = (
    sa.func.unnest(
        _array("p_id", sa.String()),
        _array("p_successes", sa.Integer()),
        _array("p_total", sa.BigInteger()),
        _array("p_successful", sa.BigInteger()),
        _array("p_average", sa.Float()),
        _array("p_error_rate", sa.Float()),
        _array("p_latency", sa.Float()),
    )
    .table_valued("id", "successes", "total", "successful", "average", "error_rate", "latency")
    .render_derived(name="routine")
)
ROUTINE_SUCCESS_POSTGRES = (
    sa.update(instances)
    .where(instances.c.id == _ROUTINE_ROWS.c.id)
    .values(
        consecutive_successes=_ROUTINE_ROWS.c.successes,
        last_health_check=P_NOW,
        last_error=None,
        last_latency_ms=_ROUTINE_ROWS.c.latency,
        total_requests=_ROUTINE_ROWS.c.total,
        successful_requests=_ROUTINE_ROWS.c.successful,
        average_latency_ms=_ROUTINE_ROWS.c.average,
        error_rate=_ROUTINE_ROWS.c.error_rate,
        updated_at=sa.bindparam("p_updated", type_=instances.c.updated_at.type),
    )
)


# What decides whether a success is routine, for a batch of instances (and their proxy's row),
# and the counters a routine success moves. ``UnitOfWork.routine_states`` unpacks the rows in
# this column order.
ROUTINE_STATE = sa.select(
    instances.c.id,
    instances.c.health_status,
    instances.c.consecutive_failures,
    instances.c.consecutive_successes,
    instances.c.admin_state,
    instances.c.status_changed_at,
    instances.c.total_requests,
    instances.c.successful_requests,
    instances.c.failed_requests,
    instances.c.average_latency_ms,
    instances.c.error_rate,
    redundancy.c.overridden,
).select_from(instances.join(redundancy, redundancy.c.proxy_id == instances.c.proxy_id))


# PostgreSQL: the ids as one array parameter, so the SQL text (and the server's prepared plan)
# is the same for every batch size; an expanding IN made a new statement per size.
ROUTINE_STATE_POSTGRES = ROUTINE_STATE.where(
    instances.c.id == sa.any_(_array("p_ids", sa.String()))
)

# PostgreSQL: a flush's proxies locked in one order (sorted: flushes and single-proxy writers
# never deadlock), the ids as one array for the same reason as ROUTINE_STATE_POSTGRES.
LOCK_PROXIES_POSTGRES = (
    sa.select(redundancy.c.proxy_id)
    .where(redundancy.c.proxy_id == sa.any_(_array("p_ids", sa.String())))
    .order_by(redundancy.c.proxy_id)
    .with_for_update()
)

# SQLite: the ids as one JSON array parameter (json_each), so the statement can be prepared.
ROUTINE_STATE_SQLITE = PreparedStatement(
    "routine_state_sqlite",
    ROUTINE_STATE.where(
        instances.c.id.in_(
            sa.select(sa.column("value")).select_from(sa.func.json_each(sa.bindparam("p_ids")))
        )
    ),
)


# --- retention (``core.retention``): what a prune batch may delete -------------------------------


def finished_events_before(before: datetime) -> sa.ColumnElement[bool]:
    """``core.retention.event_prunable``: finished events created before the cut-off."""
    return sa.and_(
        database.unindexed(events.c.status).in_(sorted(retention.FINISHED_EVENT_STATUSES)),
        events.c.created_at < before,
    )


def samples_before(before: datetime) -> sa.ColumnElement[bool]:
    """``core.retention.row_prunable`` for metric samples."""
    return metrics.c.recorded_at < before
