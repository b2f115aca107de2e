"""Small builders for integration tests: a proxy with named instances in a given health."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from proxy_failover.core.model import Instance, Notification
from proxy_failover.service import ProxyFailoverService

OWNER = "user-456"
ADMIN = "admin-1"


async def proxy_with(
    service: ProxyFailoverService,
    proxy_id: str,
    names: Sequence[str],
    *,
    healthy: Iterable[str] | None = None,
    unhealthy: Iterable[str] = (),
    config: dict[str, object] | None = None,
) -> dict[str, Instance]:
    """Create the proxy and its instances (priority in the order given); report their health.

    ``healthy`` defaults to every name; instances in neither list stay ``unknown``.
    """
    await service.create_failover_configuration(proxy_id, OWNER, config or {})
    made: dict[str, Instance] = {}
    for rank, name in enumerate(names):
        made[name] = await service.register_proxy_instance(
            proxy_id, OWNER, {"instanceName": name, "priority": 10 * (rank + 1)}
        )
    for name in names if healthy is None else healthy:
        made[name] = await service.update_instance_health(made[name].id, "healthy")
    for name in unhealthy:
        made[name] = await service.update_instance_health(made[name].id, "unhealthy")
    return made


async def activate(service: ProxyFailoverService, proxy_id: str, instance: Instance) -> None:
    """Make ``instance`` active through a completed manual activation/switchover."""
    status = await service.get_redundancy_status(proxy_id)
    source = status.active_instance_id if status is not None else None
    event = await service.execute_failover(proxy_id, ADMIN, source, instance.id, "test setup")
    await service.complete_failover_event(event.id, "completed")


class Recorder:
    """An ``on_change`` listener that keeps what it was told."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Notification, ...]]] = []

    def __call__(self, proxy_id: str, notifications: Sequence[Notification]) -> None:
        self.calls.append((proxy_id, tuple(notifications)))

    @property
    def types(self) -> list[str]:
        return [n.type for _, notes in self.calls for n in notes]

    def of_type(self, kind: str) -> list[Notification]:
        return [n for _, notes in self.calls for n in notes if n.type == kind]

    def clear(self) -> None:
        self.calls.clear()
