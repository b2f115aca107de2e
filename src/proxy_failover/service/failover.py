"""Failover: evaluate it, execute a manual switch, and apply the engine's decisions."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime

from proxy_failover.core import failover as core_failover
from proxy_failover.core import fields, limits, strategies
from proxy_failover.core import redundancy as core_redundancy
from proxy_failover.core.errors import InvalidInput, config_not_found
from proxy_failover.core.model import (
    Decision,
    DecisionAction,
    Evaluation,
    EventStatus,
    FailoverEvent,
    Instance,
    Notification,
    NotificationType,
    ProxySnapshot,
    RedundancyStatus,
    ms_between,
)
from proxy_failover.service.common import (
    DEFAULT_REASON,
    SUPERSEDED_MESSAGE,
    event_data,
    require_text,
)
from proxy_failover.service.context import ServiceContext, log_fields, read_snapshot
from proxy_failover.service.engine_ops import load_snapshot
from proxy_failover.service.events import close_event_in
from proxy_failover.service.redundancy import recompute
from proxy_failover.store import UnitOfWork, new_id


async def evaluate_failover(ctx: ServiceContext, proxy_id: str) -> Evaluation:
    """Side-effect free: is a failover due, from where to where, and why (002 if no proxy)."""
    snapshot = await load_snapshot(ctx, proxy_id)
    return core_failover.evaluate(snapshot, ctx.now())


async def _home_of(unit: UnitOfWork, snapshot: ProxySnapshot, instance_id: str) -> str | None:
    """The proxy an instance missing from ``snapshot`` belongs to (None: it does not exist).

    Lets execute answer 011 "other proxy" rather than 004 (SPEC §7); execute is admin only, so
    naming another proxy's instance leaks nothing.
    """
    if any(i.id == instance_id for i in snapshot.instances):
        return None
    other = await unit.get_instance(instance_id)
    return None if other is None else other.proxy_id


async def execute_failover(
    ctx: ServiceContext,
    proxy_id: str,
    user_id: str,
    source_id: str | None,
    target_id: str,
    reason: str | None = None,
) -> FailoverEvent:
    """Switch the active instance: a compare-and-swap on the pointer, in one transaction.

    Checks 002, 004, 011, 010, 009 against the locked state; records the event
    ``in_progress``, moves the pointer, bumps the epoch and recomputes redundancy.
    """
    if not isinstance(proxy_id, str) or not proxy_id:
        raise InvalidInput("proxyId is required", details={"field": "proxyId"})
    user = require_text(user_id, "userId")
    target = require_text(target_id, "targetInstanceId")
    source = require_text(source_id, "sourceInstanceId", optional=True)
    if reason is not None:
        fields.string(reason, "reason", limits.TEXT)
    assert user is not None
    assert target is not None
    why = reason if reason and reason.strip() else DEFAULT_REASON
    async with ctx.write(proxy_id) as (unit, locked):
        if locked is None:
            raise config_not_found(proxy_id)
        snapshot = await read_snapshot(unit, proxy_id, locked)
        event_type = core_failover.check_execute(
            snapshot, source, target, target_proxy_id=await _home_of(unit, snapshot, target)
        )
        # Stamped once the switch is accepted against the locked state, not before the wait for
        # the lock: ``createdAt`` is when the switch began (see docs/api.md, "Timestamps").
        now = ctx.now()
        event = FailoverEvent(
            id=new_id(),
            proxy_id=proxy_id,
            user_id=user,
            event_type=event_type,
            source_instance_id=source,
            target_instance_id=target,
            reason=why,
            status=EventStatus.IN_PROGRESS,
            triggered_by=user,
            epoch=core_redundancy.next_epoch(locked.epoch),
            created_at=now,
        )
        await record_switch(unit, locked, event, now, snapshot.instances)
    ctx.logger.info(
        "proxy %s: %s %s -> %s started by %s (epoch %d)",
        proxy_id,
        event_type.value,
        source,
        target,
        user,
        event.epoch,
        extra=log_fields(proxy_id, target, event.epoch, event.id),
    )
    return event


async def apply_decision(
    ctx: ServiceContext, proxy_id: str, decision: Decision, detected_at: datetime
) -> FailoverEvent | None:
    """Apply the engine's decision in one transaction, or None if it no longer holds.

    Compare-and-swap against the locked state: the active pointer must still be the
    decision's source, the target still eligible, an unhealthy/unavailable source still so,
    and automatic failover (failback) still enabled (``core.failover.decision_holds``).
    """
    if decision.action is DecisionAction.NONE or decision.target_instance_id is None:
        return None  # nothing to apply (decision_holds would refuse it): spare the transaction
    async with ctx.write(proxy_id) as (unit, locked):
        if locked is None:
            return None
        snapshot = await read_snapshot(unit, proxy_id, locked)
        now = ctx.now()  # under the lock, once the state is read (docs/api.md, "Timestamps")
        event = await _switch(unit, snapshot, decision, detected_at, now)
    if event is not None:
        log_switch(ctx, event)
    return event


async def fail_over_in(
    unit: UnitOfWork,
    locked: RedundancyStatus,
    instances: Iterable[Instance],
    now: datetime,
    clock: Callable[[], datetime] | None = None,
) -> FailoverEvent | None:
    """The engine's failover, decided and applied in ``unit``: for the health paths (reports,
    check results, probe batches) whose change just made the active instance unhealthy.

    ``locked`` is the proxy's redundancy row as this unit holds it (under its lock) and
    ``instances`` its instances as this unit wrote them. ``core.failover.decide`` decides, as
    for the engine; only a failover away from the active instance is applied here (activation
    and failback stay with the engine, which times them). So a reported failure of the active
    instance is one transaction: no window where it is unhealthy and still active, and no wait
    for the engine's thread, which may be busy or on another replica.

    ``now`` is when the change was detected (the health path's stamp: the event's ``createdAt``);
    with ``clock``, ``completedAt`` is read from it once the failover is decided, so it is when
    the switch was recorded, not when the health path's transaction began (``durationMs`` is the
    difference; docs/api.md, "Timestamps").
    """
    config = await unit.get_config(locked.proxy_id)
    if config is None:
        return None
    snapshot = ProxySnapshot(
        config,
        tuple(strategies.in_preference_order(list(instances))),
        locked,
        await unit.open_switch_event(locked.proxy_id),
    )
    decision = core_failover.decide(snapshot, now)
    if decision.action is not DecisionAction.FAILOVER:
        return None
    recorded = now if clock is None else max(now, clock())
    return await _switch(unit, snapshot, decision, now, recorded)


async def _switch(
    unit: UnitOfWork,
    snapshot: ProxySnapshot,
    decision: Decision,
    detected_at: datetime,
    now: datetime,
) -> FailoverEvent | None:
    """An automatic switch on the locked ``snapshot``, or None if ``decision`` no longer holds.

    The event is recorded already ``completed`` (``triggeredBy: system``, ``durationMs`` from
    detection to commit); an open manual switch is closed ``failed`` ("superseded by automatic
    failover").
    """
    if not core_failover.decision_holds(snapshot, decision):
        return None
    assert decision.target_instance_id is not None  # decision_holds refuses a decision without
    locked = snapshot.redundancy
    proxy_id = locked.proxy_id
    open_event = snapshot.open_switch_event
    if open_event is not None:
        await close_event_in(
            unit, open_event, EventStatus.FAILED, now, locked.epoch, SUPERSEDED_MESSAGE
        )
    started = min(detected_at.astimezone(UTC), now)
    event = FailoverEvent(
        id=new_id(),
        proxy_id=proxy_id,
        user_id=snapshot.config.user_id,
        event_type=decision.event_type,
        source_instance_id=locked.active_instance_id,
        target_instance_id=decision.target_instance_id,
        reason=decision.reason,
        status=EventStatus.COMPLETED,
        triggered_by="system",
        epoch=core_redundancy.next_epoch(locked.epoch),
        created_at=started,
        duration_ms=ms_between(started, now),
        completed_at=now,
    )
    await record_switch(unit, locked, event, now, snapshot.instances)
    return event


async def record_switch(
    unit: UnitOfWork,
    locked: RedundancyStatus,
    event: FailoverEvent,
    now: datetime,
    instances: Sequence[Instance] | None = None,
) -> None:
    """Record the switching ``event`` in ``unit`` and move the proxy's active role to its target
    (None: to nobody) at its epoch, with its reason as the last failover reason; announced as
    ``failover.started`` while it is open (execute) or ``failover.completed`` when it is recorded
    already completed (an automatic switch, the hand-over of a deleted instance).

    ``locked`` is the proxy's redundancy row as ``unit`` holds it under its lock; ``instances``
    the proxy's instances as ``unit`` has them, when the caller read them (else read here)."""
    await unit.insert_event(event)
    await recompute(
        unit,
        locked,
        now,
        move_to=event.target_instance_id,
        epoch=event.epoch,
        failover_reason=event.reason,
        instances=instances,
    )
    kind = (
        NotificationType.FAILOVER_STARTED
        if event.status.is_open
        else NotificationType.FAILOVER_COMPLETED
    )
    unit.notify(Notification(kind, event.proxy_id, event.epoch, now, event_data(event)))


def log_switch(ctx: ServiceContext, event: FailoverEvent) -> None:
    """The log line of a committed automatic switch."""
    ctx.logger.info(
        "proxy %s: %s (epoch %d)",
        event.proxy_id,
        event.reason,
        event.epoch,
        extra=log_fields(event.proxy_id, event.target_instance_id, event.epoch, event.id),
    )
