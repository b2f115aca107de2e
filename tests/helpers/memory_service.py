"""An in-memory stand-in for the engine-facing part of ``ProxyFailoverService``.

It applies the same core functions (health state machine, decide's target, redundancy) as the real
service, without a database, so engine unit tests can drive ``tick(now)`` with a fake clock and the
probe benchmark can measure the engine's own cost. Behaviour that matters is also tested against
the real service in tests/e2e.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta

from proxy_failover.core.errors import Conflict, ErrorCode, NotFound
from proxy_failover.core.health import is_out_of_date, observe, report
from proxy_failover.core.model import (
    STALE_EVENT_SECONDS,
    SWITCHING_EVENT_TYPES,
    CheckResult,
    Decision,
    DecisionAction,
    EventStatus,
    EventType,
    FailoverConfig,
    FailoverEvent,
    HealthRules,
    HealthStatus,
    Instance,
    Notification,
    ProxySnapshot,
    RedundancyStatus,
)
from proxy_failover.core.strategies import in_preference_order

Listener = Callable[[str, Sequence[Notification]], None]


class MemoryService:
    """Configs, instances, redundancy and events in dicts; one 'transaction' per method call."""

    def __init__(self, clock: Callable[[], datetime], on_change: Listener | None = None) -> None:
        self.clock = clock
        self.on_change = on_change
        self.configs: dict[str, FailoverConfig] = {}
        self.instances: dict[str, Instance] = {}
        self.redundancy: dict[str, RedundancyStatus] = {}
        self.events: list[FailoverEvent] = []
        self.recorded_checks = 0
        self.recorded_batches = 0
        self._ids = itertools.count(1)
        self._order: dict[str, list[str]] = {}

    # --- setup helpers (what the API/library would do) ------------------------------------------
    def add_proxy(self, config: FailoverConfig) -> None:
        self.configs[config.proxy_id] = config
        self.redundancy.setdefault(config.proxy_id, RedundancyStatus(config.proxy_id))
        self._changed(config.proxy_id)

    def add_instance(self, proxy_id: str, name: str, **fields: object) -> Instance:
        instance = Instance(
            id=f"i{next(self._ids):05d}",
            proxy_id=proxy_id,
            user_id="u",
            instance_name=name,
            created_at=self.clock(),
            **fields,  # type: ignore[arg-type]
        )
        self.instances[instance.id] = instance
        self._order.pop(proxy_id, None)
        self._changed(proxy_id)
        return instance

    def update(self, instance_id: str, **fields: object) -> Instance:
        instance = replace(self.instances[instance_id], **fields)  # type: ignore[arg-type]
        self.instances[instance_id] = instance
        self._order.pop(instance.proxy_id, None)
        self._changed(instance.proxy_id)
        return instance

    def report_health(self, instance_id: str, status: HealthStatus) -> Instance:
        """``update_instance_health``: the reported status holds at once."""
        instance = self.instances[instance_id]
        state = report(instance.health, status)
        return self.update(
            instance_id,
            health_status=state.status,
            consecutive_failures=state.consecutive_failures,
            consecutive_successes=state.consecutive_successes,
            status_changed_at=self.clock()
            if state.status is not instance.health_status
            else instance.status_changed_at,
        )

    def active_id(self, proxy_id: str) -> str | None:
        return self.redundancy[proxy_id].active_instance_id

    def _changed(self, proxy_id: str) -> None:
        if self.on_change is not None:
            self.on_change(proxy_id, ())

    # --- the engine-facing methods --------------------------------------------------------------
    async def list_proxy_ids(self) -> list[str]:
        return sorted(self.configs)

    async def load_snapshot(self, proxy_id: str) -> ProxySnapshot:
        if proxy_id not in self.configs:
            raise NotFound(f"proxy {proxy_id} not found")
        redundancy = self.redundancy[proxy_id]
        order = self._order.get(proxy_id)
        if order is None:  # preference order changes only with instances, not with probes
            order = [
                i.id
                for i in in_preference_order(
                    i for i in self.instances.values() if i.proxy_id == proxy_id
                )
            ]
            self._order[proxy_id] = order
        instances = tuple(self.instances[i] for i in order)
        open_event = next(
            (
                e
                for e in self.events
                if e.proxy_id == proxy_id
                and e.event_type in SWITCHING_EVENT_TYPES
                and e.status.is_open
            ),
            None,
        )
        return ProxySnapshot(self.configs[proxy_id], instances, redundancy, open_event)

    async def record_check_result(self, instance_id: str, result: CheckResult) -> Instance:
        instance = self.instances.get(instance_id)
        if instance is None:
            raise NotFound(f"instance {instance_id} not found")
        self.recorded_checks += 1
        if is_out_of_date(result.observed_at, instance.status_changed_at):
            return instance  # as the real service: made before the last status change
        config = self.configs[instance.proxy_id]
        state = observe(instance.health, result.success, HealthRules.of(config))
        now = self.clock()
        moved = state.status is not instance.health_status
        instance = replace(
            instance,
            health_status=state.status,
            consecutive_failures=state.consecutive_failures,
            consecutive_successes=state.consecutive_successes,
            last_health_check=now,
            last_error=None if result.success else result.error,
            last_latency_ms=result.latency_ms,
            total_requests=instance.total_requests + 1,
            status_changed_at=now if moved else instance.status_changed_at,
        )
        self.instances[instance_id] = instance
        if moved and state.status is HealthStatus.HEALTHY:
            self._close_open_recovery(instance_id)  # as the real service does, same commit
        self._changed(instance.proxy_id)
        return instance

    async def record_check_results(
        self, results: Sequence[tuple[str, CheckResult]]
    ) -> list[Instance | None]:
        """The batched form, as the real service: in order, None for an instance that is gone."""
        self.recorded_batches += 1
        answers: list[Instance | None] = []
        for instance_id, result in results:
            try:
                answers.append(await self.record_check_result(instance_id, result))
            except NotFound:
                answers.append(None)
        return answers

    def _close_open_recovery(self, instance_id: str) -> None:
        for n, event in enumerate(self.events):
            if (
                event.event_type is EventType.RECOVERY
                and event.status.is_open
                and event.target_instance_id == instance_id
            ):
                self.events[n] = replace(
                    event, status=EventStatus.COMPLETED, completed_at=self.clock()
                )

    async def apply_decision(
        self, proxy_id: str, decision: Decision, detected_at: datetime
    ) -> FailoverEvent | None:
        if decision.action is DecisionAction.NONE or decision.target_instance_id is None:
            return None
        now = self.clock()
        for n, event in enumerate(self.events):
            if (
                event.proxy_id == proxy_id
                and event.event_type in SWITCHING_EVENT_TYPES
                and event.status.is_open
            ):
                self.events[n] = replace(
                    event,
                    status=EventStatus.FAILED,
                    error_message="superseded by automatic failover",
                    completed_at=now,
                )
        redundancy = self.redundancy[proxy_id]
        epoch = redundancy.epoch + 1
        for instance_id in (redundancy.active_instance_id, decision.target_instance_id):
            if instance_id in self.instances:
                self.instances[instance_id] = replace(
                    self.instances[instance_id],
                    is_active=instance_id == decision.target_instance_id,
                )
        event = FailoverEvent(
            id=f"e{next(self._ids):05d}",
            proxy_id=proxy_id,
            user_id="system",
            event_type=decision.event_type,
            source_instance_id=decision.source_instance_id,
            target_instance_id=decision.target_instance_id,
            reason=decision.reason,
            status=EventStatus.COMPLETED,
            triggered_by="system",
            epoch=epoch,
            created_at=detected_at,
            duration_ms=int((now - detected_at).total_seconds() * 1000),
            completed_at=now,
        )
        self.events.append(event)
        self.redundancy[proxy_id] = replace(
            redundancy,
            active_instance_id=decision.target_instance_id,
            epoch=epoch,
            last_failover_at=now,
            last_failover_reason=decision.reason,
        )
        self._changed(proxy_id)
        return event

    async def close_stale_events(self) -> list[FailoverEvent]:
        cutoff = self.clock() - timedelta(seconds=STALE_EVENT_SECONDS)
        closed: list[FailoverEvent] = []
        for n, event in enumerate(self.events):
            if (
                event.event_type in SWITCHING_EVENT_TYPES
                and event.status.is_open
                and event.created_at < cutoff
            ):
                self.events[n] = replace(
                    event, status=EventStatus.FAILED, error_message="timed out", completed_at=cutoff
                )
                closed.append(self.events[n])
        return closed

    async def open_recovery_event(self, instance_id: str, reason: str) -> FailoverEvent | None:
        instance = self.instances[instance_id]
        for event in self.events:
            if (
                event.event_type is EventType.RECOVERY
                and event.status.is_open
                and event.target_instance_id == instance_id
            ):
                return None
        event = FailoverEvent(
            id=f"e{next(self._ids):05d}",
            proxy_id=instance.proxy_id,
            user_id="system",
            event_type=EventType.RECOVERY,
            source_instance_id=None,
            target_instance_id=instance_id,
            reason=reason,
            status=EventStatus.IN_PROGRESS,
            triggered_by="system",
            epoch=self.redundancy[instance.proxy_id].epoch,
            created_at=self.clock(),
        )
        self.events.append(event)
        return event

    async def close_recovery_event(
        self, event_id: str, status: EventStatus, error_message: str | None = None
    ) -> FailoverEvent:
        for n, event in enumerate(self.events):
            if event.id == event_id:
                if not event.status.is_open:
                    raise Conflict("event already closed", code=ErrorCode.EVENT_ALREADY_CLOSED)
                self.events[n] = replace(
                    event, status=status, error_message=error_message, completed_at=self.clock()
                )
                return self.events[n]
        raise NotFound(f"event {event_id} not found")

    async def get_failover_events(
        self,
        proxy_id: str,
        limit: int = 50,
        *,
        status: EventStatus | None = None,
        event_type: EventType | None = None,
        before: datetime | None = None,
    ) -> list[FailoverEvent]:
        found = [
            e
            for e in reversed(self.events)
            if e.proxy_id == proxy_id
            and (status is None or e.status is status)
            and (event_type is None or e.event_type is event_type)
            and (before is None or e.created_at < before)
        ]
        return found[:limit]
