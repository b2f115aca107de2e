"""The use cases — the seed's service methods and SPEC §7's additions — one transaction each.

The core decides, the store persists; nothing here returns ORM rows. Every change of instances,
health or the active pointer recomputes redundancy in the same transaction. Every write for a
proxy runs in a unit of work that first locks that proxy (row lock on PostgreSQL, ``BEGIN
IMMEDIATE`` on SQLite), so compare-and-swaps hold across processes and replicas.

One module per resource (configs, instances, health and checks, failover, events, redundancy,
route, engine_ops), each a set of functions over the shared ``context.ServiceContext``;
``facade.ProxyFailoverService`` is the public face and only delegates.
"""

from __future__ import annotations

from proxy_failover.service.common import (
    DEFAULT_REASON,
    STALE_MESSAGE,
    SUPERSEDED_MESSAGE,
)
from proxy_failover.service.context import DEFAULT_CACHE_TTL_SECONDS, ChangeListener, LoggerLike
from proxy_failover.service.facade import ProxyFailoverService

__all__ = [
    "DEFAULT_CACHE_TTL_SECONDS",
    "DEFAULT_REASON",
    "STALE_MESSAGE",
    "SUPERSEDED_MESSAGE",
    "ChangeListener",
    "LoggerLike",
    "ProxyFailoverService",
]
