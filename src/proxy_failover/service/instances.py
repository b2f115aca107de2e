"""Instances: register, list, read, patch and delete a proxy's instances, and their metric
samples."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from proxy_failover.core import failover as core_failover
from proxy_failover.core import outbound, strategies, validation
from proxy_failover.core import redundancy as core_redundancy
from proxy_failover.core.errors import Conflict, ErrorCode, InvalidInput, instance_not_found
from proxy_failover.core.model import (
    EventStatus,
    EventType,
    FailoverEvent,
    Instance,
    StoredMetricSample,
)
from proxy_failover.service.common import (
    parse_limit,
    require_text,
)
from proxy_failover.service.context import ServiceContext, log_fields, read_snapshot
from proxy_failover.service.failover import record_switch
from proxy_failover.service.health import with_sample
from proxy_failover.service.redundancy import ensure_proxy, recompute
from proxy_failover.store import Reader, new_id


async def register_proxy_instance(
    ctx: ServiceContext,
    proxy_id: str,
    user_id: str,
    instance_data: Mapping[str, Any],
    *,
    outbound_trusted: bool = True,
) -> Instance:
    """Add an instance (name unique per proxy, 005); an unknown proxy gets a default config.

    ``outbound_trusted``: the registrant is an admin or the library, so probes and recovery POSTs
    may reach internal addresses (``core.outbound``; the API passes the caller's role)."""
    proxy_id = validation.validate_proxy_id(proxy_id)
    user = require_text(user_id, "userId")
    assert user is not None
    if not isinstance(instance_data, Mapping):
        raise InvalidInput("instanceData must be an object", details={"field": "instanceData"})
    now = ctx.now()
    instance = validation.build_instance(proxy_id, user, new_id(), instance_data, now)
    instance = dataclasses.replace(
        instance,
        proxy_id=proxy_id,
        user_id=user,
        is_active=False,
        outbound_trusted=outbound_trusted,
        created_at=now,
        updated_at=now,
    )
    async with ctx.write(proxy_id) as (unit, locked):
        _config, status, _created = await ensure_proxy(unit, proxy_id, user, locked, {}, now)
        existing = await unit.list_instances(proxy_id)
        if any(i.instance_name == instance.instance_name for i in existing):
            raise Conflict(
                f"An instance named {instance.instance_name!r} already exists for proxy {proxy_id}",
                ErrorCode.DUPLICATE_INSTANCE_NAME,
                {"instanceName": instance.instance_name},
            )
        await unit.insert_instance(instance)
        # the list just read plus the new one: the proxy's instances are read once, not twice
        await recompute(unit, status, now, instances=[*existing, instance])
    ctx.instance_proxy[instance.id] = proxy_id
    ctx.logger.info(
        "proxy %s: instance %s registered",
        proxy_id,
        instance.instance_name,
        extra=log_fields(proxy_id, instance.id),
    )
    return instance


async def get_proxy_instances(ctx: ServiceContext, proxy_id: str) -> list[Instance]:
    """The proxy's instances in preference order (empty for an unknown proxy)."""
    if not isinstance(proxy_id, str):
        return []

    async def load(reader: Reader) -> tuple[Instance, ...]:
        return strategies.in_preference_order(await reader.list_instances(proxy_id))

    return list(await ctx.cached("instances", proxy_id, load))


async def get_instance(ctx: ServiceContext, instance_id: str) -> Instance:
    async with ctx.store.read() as reader:
        instance = await reader.get_instance(instance_id)
    if instance is None:
        raise instance_not_found(instance_id)
    return instance


async def update_instance(
    ctx: ServiceContext,
    instance_id: str,
    user_id: str,
    changes: Mapping[str, Any],
    *,
    outbound_trusted: bool = True,
) -> Instance:
    """PATCH priority, weight, endpoint, trafficAddress, recoveryUrl, adminState, metadata.

    Entering maintenance resets health to ``unknown`` (``core.validation``: it is no longer
    probed); the engine moves the active role away from a drained or maintained instance.
    """
    if not isinstance(changes, Mapping):
        raise InvalidInput("changes must be an object", details={"field": "body"})
    proxy_id = await ctx.proxy_of_instance(instance_id)
    now = ctx.now()
    async with ctx.write(proxy_id) as (unit, locked):
        before = await ctx.locked_instance(unit, instance_id)
        assert locked is not None
        after = validation.apply_instance_patch(before, changes, now)
        after = dataclasses.replace(
            after,
            id=before.id,
            proxy_id=before.proxy_id,
            user_id=before.user_id,
            created_at=before.created_at,
            is_active=before.is_active,
            outbound_trusted=outbound.trusted_after_patch(
                before, after, by_trusted=outbound_trusted
            ),
            updated_at=now,
        )
        await unit.save_instance(after)
        await recompute(unit, locked, now)
    ctx.logger.info(
        "proxy %s: instance %s updated by %s",
        proxy_id,
        after.instance_name,
        user_id,
        extra=log_fields(proxy_id, after.id),
    )
    return after


async def delete_instance(ctx: ServiceContext, instance_id: str, user_id: str) -> None:
    """Remove an instance; the active one first hands its role on (a completed switchover).

    ``core.failover.plan_deletion`` decides (409/009 while a switch is in progress, 409/008 when
    other instances remain but none is eligible). Deleting a proxy's last instance is allowed
    (decommissioning): the role passes to nobody, recorded as a completed switchover with no
    target and a new epoch.
    """
    proxy_id = await ctx.proxy_of_instance(instance_id)
    now = ctx.now()
    async with ctx.write(proxy_id) as (unit, locked):
        instance = await ctx.locked_instance(unit, instance_id)
        assert locked is not None
        open_recovery = await unit.open_recovery_event(instance.id)
        if open_recovery is not None:
            # Closed, not announced: the instance is gone, its recovery did not fail.
            closed = open_recovery.closed(EventStatus.FAILED, now, "instance deleted")
            await unit.save_event(closed)
        snapshot = await read_snapshot(unit, proxy_id, locked)
        plan = core_failover.plan_deletion(snapshot, instance)
        if not plan.hands_over:
            await unit.delete_instance(instance.id)
            await recompute(unit, locked, now)
        else:
            event = FailoverEvent(
                id=new_id(),
                proxy_id=proxy_id,
                user_id=user_id,
                event_type=EventType.SWITCHOVER,
                source_instance_id=instance.id,
                target_instance_id=plan.target_id,
                reason=plan.reason,
                status=EventStatus.COMPLETED,
                triggered_by=user_id,
                epoch=core_redundancy.next_epoch(locked.epoch),
                created_at=now,
                duration_ms=0,
                completed_at=now,
            )
            await unit.delete_instance(instance.id)
            await record_switch(unit, locked, event, now)
    ctx.forget_instance(instance_id)
    ctx.logger.info(
        "proxy %s: instance %s deleted by %s",
        proxy_id,
        instance.instance_name,
        user_id,
        extra=log_fields(proxy_id, instance.id),
    )


async def record_instance_metrics(
    ctx: ServiceContext, instance_id: str, proxy_id: str, user_id: str, metrics: Mapping[str, Any]
) -> StoredMetricSample:
    """Store one metric sample (007 when empty or invalid) for an instance of ``proxy_id``."""
    sample = validation.parse_metric_sample(metrics, require_one=True)
    assert sample is not None
    user = require_text(user_id, "userId")
    assert user is not None
    if not isinstance(proxy_id, str):
        raise InvalidInput("proxyId is required", details={"field": "proxyId"})
    owner_proxy = await ctx.proxy_of_instance(instance_id)
    if owner_proxy != proxy_id:
        raise instance_not_found(instance_id)
    now = ctx.now()
    stored = StoredMetricSample(new_id(), instance_id, proxy_id, user, sample, now)
    async with ctx.write(proxy_id) as (unit, _locked):
        before = await ctx.locked_instance(unit, instance_id)
        after = with_sample(before, sample)
        if after != before:
            await unit.save_instance(dataclasses.replace(after, updated_at=now))
        await unit.insert_metric(stored)
    return stored


async def get_instance_metrics(
    ctx: ServiceContext, instance_id: str, limit: int = 100
) -> list[StoredMetricSample]:
    """The instance's metric samples, newest first (004; limit 1-1000 else 001)."""
    limit = parse_limit(limit)
    async with ctx.store.read() as reader:
        if await reader.get_instance(instance_id) is None:
            raise instance_not_found(instance_id)
        return await reader.list_metrics(instance_id, limit)
