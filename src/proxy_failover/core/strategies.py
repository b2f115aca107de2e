"""Target selection: preference order, eligibility and the three failover strategies (SPEC §5),
plus the load-balancing pick for ``GET /route``.

Every choice here is deterministic: ties are always broken by the preference order, whose last key
is the instance id, so the same snapshot always yields the same target on every replica.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from proxy_failover.core.model import (
    AdminState,
    FailoverStrategy,
    HealthStatus,
    Instance,
    LoadBalancingAlgorithm,
)


def preference_key(instance: Instance) -> tuple[int, int, float, str]:
    """Total order: priority ascending, weight descending, registration time, then id.

    An instance without ``created_at`` sorts after every registered one of equal priority/weight.
    """
    created = instance.created_at.timestamp() if instance.created_at is not None else math.inf
    return (instance.priority, -instance.weight, created, instance.id)


def in_preference_order(instances: Iterable[Instance]) -> tuple[Instance, ...]:
    """The instances sorted by ``preference_key`` (most preferred first)."""
    return tuple(sorted(instances, key=preference_key))


def is_eligible(instance: Instance, source_id: str | None = None) -> bool:
    """Healthy, admin-enabled and not the source."""
    return (
        instance.health_status is HealthStatus.HEALTHY
        and instance.admin_state is AdminState.ENABLED
        and instance.id != source_id
    )


def _next_after(
    ordered: Sequence[Instance], anchor_id: str | None, exclude_id: str | None, include_anchor: bool
) -> Instance | None:
    """The first eligible instance after ``anchor_id`` in ``ordered``, wrapping around.

    With no anchor (or one not in ``ordered``) the scan starts at the front. ``include_anchor``
    lets the anchor itself come last in the scan (a load balancer may pick the same one again).
    """
    index = next((n for n, i in enumerate(ordered) if i.id == anchor_id), None)
    if index is None:
        scan: Sequence[Instance] = ordered
    else:
        tail = ordered[: index + 1] if include_anchor else ordered[:index]
        scan = (*ordered[index + 1 :], *tail)
    return next((i for i in scan if is_eligible(i, exclude_id)), None)


def _fewest_connections(ordered: Sequence[Instance], exclude_id: str | None) -> Instance | None:
    """Fewest ``active_connections`` (None counts as 0) among eligible; ties by preference order."""
    candidates = [i for i in ordered if is_eligible(i, exclude_id)]
    if not candidates:
        return None
    return min(candidates, key=lambda i: i.active_connections or 0)  # min is stable: first wins


def select_target(
    instances: Sequence[Instance], strategy: FailoverStrategy, source_id: str | None
) -> Instance | None:
    """The strategy's choice among eligible instances, or None when none is eligible.

    The source is never chosen. ``round_robin`` takes the next eligible instance after the source
    in preference order (wrapping); with no source, or one that is not among ``instances``, the
    first eligible.
    """
    ordered = in_preference_order(instances)
    if strategy is FailoverStrategy.ROUND_ROBIN:
        return _next_after(ordered, source_id, source_id, include_anchor=False)
    if strategy is FailoverStrategy.LEAST_CONNECTIONS:
        return _fewest_connections(ordered, source_id)
    return next((i for i in ordered if is_eligible(i, source_id)), None)


@dataclass(frozen=True, slots=True)
class RouteCursor:
    """Load-balancer memory between picks: the last pick and the smooth-WRR current weights."""

    last_instance_id: str | None = None
    current_weights: Mapping[str, int] = field(default_factory=dict)


def _smooth_weighted(
    ordered: Sequence[Instance], cursor: RouteCursor
) -> tuple[Instance | None, dict[str, int]]:
    """nginx's smooth weighted round robin over the eligible instances of ``ordered``.

    Each pick adds every candidate's weight to its current weight, picks the largest (ties by
    preference order) and subtracts the total from the pick. Over a cycle of sum(weights) picks each
    instance is chosen exactly ``weight`` times, interleaved. Weight-0 instances are never picked
    unless every candidate has weight 0, in which case all count as weight 1.
    """
    eligible = [i for i in ordered if is_eligible(i)]
    candidates = [i for i in eligible if i.weight > 0]
    weights = {i.id: i.weight for i in candidates}
    if not candidates:
        candidates = eligible
        weights = {i.id: 1 for i in candidates}
    if not candidates:
        return None, dict(cursor.current_weights)
    current = {i.id: cursor.current_weights.get(i.id, 0) + weights[i.id] for i in candidates}
    best = candidates[0]
    for instance in candidates[1:]:
        if current[instance.id] > current[best.id]:
            best = instance
    current[best.id] -= sum(weights.values())
    return best, current


def pick_route(
    instances: Sequence[Instance], algorithm: LoadBalancingAlgorithm, cursor: RouteCursor
) -> tuple[Instance | None, RouteCursor]:
    """One load-balanced pick among eligible instances and the cursor for the next pick.

    ``round_robin`` takes the next eligible instance after ``cursor.last_instance_id`` in preference
    order (the same one again when it is the only one); ``least_connections`` the fewest
    connections; ``weighted`` smooth weighted round robin. With nothing eligible the pick is None
    and the cursor is returned unchanged.
    """
    ordered = in_preference_order(instances)
    weights = cursor.current_weights
    if algorithm is LoadBalancingAlgorithm.WEIGHTED:
        pick, weights = _smooth_weighted(ordered, cursor)
    elif algorithm is LoadBalancingAlgorithm.LEAST_CONNECTIONS:
        pick = _fewest_connections(ordered, None)
    else:
        pick = _next_after(ordered, cursor.last_instance_id, None, include_anchor=True)
    if pick is None:
        return None, cursor
    return pick, RouteCursor(last_instance_id=pick.id, current_weights=weights)
