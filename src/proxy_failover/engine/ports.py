"""The engine's edges: what it needs from the service and the prober, and what it hands back.

Every method listed is required: the engine calls each of them, and the test doubles implement
them all (the engine's tests run on the real service), so nothing is chosen at run time.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from proxy_failover.core.model import (
    CheckResult,
    Decision,
    EventStatus,
    EventType,
    FailoverConfig,
    FailoverEvent,
    HealthState,
    Instance,
    ProxySnapshot,
)
from proxy_failover.core.retention import RetentionPolicy

Clock = Callable[[], datetime]


class ProbeAdapter(Protocol):
    """The outbound probe edge (``adapters.probes.Prober``), injected for testability."""

    #: The engine sets this: called with an instance id when its idle probe connection drops.
    on_connection_lost: Callable[[str], None] | None

    def prepare(self, instance: Instance, config: FailoverConfig) -> Any:
        """An opaque probe target; raises ``ValueError`` when the instance cannot be probed."""

    def start(self, target: Any, on_result: Callable[[CheckResult], None]) -> bool:
        """Start a probe without a task when a pooled connection is free; its result comes by
        ``on_result``. False: nothing started, the engine awaits ``probe`` in a task instead."""

    async def probe(self, target: Any) -> CheckResult:
        """One probe, bounded by the target's timeout; failures are results, never exceptions."""

    def forget(self, instance_id: str) -> None:
        """Drop the instance's pooled connection (it is no longer probed, or moved)."""

    async def request_recovery(
        self, url: str, payload: dict[str, Any], timeout_s: float, *, trusted: bool
    ) -> CheckResult:
        """POST a recovery request (SPEC §5)."""


class EngineService(Protocol):
    """The service methods the engine uses (``ProxyFailoverService`` provides them)."""

    async def list_proxy_ids(self) -> list[str]: ...
    async def proxy_versions(self) -> dict[str, int]:
        """Every proxy's change counter: an unchanged proxy's snapshot is not re-read."""

    async def load_snapshot(self, proxy_id: str) -> ProxySnapshot: ...
    async def record_probe_results(
        self, results: Sequence[tuple[str, CheckResult]]
    ) -> list[HealthState | None]:
        """Probe results in one batch, in order; None for an instance that is gone."""

    async def apply_decision(
        self, proxy_id: str, decision: Decision, detected_at: datetime
    ) -> FailoverEvent | None: ...
    async def close_stale_events(self) -> list[FailoverEvent]: ...
    async def expire_health_reports(self, proxy_id: str) -> list[Instance]:
        """Reported statuses past the proxy's ``healthReportTtlSeconds`` turn unhealthy."""

    async def prune_history(self, policy: RetentionPolicy) -> dict[str, int]:
        """Retention: one batch per table; rows deleted per table."""

    async def open_recovery_event(self, instance_id: str, reason: str) -> FailoverEvent | None: ...
    async def close_recovery_event(
        self, event_id: str, status: EventStatus, error_message: str | None = None
    ) -> FailoverEvent: ...
    async def get_failover_events(
        self,
        proxy_id: str,
        limit: int = 50,
        *,
        status: EventStatus | None = None,
        event_type: EventType | None = None,
        before: datetime | None = None,
    ) -> list[FailoverEvent]: ...


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one evaluation (or housekeeping step) of a tick did, for tests, logs and metrics."""

    proxy_id: str
    decision: Decision | None = None
    event: FailoverEvent | None = None
    note: str | None = None
    error: str | None = None


@dataclass(slots=True)
class EngineStats:
    """Counters for benchmarks and metrics; lags are start-time minus due-time, in seconds."""

    probes_started: int = 0
    probes_completed: int = 0
    probe_failures: int = 0
    evaluations: int = 0
    decisions_applied: int = 0
    inconclusive: int = 0  # timed-out probes not recorded because the engine was overloaded
    early_probes: int = 0  # probes brought forward by a dropped keep-alive connection
    connection_drops: int = 0
    lags: deque[float] = field(default_factory=lambda: deque(maxlen=200_000))
