"""The use cases — the seed's service methods and SPEC §7's additions — one transaction each.

The core decides, the store persists; nothing here returns ORM rows. Every change of instances,
health or the active pointer recomputes redundancy in the same transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from proxy_failover.core.model import (
    CheckResult,
    Decision,
    EventStatus,
    EventType,
    Evaluation,
    Explanation,
    FailoverConfig,
    FailoverEvent,
    HealthStatus,
    Instance,
    MetricSample,
    Notification,
    ProxySnapshot,
    ProxySummary,
    RedundancyStatus,
    Route,
    StoredMetricSample,
)

#: Called after a commit with the proxy id and the notifications that commit produced.
ChangeListener = Callable[[str, Sequence[Notification]], None]


class ProxyFailoverService:
    """Facade over the store with every method of SPEC §6 (snake_case of the seed's)."""

    # --- the seed's methods -------------------------------------------------------------------
    async def create_failover_configuration(
        self, proxy_id: str, user_id: str, config: Mapping[str, Any]
    ) -> FailoverConfig: ...
    async def get_failover_configuration(self, proxy_id: str) -> FailoverConfig | None: ...
    async def register_proxy_instance(
        self, proxy_id: str, user_id: str, instance_data: Mapping[str, Any]
    ) -> Instance: ...
    async def get_proxy_instances(self, proxy_id: str) -> list[Instance]: ...
    async def update_instance_health(
        self, instance_id: str, health_status: str, metrics: Mapping[str, Any] | None = None
    ) -> Instance: ...
    async def record_instance_metrics(
        self, instance_id: str, proxy_id: str, user_id: str, metrics: Mapping[str, Any]
    ) -> StoredMetricSample: ...
    async def evaluate_failover(self, proxy_id: str, user_id: str | None = None) -> Evaluation: ...
    async def execute_failover(
        self,
        proxy_id: str,
        user_id: str,
        source_id: str | None,
        target_id: str,
        reason: str | None = None,
    ) -> FailoverEvent: ...
    async def complete_failover_event(
        self,
        event_id: str,
        status: str,
        error_message: str | None = None,
        duration_ms: int | None = None,
    ) -> FailoverEvent: ...
    async def get_redundancy_status(self, proxy_id: str) -> RedundancyStatus | None: ...
    async def update_redundancy_status(
        self, proxy_id: str, user_id: str, status_data: Mapping[str, Any]
    ) -> RedundancyStatus: ...
    async def get_failover_events(
        self,
        proxy_id: str,
        limit: int = 50,
        *,
        status: EventStatus | None = None,
        event_type: EventType | None = None,
        before: datetime | None = None,
    ) -> list[FailoverEvent]: ...

    # --- SPEC §7 additions --------------------------------------------------------------------
    async def list_proxies(self, user_id: str | None = None) -> list[ProxySummary]: ...
    async def get_instance(self, instance_id: str) -> Instance: ...
    async def get_event(self, event_id: str) -> FailoverEvent: ...
    async def update_instance(
        self, instance_id: str, user_id: str, changes: Mapping[str, Any]
    ) -> Instance: ...
    async def delete_instance(self, instance_id: str, user_id: str) -> None: ...
    async def record_check_result(self, instance_id: str, result: CheckResult) -> Instance: ...
    async def get_instance_metrics(
        self, instance_id: str, limit: int = 100
    ) -> list[StoredMetricSample]: ...
    async def get_route(self, proxy_id: str) -> Route: ...
    async def explain(self, proxy_id: str) -> Explanation: ...

    # --- for the engine -----------------------------------------------------------------------
    async def list_proxy_ids(self) -> list[str]: ...
    async def load_snapshot(self, proxy_id: str) -> ProxySnapshot: ...
    async def apply_decision(
        self, proxy_id: str, decision: Decision, detected_at: datetime
    ) -> FailoverEvent | None: ...
    async def close_stale_events(self) -> list[FailoverEvent]: ...
    async def open_recovery_event(self, instance_id: str, reason: str) -> FailoverEvent | None: ...
    async def close_recovery_event(
        self, event_id: str, status: EventStatus, error_message: str | None = None
    ) -> FailoverEvent: ...


_ = (HealthStatus, MetricSample)
