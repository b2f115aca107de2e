"""Target selection: preference order, eligibility and the three failover strategies (SPEC §5),
plus the load-balancing pick for ``GET /route``."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from proxy_failover.core.model import FailoverStrategy, Instance, LoadBalancingAlgorithm


def preference_key(instance: Instance) -> tuple[int, int, float, str]:
    """Total order: priority ascending, weight descending, registration time, then id."""
    raise NotImplementedError


def in_preference_order(instances: Iterable[Instance]) -> tuple[Instance, ...]:
    raise NotImplementedError


def is_eligible(instance: Instance, source_id: str | None = None) -> bool:
    """Healthy, admin-enabled and not the source."""
    raise NotImplementedError


def select_target(
    instances: Sequence[Instance], strategy: FailoverStrategy, source_id: str | None
) -> Instance | None:
    """The strategy's choice among eligible instances, or None when none is eligible."""
    raise NotImplementedError


@dataclass(frozen=True, slots=True)
class RouteCursor:
    """Load-balancer memory between picks: last pick (round robin) and smooth-WRR current weights."""

    last_instance_id: str | None = None
    current_weights: Mapping[str, int] = field(default_factory=dict)


def pick_route(
    instances: Sequence[Instance], algorithm: LoadBalancingAlgorithm, cursor: RouteCursor
) -> tuple[Instance | None, RouteCursor]:
    """One load-balanced pick among eligible instances and the cursor for the next pick."""
    raise NotImplementedError
