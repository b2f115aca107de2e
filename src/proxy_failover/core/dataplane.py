"""What a data plane should do with a proxy's traffic (SPEC §9): the desired state and the switch
policy, shared by every data-plane agent and the built-in forwarder.

Pure functions over the instances, the redundancy row's active pointer and epoch, and the
configuration: agents fetch those through the REST API and hand them here, so every data plane
follows the same rules (who takes traffic, at what weight, where it goes, when to cut).
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from proxy_failover.core.model import (
    SWITCHING_EVENT_TYPES,
    HealthStatus,
    Instance,
    LoadBalancingAlgorithm,
    NotificationType,
)
from proxy_failover.core.strategies import in_preference_order, is_eligible

#: Port of an http(s) endpoint URL that names none.
_DEFAULT_PORTS = {"http": 80, "https": 443}


class SwitchPolicy(enum.StrEnum):
    """What happens to open connections of an instance that stops taking traffic."""

    DRAIN = "drain"  # existing connections stay until they end; new ones go elsewhere
    CUT = "cut"  # existing connections are closed so clients reconnect at once


@dataclass(frozen=True, slots=True)
class TrafficTarget:
    """One instance as a data plane sees it."""

    instance_id: str
    name: str
    address: tuple[str, int] | None  # where its traffic goes; None = nowhere known
    weight: int  # traffic weight when serving (0-1000, see ``traffic_weights``)
    serving: bool  # takes new connections
    healthy: bool
    eligible: bool  # healthy and enabled: a candidate for redispatch


@dataclass(frozen=True, slots=True)
class DesiredState:
    """Everything a data plane needs for one proxy, in preference order."""

    proxy_id: str
    epoch: int
    active_instance_id: str | None
    load_balanced: bool
    algorithm: LoadBalancingAlgorithm
    targets: tuple[TrafficTarget, ...]
    #: The instances the targets were made from (for a data plane that load balances itself).
    instances: tuple[Instance, ...] = ()

    def target(self, instance_id: str | None) -> TrafficTarget | None:
        return next((t for t in self.targets if t.instance_id == instance_id), None)

    @property
    def serving(self) -> tuple[TrafficTarget, ...]:
        return tuple(t for t in self.targets if t.serving)


def split_host_port(text: str) -> tuple[str, int] | None:
    """``host:port`` or ``[v6]:port`` as (host, port); None when there is no valid port."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        return None
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        valid = ":" in host
    else:
        valid = bool(host) and ":" not in host
    return (host, int(port)) if valid else None


def traffic_address(instance: Instance) -> tuple[str, int] | None:
    """Where the instance's user traffic goes: its ``trafficAddress``, else the host and port of
    its ``endpoint`` (an http(s) URL without a port means 80/443); None when neither says."""
    if instance.traffic_address:
        return split_host_port(instance.traffic_address)
    return endpoint_address(instance.endpoint) if instance.endpoint else None


def endpoint_address(endpoint: str) -> tuple[str, int] | None:
    """The host and port an endpoint (``host:port`` or an http(s) URL, 80/443 by default) or a
    URL connects to; None when it names none."""
    if "://" not in endpoint:
        return split_host_port(endpoint)
    parts = urlsplit(endpoint)
    try:
        port = parts.port or _DEFAULT_PORTS.get(parts.scheme.lower())
    except ValueError:
        return None
    if not parts.hostname or port is None:
        return None
    return parts.hostname, port


def format_address(address: tuple[str, int] | None) -> str | None:
    """(host, port) as ``host:port`` (``[v6]:port``); None stays None."""
    if address is None:
        return None
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def traffic_weights(instances: Sequence[Instance]) -> dict[str, int]:
    """Weights among load-balanced instances, as ``/route``'s weighted pick counts them: weight-0
    instances take nothing unless every one has weight 0, then all count as 1."""
    if instances and all(i.weight == 0 for i in instances):
        return {i.id: 1 for i in instances}
    return {i.id: i.weight for i in instances}


def desired_state(
    proxy_id: str,
    instances: Sequence[Instance],
    active_instance_id: str | None,
    epoch: int,
    *,
    load_balanced: bool,
    algorithm: LoadBalancingAlgorithm = LoadBalancingAlgorithm.ROUND_ROBIN,
) -> DesiredState:
    """The active instance takes traffic and the others none; with load balancing on, every
    eligible instance takes traffic at its weight (SPEC §9)."""
    ordered = in_preference_order(instances)
    eligible = [i for i in ordered if is_eligible(i)]
    weights = traffic_weights(eligible)
    targets = tuple(
        TrafficTarget(
            instance_id=i.id,
            name=i.instance_name,
            address=traffic_address(i),
            weight=weights.get(i.id, i.weight),
            serving=(i.id in weights and weights[i.id] > 0)
            if load_balanced
            else i.id == active_instance_id,
            healthy=i.health_status is HealthStatus.HEALTHY,
            eligible=is_eligible(i),
        )
        for i in ordered
    )
    return DesiredState(
        proxy_id, epoch, active_instance_id, load_balanced, algorithm, targets, ordered
    )


def moved_by_event(state: DesiredState, target_id: object, epoch: int) -> DesiredState | None:
    """``state`` with the active role moved to ``target_id`` at ``epoch``, as a failover event
    announces it: applied at once, before the full re-read that follows it. None when the event
    cannot be applied alone (load balancing, an unknown target, an older epoch)."""
    if (
        state.load_balanced
        or not isinstance(target_id, str)
        or state.target(target_id) is None
        or not is_newer_or_same(epoch, state.epoch)
    ):
        return None
    targets = tuple(
        dataclasses.replace(t, serving=t.instance_id == target_id) for t in state.targets
    )
    return dataclasses.replace(state, epoch=epoch, active_instance_id=target_id, targets=targets)


def with_health(state: DesiredState, instance_id: object, status: object) -> DesiredState | None:
    """``state`` with one instance's health as an ``instance.healthy``/``instance.unhealthy``
    event tells it, applied at once: a move that follows (the failover event) then sees its source
    unhealthy and cuts, and a load-balanced pool drops or regains the instance before the full
    re-read. None when the event changes nothing (unknown instance or status, same health)."""
    if status not in (HealthStatus.HEALTHY.value, HealthStatus.UNHEALTHY.value):
        return None
    health = HealthStatus(status)
    instance = next((i for i in state.instances if i.id == instance_id), None)
    if instance is None or instance.health_status is health:
        return None
    instances = tuple(
        dataclasses.replace(i, health_status=health) if i is instance else i
        for i in state.instances
    )
    return desired_state(
        state.proxy_id,
        instances,
        state.active_instance_id,
        state.epoch,
        load_balanced=state.load_balanced,
        algorithm=state.algorithm,
    )


#: Stream notifications that announce a move of the active role (with a switching event's
#: ``eventType``) and those that change one instance's health.
_MOVE_NOTIFICATIONS = frozenset(
    {NotificationType.FAILOVER_STARTED, NotificationType.FAILOVER_COMPLETED}
)
_HEALTH_NOTIFICATIONS = frozenset(
    {NotificationType.INSTANCE_HEALTHY, NotificationType.INSTANCE_UNHEALTHY}
)


def told_by_event(
    state: DesiredState, notification_type: str, data: Mapping[str, object], epoch: int | None
) -> DesiredState | None:
    """What a stream notification tells at once about ``state``, before the full re-read that
    follows it: a switching event that started or completed moves the active role
    (``moved_by_event``), a health transition changes one instance (``with_health``). None
    when it tells nothing that can be applied alone (any other notification, a recovery event,
    no epoch, or what those two refuse)."""
    if notification_type in _MOVE_NOTIFICATIONS:
        if data.get("eventType") not in SWITCHING_EVENT_TYPES or epoch is None:
            return None
        return moved_by_event(state, data.get("targetInstanceId"), epoch)
    if notification_type in _HEALTH_NOTIFICATIONS:
        return with_health(state, data.get("instanceId"), data.get("status"))
    return None


def is_newer_or_same(epoch: int, applied_epoch: int | None) -> bool:
    """Fencing: a state is applied only if its epoch is ≥ the last one applied."""
    return applied_epoch is None or epoch >= applied_epoch


def is_planned_move(leaving: TrafficTarget | None) -> bool:
    """A move away from a healthy instance that is still registered is planned (a switchover,
    a failback, a drain); away from an unhealthy, unknown or removed one it is not."""
    return leaving is not None and leaving.healthy


def leaving_policy(
    leaving: TrafficTarget | None,
    *,
    planned: SwitchPolicy = SwitchPolicy.DRAIN,
    unplanned: SwitchPolicy = SwitchPolicy.CUT,
) -> SwitchPolicy:
    """What to do with the open connections of an instance that stops taking traffic."""
    return planned if is_planned_move(leaving) else unplanned


def connections_to_cut(state: DesiredState, open_on: Sequence[str]) -> list[str]:
    """Instances among ``open_on`` (those with open connections) whose connections must close now:
    they take no traffic and are unhealthy, unknown or removed. Connections drained by a planned
    move stay while their instance stays healthy, and are cut once it is not."""
    cut: list[str] = []
    for instance_id in open_on:
        target = state.target(instance_id)
        if target is None or (not target.serving and leaving_policy(target) is SwitchPolicy.CUT):
            cut.append(instance_id)
    return cut


def stopped_serving(
    before: DesiredState | None, after: DesiredState
) -> list[tuple[str, TrafficTarget | None]]:
    """Instances that served in ``before`` and do not in ``after``: (instance id, its target in
    ``after`` or None when it was removed)."""
    if before is None:
        return []
    stopped: list[tuple[str, TrafficTarget | None]] = []
    for old in before.serving:
        now = after.target(old.instance_id)
        if now is None or not now.serving:
            stopped.append((old.instance_id, now))
    return stopped
