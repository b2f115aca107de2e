"""Redundancy: creating a proxy's rows, recomputing its redundancy after every change of
instances, health or the active pointer, and the seed's read and override of the status."""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from proxy_failover.core import redundancy as core_redundancy
from proxy_failover.core import strategies, validation
from proxy_failover.core.errors import InvalidInput, config_not_found
from proxy_failover.core.model import (
    FailoverConfig,
    Instance,
    Notification,
    NotificationType,
    RedundancyStatus,
)
from proxy_failover.service.context import ServiceContext
from proxy_failover.store import Reader, UnitOfWork, new_id


class Keep(enum.Enum):
    """Sentinel for "leave the active pointer where it is"."""

    POINTER = enum.auto()


async def ensure_proxy(
    unit: UnitOfWork,
    proxy_id: str,
    user_id: str,
    locked: RedundancyStatus | None,
    data: Mapping[str, Any],
    now: datetime,
) -> tuple[FailoverConfig, RedundancyStatus, bool]:
    """The proxy's config and locked redundancy row, creating both (owner ``user_id``) if new.

    Returns (config, redundancy, created). ``data`` is the config body for a new proxy.
    """
    if locked is None:
        config = validation.build_config(proxy_id, user_id, data, None, now)
        config = dataclasses.replace(
            config,
            id=new_id(),
            proxy_id=proxy_id,
            user_id=user_id,
            created_at=now,
            updated_at=now,
        )
        assessment = core_redundancy.assess((), None)
        status = RedundancyStatus(
            proxy_id=proxy_id,
            total_instances=assessment.total_instances,
            healthy_instances=assessment.healthy_instances,
            unhealthy_instances=assessment.unhealthy_instances,
            redundancy_level=assessment.redundancy_level,
            is_degraded=assessment.is_degraded,
            # A proxy re-created under a deleted one's id continues its epoch: fencing never
            # goes back (SPEC §3).
            epoch=await unit.last_event_epoch(proxy_id),
            updated_at=now,
        )
        if await unit.create_proxy(config, status):
            return config, status, True
        # Another writer created it between our lock attempt and insert: lock theirs.
        locked = await unit.lock_proxy(proxy_id)
        assert locked is not None
    config_found = await unit.get_config(proxy_id)
    assert config_found is not None
    return config_found, locked, False


async def recompute(
    unit: UnitOfWork,
    before: RedundancyStatus,
    now: datetime,
    *,
    move_to: str | Keep | None = Keep.POINTER,
    epoch: int | None = None,
    failover_reason: str | None = None,
    instances: Sequence[Instance] | None = None,
) -> RedundancyStatus:
    """Recompute redundancy from the instances (clearing ``overridden``); move the pointer.

    ``instances`` is the proxy's current instances when the caller already has them. The row
    is only written when something in it changed (a steady stream of identical health reports
    costs no redundancy write).
    """
    proxy_id = before.proxy_id
    if instances is None:
        instances = await unit.list_instances(proxy_id)
    instances = strategies.in_preference_order(instances)
    active_id = before.active_instance_id if move_to is Keep.POINTER else move_to
    if active_id is not None and all(i.id != active_id for i in instances):
        active_id = None
    assessment = core_redundancy.assess(instances, active_id)
    moved = active_id != before.active_instance_id
    after = RedundancyStatus(
        proxy_id=proxy_id,
        total_instances=assessment.total_instances,
        healthy_instances=assessment.healthy_instances,
        unhealthy_instances=assessment.unhealthy_instances,
        active_instance_id=active_id,
        backup_instance_ids=assessment.backup_instance_ids,
        last_failover_at=now if failover_reason is not None else before.last_failover_at,
        last_failover_reason=(
            failover_reason if failover_reason is not None else before.last_failover_reason
        ),
        redundancy_level=assessment.redundancy_level,
        is_degraded=assessment.is_degraded,
        epoch=epoch if epoch is not None else before.epoch,
        overridden=False,
        updated_at=now,
    )
    if dataclasses.replace(after, updated_at=before.updated_at) == before:
        return before
    await unit.save_redundancy(after)
    if moved or before.overridden:
        await unit.mark_active(proxy_id, active_id)
    if after.is_degraded != before.is_degraded:
        unit.notify(
            Notification(
                NotificationType.REDUNDANCY_DEGRADED
                if after.is_degraded
                else NotificationType.REDUNDANCY_RESTORED,
                proxy_id,
                after.epoch,
                now,
                {
                    "activeInstanceId": after.active_instance_id,
                    "totalInstances": after.total_instances,
                    "healthyInstances": after.healthy_instances,
                    "unhealthyInstances": after.unhealthy_instances,
                    "redundancyLevel": after.redundancy_level.value,
                    "isDegraded": after.is_degraded,
                },
            )
        )
    return after


async def get_redundancy_status(ctx: ServiceContext, proxy_id: str) -> RedundancyStatus | None:
    if not isinstance(proxy_id, str):
        return None

    async def load(reader: Reader) -> RedundancyStatus | None:
        return await reader.get_redundancy(proxy_id)

    return await ctx.cached("redundancy", proxy_id, load)


async def update_redundancy_status(
    ctx: ServiceContext, proxy_id: str, user_id: str, status_data: Mapping[str, Any]
) -> RedundancyStatus:
    """The seed's override (SPEC §7): stored as given, ``overridden`` until the next recompute.

    It never moves the active pointer or the epoch (014 when inconsistent).
    """
    if not isinstance(status_data, Mapping):
        raise InvalidInput("redundancy status data is required", details={"field": "body"})
    if not isinstance(proxy_id, str) or not proxy_id:
        raise InvalidInput("proxyId is required", details={"field": "proxyId"})
    now = ctx.now()
    async with ctx.write(proxy_id) as (unit, locked):
        if locked is None:
            raise config_not_found(proxy_id)
        instance_ids = frozenset(i.id for i in await unit.list_instances(proxy_id))
        override = validation.validate_redundancy_override(status_data, locked, now, instance_ids)
        override = dataclasses.replace(
            override,
            proxy_id=proxy_id,
            active_instance_id=locked.active_instance_id,
            epoch=locked.epoch,
            overridden=True,
            updated_at=now,
        )
        await unit.save_redundancy(override)
    return override
