"""Redundancy assessment (SPEC §3): counts, level, degraded flag and backups; the fencing epoch.

Recomputed by the service in the same transaction as every change of instances, health or the
active pointer, so the stored picture never drifts from the instances it describes.
"""

from __future__ import annotations

from collections.abc import Sequence

from proxy_failover.core.model import (
    HealthStatus,
    Instance,
    RedundancyAssessment,
    RedundancyLevel,
)
from proxy_failover.core.strategies import in_preference_order, is_eligible


def level_for(total_instances: int) -> RedundancyLevel:
    """none 0, single 1, dual 2, multi 3 or more (negative counts read as none)."""
    if total_instances <= 0:
        return RedundancyLevel.NONE
    if total_instances == 1:
        return RedundancyLevel.SINGLE
    if total_instances == 2:
        return RedundancyLevel.DUAL
    return RedundancyLevel.MULTI


def assess(instances: Sequence[Instance], active_instance_id: str | None) -> RedundancyAssessment:
    """Counts over all instances; backups are eligible non-active instances in preference order.

    ``unknown`` instances (including those in maintenance, whose health reads unknown) count as
    neither healthy nor unhealthy, so healthy + unhealthy <= total always holds. The proxy is
    degraded when any instance is not healthy, there is no active instance, or it is not healthy.
    """
    total = len(instances)
    healthy = sum(1 for i in instances if i.health_status is HealthStatus.HEALTHY)
    unhealthy = sum(1 for i in instances if i.health_status is HealthStatus.UNHEALTHY)
    active = next((i for i in instances if i.id == active_instance_id), None)
    is_degraded = (
        healthy < total or active is None or active.health_status is not HealthStatus.HEALTHY
    )
    backups = tuple(
        i.id for i in in_preference_order(instances) if is_eligible(i, active_instance_id)
    )
    return RedundancyAssessment(
        total_instances=total,
        healthy_instances=healthy,
        unhealthy_instances=unhealthy,
        redundancy_level=level_for(total),
        is_degraded=is_degraded,
        backup_instance_ids=backups,
    )


def next_epoch(epoch: int) -> int:
    """The fencing token after a change of the active instance: strictly greater, never reused."""
    return epoch + 1
