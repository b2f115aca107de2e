"""Builders of core values for the unit tests: short to call, explicit about what matters."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from proxy_failover.core.model import (
    AdminState,
    FailoverConfig,
    FailoverEvent,
    HealthStatus,
    Instance,
    ProxySnapshot,
    RedundancyStatus,
)
from tests.helpers.clock import T0

PROXY = "proxy-1"
USER = "user-1"


def inst(
    name: str,
    *,
    health: HealthStatus = HealthStatus.HEALTHY,
    admin: AdminState = AdminState.ENABLED,
    priority: int = 100,
    weight: int = 100,
    order: int = 0,
    **kwargs: Any,
) -> Instance:
    """An instance whose id is its name; ``order`` sets registration time (seconds after T0)."""
    kwargs.setdefault("created_at", T0 + timedelta(seconds=order))
    return Instance(
        id=name,
        proxy_id=PROXY,
        user_id=USER,
        instance_name=name,
        priority=priority,
        weight=weight,
        admin_state=admin,
        health_status=health,
        **kwargs,
    )


def snapshot(
    *instances: Instance,
    active: str | None = None,
    open_event: FailoverEvent | None = None,
    epoch: int = 0,
    **config: Any,
) -> ProxySnapshot:
    return ProxySnapshot(
        config=FailoverConfig(proxy_id=PROXY, user_id=USER, **config),
        instances=instances,
        redundancy=RedundancyStatus(proxy_id=PROXY, active_instance_id=active, epoch=epoch),
        open_switch_event=open_event,
    )
