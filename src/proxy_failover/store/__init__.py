"""Persistence: SQLAlchemy 2 async store on SQLite (default) or PostgreSQL, Alembic migrations.

Public names: ``Store`` (read transactions, per-proxy write units of work), ``UnitOfWork``,
``NotificationWriter`` (hook run inside each write transaction before commit), ``migrate(url)``
(for ``proxy-failover migrate``), ``normalize_url`` and ``DEFAULT_DATABASE_URL``.
"""

from __future__ import annotations

from proxy_failover.store.database import (
    DEFAULT_DATABASE_URL,
    map_database_error,
    migrate,
    normalize_url,
)
from proxy_failover.store.repository import (
    NotificationWriter,
    ProbeState,
    Reader,
    RoutineSuccess,
    Store,
    UnitOfWork,
)
from proxy_failover.store.rows import is_uuid, new_id

__all__ = [
    "DEFAULT_DATABASE_URL",
    "NotificationWriter",
    "ProbeState",
    "Reader",
    "RoutineSuccess",
    "Store",
    "UnitOfWork",
    "is_uuid",
    "map_database_error",
    "migrate",
    "new_id",
    "normalize_url",
]
