"""Recovery actions (SPEC §5): the engine's side of ``core.recovery``'s plan.

``core.recovery.plan_recovery`` says what is due for each instance; this module keeps each
instance's progress, opens and closes the recovery events through the service and POSTs the
attempts in the background. After an engine restart the events left in progress are adopted.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from proxy_failover.core.errors import FailoverError
from proxy_failover.core.model import (
    EventStatus,
    EventType,
    FailoverConfig,
    Instance,
    ProxySnapshot,
)
from proxy_failover.core.recovery import RecoveryPlan, RecoveryProgress, RecoveryStep, plan_recovery
from proxy_failover.engine.ports import Clock, EngineService, Outcome, ProbeAdapter
from proxy_failover.service.context import log_fields

log = logging.getLogger("proxy_failover.engine")

#: At most this many in-progress recovery events of a proxy are adopted after a restart.
ADOPT_LIMIT = 1000


@dataclass(slots=True)
class _Recovery:
    """An instance's recovery: its open event (None once spent) and the POSTs made so far."""

    event_id: str | None
    attempts: int = 0
    next_attempt_at: datetime | None = None
    posting: bool = False

    @property
    def progress(self) -> RecoveryProgress:
        return RecoveryProgress(
            self.attempts, self.next_attempt_at, self.posting, spent=self.event_id is None
        )


class Recoveries:
    """Every proxy's recovery actions; ``handle`` runs after each of its evaluations."""

    def __init__(
        self,
        service: EngineService,
        prober: ProbeAdapter,
        clock: Clock,
        *,
        wake_proxy: Callable[[str, float], None],
        track: Callable[[asyncio.Task[None]], None],
    ) -> None:
        self._service = service
        self._prober = prober
        self._clock = clock
        self._wake_proxy = wake_proxy
        self._track = track
        self._by_proxy: dict[str, dict[str, _Recovery]] = {}

    def drop_proxy(self, proxy_id: str) -> None:
        self._by_proxy.pop(proxy_id, None)

    async def handle(self, snapshot: ProxySnapshot, now: datetime) -> list[Outcome]:
        """Plan and carry out each instance's next recovery step on this snapshot."""
        config = snapshot.config
        proxy_id = config.proxy_id
        known = self._by_proxy.get(proxy_id)
        if known is None:
            known = self._by_proxy[proxy_id] = await self._adopt(proxy_id)
        outcomes: list[Outcome] = []
        by_id = {i.id: i for i in snapshot.instances}
        for instance_id in [i for i in known if i not in by_id]:  # removed instances first
            plan = plan_recovery(None, config, known[instance_id].progress, now)
            outcomes.extend(await self._carry_out(known, instance_id, None, config, plan, now))
        for instance in snapshot.instances:
            recovery = known.get(instance.id)
            progress = recovery.progress if recovery is not None else None
            plan = plan_recovery(instance, config, progress, now)
            if plan.step is not RecoveryStep.NONE and plan.step is not RecoveryStep.WAIT:
                outcomes.extend(
                    await self._carry_out(known, instance.id, instance, config, plan, now)
                )
        return outcomes

    async def _adopt(self, proxy_id: str) -> dict[str, _Recovery]:
        """After a restart, carry on the recovery events a previous engine left in progress
        (their attempt count restarts at 1: a gap, documented)."""
        events = await self._service.get_failover_events(
            proxy_id, ADOPT_LIMIT, status=EventStatus.IN_PROGRESS, event_type=EventType.RECOVERY
        )
        adopted: dict[str, _Recovery] = {}
        for event in events:
            instance_id = event.target_instance_id or event.source_instance_id
            if instance_id and instance_id not in adopted:
                adopted[instance_id] = _Recovery(event.id)
        return adopted

    async def _carry_out(
        self,
        known: dict[str, _Recovery],
        instance_id: str,
        instance: Instance | None,
        config: FailoverConfig,
        plan: RecoveryPlan,
        now: datetime,
    ) -> list[Outcome]:
        proxy_id = config.proxy_id
        step = plan.step
        if step is RecoveryStep.FORGET:
            known.pop(instance_id, None)
            return []
        if step is RecoveryStep.START:
            assert instance is not None
            event = await self._service.open_recovery_event(instance_id, plan.reason)
            if event is None:  # one is open already (another engine's): adopted next term
                return []
            known[instance_id] = _Recovery(event.id)
            log.warning(
                "engine: %s: %s",
                proxy_id,
                plan.reason,
                extra=log_fields(proxy_id, instance_id, event.epoch, event.id),
            )
            started = Outcome(proxy_id, event=event, note="recovery started")
            return [started, self._post(known[instance_id], instance, config, plan)]
        if step is RecoveryStep.ATTEMPT:
            assert instance is not None
            return [self._post(known[instance_id], instance, config, plan)]
        completed = step is RecoveryStep.COMPLETE
        outcome = await self._close(known.pop(instance_id), completed, plan, proxy_id, instance_id)
        if step is RecoveryStep.GIVE_UP:
            known[instance_id] = _Recovery(None)  # spent: none again until health moves
        return [outcome]

    def _post(
        self, recovery: _Recovery, instance: Instance, config: FailoverConfig, plan: RecoveryPlan
    ) -> Outcome:
        """Start one recovery POST in the background; the plan says when the next one is due."""
        assert plan.attempt is not None
        attempt = recovery.attempts = plan.attempt
        recovery.next_attempt_at = plan.next_attempt_at
        recovery.posting = True
        payload = {"instanceId": instance.id, "proxyId": instance.proxy_id, "attempt": attempt}
        url = instance.recovery_url or ""

        async def post() -> None:
            try:
                result = await self._prober.request_recovery(
                    url,
                    payload,
                    config.health_check_timeout_seconds,
                    trusted=instance.outbound_trusted,
                )
                if not result.success:
                    log.warning(
                        "engine: recovery POST %d for %s failed: %s",
                        attempt,
                        instance.id,
                        result.error,
                    )
            finally:
                recovery.posting = False
                self._wake_proxy(instance.proxy_id, self._clock().timestamp())

        self._track(asyncio.create_task(post()))
        return Outcome(instance.proxy_id, note=f"recovery attempt {attempt} for {instance.id}")

    async def _close(
        self,
        recovery: _Recovery,
        completed: bool,
        plan: RecoveryPlan,
        proxy_id: str,
        instance_id: str,
    ) -> Outcome:
        assert recovery.event_id is not None
        status = EventStatus.COMPLETED if completed else EventStatus.FAILED
        message = None if completed else plan.reason
        try:
            event = await self._service.close_recovery_event(recovery.event_id, status, message)
        except FailoverError as exc:
            if completed:  # the service closes it itself in the commit that made it healthy
                return Outcome(proxy_id, note="recovery completed")
            return Outcome(proxy_id, note=f"recovery event {recovery.event_id}: {exc}")
        log.warning(
            "engine: %s: recovery of %s %s",
            proxy_id,
            instance_id,
            status,
            extra=log_fields(proxy_id, instance_id, event_id=recovery.event_id),
        )
        return Outcome(proxy_id, event=event, note=f"recovery {status}")
