"""The reads behind ``/metrics``' state gauges: redundancy per proxy, health per instance, and
the webhook backlog. Each is one query, however many proxies there are: a scrape must stay cheap.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from proxy_failover.core.webhooks import DeliveryStatus
from proxy_failover.store import database
from proxy_failover.store.tables import instances, redundancy, webhook_deliveries


@dataclass(frozen=True, slots=True)
class ProxyGauge:
    """A proxy's redundancy figures, as ``/metrics`` reports them."""

    proxy_id: str
    epoch: int
    active_instance_id: str | None
    healthy_instances: int
    total_instances: int
    is_degraded: bool


@dataclass(frozen=True, slots=True)
class InstanceGauge:
    """An instance's health, as ``/metrics`` reports it."""

    proxy_id: str
    instance_id: str
    instance_name: str
    health_status: str


class Gauges:
    """``gauges`` and ``backlog``: what ``adapters.metrics.Metrics.refresh`` reads."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._db = database.EngineAccess(engine)

    async def backlog(self) -> dict[str, int]:
        """Pending deliveries per proxy (the ``pfo_webhook_backlog`` gauge)."""
        d = webhook_deliveries
        async with self._db.read() as conn:
            rows = (
                await conn.execute(
                    sa.select(d.c.proxy_id, sa.func.count())
                    .where(d.c.status == DeliveryStatus.PENDING.value)
                    .group_by(d.c.proxy_id)
                )
            ).all()
        return {proxy_id: int(count) for proxy_id, count in rows}

    async def gauges(self) -> tuple[list[ProxyGauge], list[InstanceGauge]]:
        """Every proxy's redundancy figures and every instance's health: two queries in all,
        however many proxies there are (a scrape must stay cheap)."""
        async with self._db.read() as conn:
            proxies = (
                await conn.execute(
                    sa.select(
                        redundancy.c.proxy_id,
                        redundancy.c.epoch,
                        redundancy.c.active_instance_id,
                        redundancy.c.healthy_instances,
                        redundancy.c.total_instances,
                        redundancy.c.is_degraded,
                    ).order_by(redundancy.c.proxy_id)
                )
            ).all()
            members = (
                await conn.execute(
                    sa.select(
                        instances.c.proxy_id,
                        instances.c.id,
                        instances.c.instance_name,
                        instances.c.health_status,
                    ).order_by(instances.c.proxy_id, instances.c.priority, instances.c.id)
                )
            ).all()
        return (
            [ProxyGauge(r[0], int(r[1]), r[2], int(r[3]), int(r[4]), bool(r[5])) for r in proxies],
            [InstanceGauge(r[0], r[1], r[2], r[3]) for r in members],
        )
