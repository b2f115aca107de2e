"""Failover configurations: create or change a proxy's config, read it, list the proxies."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from proxy_failover.core import redundancy as core_redundancy
from proxy_failover.core import validation
from proxy_failover.core.errors import InvalidInput, config_not_found
from proxy_failover.core.model import (
    EventStatus,
    EventType,
    FailoverConfig,
    FailoverEvent,
    Notification,
    NotificationType,
    ProxySummary,
)
from proxy_failover.service.common import event_data, require_text
from proxy_failover.service.context import ServiceContext, log_fields
from proxy_failover.service.redundancy import ensure_proxy
from proxy_failover.store import Reader, new_id
from proxy_failover.store.webhooks import retire_subscriptions


async def create_failover_configuration(
    ctx: ServiceContext, proxy_id: str, user_id: str, config: Mapping[str, Any]
) -> FailoverConfig:
    """Create the proxy's config (caller becomes owner) or change only the given fields."""
    proxy_id = validation.validate_proxy_id(proxy_id)
    user = require_text(user_id, "userId")
    assert user is not None
    if config is None:
        config = {}
    if not isinstance(config, Mapping):
        raise InvalidInput("config must be an object", details={"field": "config"})
    now = ctx.now()
    async with ctx.write(proxy_id) as (unit, locked):
        existing, _status, created = await ensure_proxy(unit, proxy_id, user, locked, config, now)
        if created:
            ctx.logger.info(
                "proxy %s: configuration created by %s", proxy_id, user, extra=log_fields(proxy_id)
            )
            return existing
        updated = validation.build_config(proxy_id, user, config, existing, now)
        updated = dataclasses.replace(
            updated,
            id=existing.id,
            proxy_id=proxy_id,
            user_id=existing.user_id,
            created_at=existing.created_at,
            updated_at=now,
        )
        await unit.save_config(updated)
        return updated


async def delete_failover_configuration(ctx: ServiceContext, proxy_id: str, user_id: str) -> None:
    """Delete a proxy: configuration, instances (with their metric samples), redundancy row and
    webhook subscriptions (pending deliveries cancelled), in one transaction (002 if missing).

    Its events and audit rows stay: they are history. Decommissioning wins over work in flight:
    open events (a switch, recoveries) are closed ``failed`` ("proxy deleted"). An active
    instance hands its role to nobody, recorded as a completed switchover with a new epoch and
    announced like any failover, so data planes stop sending traffic; a proxy later created under
    the same id continues from that epoch (``ensure_proxy``), so fencing never goes back.
    """
    user = require_text(user_id, "userId")
    assert user is not None
    now = ctx.now()
    async with ctx.write(proxy_id) as (unit, locked):
        if locked is None:
            raise config_not_found(proxy_id)
        instances = await unit.list_instances(proxy_id)
        open_events = [await unit.open_switch_event(proxy_id)]
        open_events += [await unit.open_recovery_event(instance.id) for instance in instances]
        # Closed, not announced: the proxy is gone (its handover below is what data planes act on).
        for event in filter(None, open_events):
            await unit.save_event(event.closed(EventStatus.FAILED, now, "proxy deleted"))
        if locked.active_instance_id is not None:
            handover = FailoverEvent(
                id=new_id(),
                proxy_id=proxy_id,
                user_id=user,
                event_type=EventType.SWITCHOVER,
                source_instance_id=locked.active_instance_id,
                target_instance_id=None,
                reason=f"Proxy {proxy_id} deleted: no active instance left",
                status=EventStatus.COMPLETED,
                triggered_by=user,
                epoch=core_redundancy.next_epoch(locked.epoch),
                created_at=now,
                duration_ms=0,
                completed_at=now,
            )
            await unit.insert_event(handover)
            unit.notify(
                Notification(
                    NotificationType.FAILOVER_COMPLETED,
                    proxy_id,
                    handover.epoch,
                    now,
                    event_data(handover),
                )
            )
        await unit.delete_proxy(proxy_id)
        await retire_subscriptions(unit.connection, now, proxy_id)
    for instance in instances:
        ctx.forget_instance(instance.id)
    ctx.route_cursors.pop(proxy_id, None)
    ctx.logger.info(
        "proxy %s: deleted by %s with %d instance(s)",
        proxy_id,
        user,
        len(instances),
        extra=log_fields(proxy_id),
    )


async def get_failover_configuration(ctx: ServiceContext, proxy_id: str) -> FailoverConfig | None:
    if not isinstance(proxy_id, str):
        return None

    async def load(reader: Reader) -> FailoverConfig | None:
        return await reader.get_config(proxy_id)

    return await ctx.cached("config", proxy_id, load)


async def list_proxies(ctx: ServiceContext, user_id: str | None = None) -> list[ProxySummary]:
    """Every proxy with its redundancy (``user_id`` None = all, else the ones it owns)."""
    async with ctx.store.read() as reader:
        return await reader.list_proxies(user_id)
