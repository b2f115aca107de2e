"""Small builders for integration tests: a proxy with named instances in a given health, and a
two-proxy fleet whose end state compares by names (ids replaced) to the same fleet built twice."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any

from proxy_failover.core.model import Instance, Notification
from proxy_failover.service import ProxyFailoverService

OWNER = "user-456"
ADMIN = "admin-1"
FLEET_CONFIG: dict[str, object] = {"unhealthyThreshold": 2, "healthyThreshold": 2}


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


async def fleet(service: ProxyFailoverService, prefix: str) -> dict[tuple[str, str], Instance]:
    """Two proxies ``<prefix>1`` (a active, b, m in maintenance) and ``<prefix>2`` (x unhealthy, y),
    keyed by (proxy number, name): the same fleet built twice lets two paths be compared."""
    one = await proxy_with(service, f"{prefix}1", ["a", "b", "m"], config=FLEET_CONFIG)
    await activate(service, f"{prefix}1", one["a"])
    await service.update_instance(one["m"].id, OWNER, {"adminState": "maintenance"})
    two = await proxy_with(service, f"{prefix}2", ["x", "y"], unhealthy=["x"], config=FLEET_CONFIG)
    return {("1", k): v for k, v in one.items()} | {("2", k): v for k, v in two.items()}


async def fleet_state(service: ProxyFailoverService, prefix: str) -> dict[str, Any]:
    """Everything the results can move, with ids replaced by names so two fleets compare."""
    state: dict[str, Any] = {}
    for n in ("1", "2"):
        proxy_id = f"{prefix}{n}"
        instances = await service.get_proxy_instances(proxy_id)
        names = {i.id: i.instance_name for i in instances}
        state[f"instances{n}"] = [dataclasses.replace(i, id="", proxy_id="") for i in instances]
        status = await service.get_redundancy_status(proxy_id)
        assert status is not None
        state[f"redundancy{n}"] = dataclasses.replace(
            status,
            proxy_id="",
            active_instance_id=names.get(status.active_instance_id or ""),
            backup_instance_ids=tuple(names[i] for i in status.backup_instance_ids),
        )
        state[f"events{n}"] = sorted(
            (e.event_type.value, e.status.value, e.reason, names.get(e.target_instance_id or ""))
            for e in await service.get_failover_events(proxy_id)
        )
    return state


def notes_by_proxy(recorder: Recorder, prefix: str) -> dict[str, list[str]]:
    """The notification types each proxy of a fleet was told, by proxy number."""
    out: dict[str, list[str]] = {}
    for proxy_id, notes in recorder.calls:
        out.setdefault(proxy_id.removeprefix(prefix), []).extend(n.type for n in notes)
    return out
