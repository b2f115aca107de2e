"""Health: the one function that applies an instance's health change (whatever path it came
from: a report, a check, a probe batch), and the report path (``update_instance_health``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from proxy_failover.core import health as core_health
from proxy_failover.core import validation
from proxy_failover.core.dataplane import format_address, traffic_address
from proxy_failover.core.errors import instance_not_found
from proxy_failover.core.model import (
    AdminState,
    EventStatus,
    EventType,
    FailoverEvent,
    HealthState,
    HealthStatus,
    Instance,
    MetricSample,
    Notification,
    NotificationType,
    RedundancyStatus,
    StoredMetricSample,
)
from proxy_failover.service.context import ServiceContext
from proxy_failover.service.events import close_event_in
from proxy_failover.service.failover import fail_over_in, log_switch
from proxy_failover.service.redundancy import recompute
from proxy_failover.store import UnitOfWork, new_id
from proxy_failover.store.group_commit import GroupCommit


@dataclasses.dataclass(frozen=True, slots=True)
class HealthReport:
    """One ``update_instance_health`` call waiting for its (shared) transaction."""

    proxy_id: str
    instance_id: str
    status: HealthStatus
    sample: MetricSample | None


HealthReports = GroupCommit[str, HealthReport, Instance]


def with_health(instance: Instance, state: HealthState, now: datetime, **changes: Any) -> Instance:
    """``instance`` in health ``state``; ``statusChangedAt`` moves only when the status does."""
    changed = state.status != instance.health_status
    return dataclasses.replace(
        instance,
        health_status=state.status,
        consecutive_failures=state.consecutive_failures,
        consecutive_successes=state.consecutive_successes,
        status_changed_at=now if changed else instance.status_changed_at,
        updated_at=now,
        **changes,
    )


def counters_of(instance: Instance) -> core_health.CheckCounters:
    """The request counters of ``instance``, as ``core.health.count_check`` moves them."""
    return core_health.CheckCounters(
        instance.total_requests,
        instance.successful_requests,
        instance.failed_requests,
        instance.average_latency_ms,
        instance.error_rate,
    )


def with_sample(instance: Instance, sample: MetricSample | None) -> Instance:
    """Metric samples set activeConnections and overwrite average latency and error rate."""
    if sample is None:
        return instance
    changes: dict[str, Any] = {}
    if sample.connection_count is not None:
        changes["active_connections"] = sample.connection_count
    if sample.average_latency_ms is not None:
        changes["average_latency_ms"] = sample.average_latency_ms
    if sample.error_rate is not None:
        changes["error_rate"] = sample.error_rate
    return dataclasses.replace(instance, **changes) if changes else instance


def is_repeat(before: Instance, after: Instance) -> bool:
    """A report that leaves every decision input as it was (same status, checked before).

    Redundancy is then unchanged too (it follows from the statuses) and no event moved, so
    no listener has anything to act on; the engine's periodic evaluation still sees the
    new counters and metrics.
    """
    return (
        after.health_status is before.health_status
        and after.admin_state is before.admin_state
        and before.last_health_check is not None
    )


def health_notifications(
    before: Instance, after: Instance, epoch: int, now: datetime
) -> list[Notification]:
    """instance.healthy / instance.unhealthy when the status moved to one of them."""
    if after.health_status == before.health_status:
        return []
    kinds = {
        HealthStatus.HEALTHY: NotificationType.INSTANCE_HEALTHY,
        HealthStatus.UNHEALTHY: NotificationType.INSTANCE_UNHEALTHY,
    }
    kind = kinds.get(after.health_status)
    if kind is None:
        return []
    return [
        Notification(
            kind,
            after.proxy_id,
            epoch,
            now,
            {
                "instanceId": after.id,
                "instanceName": after.instance_name,
                "trafficAddress": format_address(traffic_address(after)),
                "previousStatus": before.health_status.value,
                "status": after.health_status.value,
                "consecutiveFailures": after.consecutive_failures,
                "consecutiveSuccesses": after.consecutive_successes,
                "lastError": after.last_error,
            },
        )
    ]


async def apply_health_change(
    unit: UnitOfWork,
    before: Instance,
    after: Instance,
    now: datetime,
    status: RedundancyStatus,
    instances: Sequence[Instance],
    *,
    record_recovery: bool,
) -> RedundancyStatus:
    """What follows from an instance's health moving from ``before`` to ``after``, for every path
    (health report, check result, probe batch): recompute redundancy, notify the health
    transition, and on recovery close the open recovery event (or, with ``record_recovery``,
    record a completed one).

    ``instances`` is the proxy's instances as loaded in this unit of work, before the change.
    Returns the redundancy row as it now is (for the next change in the same unit).
    """
    current = [after if i.id == after.id else i for i in instances]
    recomputed = await recompute(unit, status, now, instances=current)
    unit.notify(*health_notifications(before, after, recomputed.epoch, now))
    recovered = (
        before.health_status is HealthStatus.UNHEALTHY
        and after.health_status is HealthStatus.HEALTHY
    )
    if not recovered:
        return recomputed
    config = await unit.get_config(after.proxy_id)
    owner = config.user_id if config is not None else after.user_id
    open_recovery = await unit.open_recovery_event(after.id)
    if open_recovery is not None:
        await close_event_in(unit, open_recovery, EventStatus.COMPLETED, now, recomputed.epoch)
    elif record_recovery:
        await unit.insert_event(
            FailoverEvent(
                id=new_id(),
                proxy_id=after.proxy_id,
                user_id=owner,
                event_type=EventType.RECOVERY,
                source_instance_id=None,
                target_instance_id=after.id,
                reason=(
                    f"Instance {after.instance_name} recovered after "
                    f"{after.consecutive_successes} consecutive successful checks"
                ),
                status=EventStatus.COMPLETED,
                triggered_by="system",
                epoch=recomputed.epoch,
                created_at=now,
                duration_ms=0,
                completed_at=now,
            )
        )
    return recomputed


async def follow_health_change(
    unit: UnitOfWork,
    before: Instance,
    after: Instance,
    now: datetime,
    status: RedundancyStatus,
    current: dict[str, Instance],
    *,
    record_recovery: bool,
) -> RedundancyStatus:
    """``apply_health_change`` for one step of a loop applying several health changes of one
    proxy in one unit of work (reports, check results, expiries), keeping the loop's view in
    step: ``current`` (the proxy's instances as this unit sees them, updated in place) gets
    ``after``, and the ``is_active`` mirror when the redundancy recompute moved it in the
    database (a later write of another instance must not put back the old mirror).

    Returns the redundancy row as it now is (for the next step).
    """
    recomputed = await apply_health_change(
        unit, before, after, now, status, list(current.values()), record_recovery=record_recovery
    )
    current[after.id] = after
    if recomputed.active_instance_id != status.active_instance_id or status.overridden:
        active = recomputed.active_instance_id
        for instance_id, instance in list(current.items()):
            is_active = instance_id == active
            if instance.is_active != is_active:
                current[instance_id] = dataclasses.replace(instance, is_active=is_active)
    return recomputed


def active_of(status: RedundancyStatus | None, current: Mapping[str, Instance]) -> Instance | None:
    """The proxy's active instance as ``current`` has it (None: none, or not loaded)."""
    if status is None or status.active_instance_id is None:
        return None
    return current.get(status.active_instance_id)


def went_down(was: Instance | None, current: Mapping[str, Instance]) -> bool:
    """Whether the active instance ``was`` (as the unit found it) was not unhealthy and is
    unhealthy in ``current``: a change this unit applied took the active instance down."""
    if was is None or was.health_status is HealthStatus.UNHEALTHY:
        return False
    now = current.get(was.id)
    return now is not None and now.health_status is HealthStatus.UNHEALTHY


async def fail_over_if_due(
    ctx: ServiceContext,
    unit: UnitOfWork,
    status: RedundancyStatus,
    current: Mapping[str, Instance],
    now: datetime,
) -> FailoverEvent | None:
    """A health path's change made the active instance unhealthy: the failover, in the same
    transaction, when this service takes it there (``fails_over_on_health_change``; ``serve``
    does, the bare library leaves automatic failover to an engine). See
    ``failover.fail_over_in``."""
    if not ctx.fails_over_on_health_change:
        return None
    return await fail_over_in(unit, status, current.values(), now, ctx.now)


# --- the report path ----------------------------------------------------------------------------


async def update_instance_health(
    ctx: ServiceContext,
    reports: HealthReports,
    instance_id: str,
    health_status: str,
    metrics: Mapping[str, Any] | None = None,
) -> Instance:
    """An authoritative health report (SPEC §4); an optional metrics sample is stored too.

    An instance in maintenance keeps reading ``unknown``: the report's sample is stored and
    ``lastHealthCheck`` moves, but its status does not.
    """
    status = validation.parse_health_status(health_status)
    sample = validation.parse_metric_sample(metrics, require_one=False)
    proxy_id = await ctx.proxy_of_instance(instance_id)
    # Reports waiting for the same lock share one transaction (see ``store.group_commit``):
    # SQLite has a single writer, so all proxies wait together; PostgreSQL locks per proxy.
    key = "" if ctx.store.dialect_name == "sqlite" else proxy_id
    return await reports.submit(key, HealthReport(proxy_id, instance_id, status, sample))


async def commit_health_reports(
    ctx: ServiceContext, key: str, take: Callable[[], list[HealthReport]]
) -> list[Instance | Exception]:
    """One transaction for the health reports queued under ``key``, in arrival order.

    Proxies are locked in one order (sorted ids), so batches never deadlock each other; on
    PostgreSQL ``key`` is the one proxy, locked before the batch is taken, so reports that
    arrive while it waits for the row lock join it.
    """
    touched: set[str] = set()
    switches: list[FailoverEvent] = []
    try:
        async with ctx.store.write() as unit:
            first = await unit.lock_proxy_with_instances(key) if key else None
            reports = take()
            now = ctx.now()
            outcomes: list[Instance | Exception] = [
                instance_not_found(r.instance_id) for r in reports
            ]
            by_proxy: dict[str, list[int]] = {}
            for index, report in enumerate(reports):
                by_proxy.setdefault(report.proxy_id, []).append(index)
            loud: set[str] = set()
            for proxy_id in sorted(by_proxy):
                touched.add(proxy_id)
                ctx.cache.invalidate(proxy_id)
                indexes = by_proxy[proxy_id]
                loaded = (
                    first
                    if first is not None and proxy_id == key
                    else await unit.lock_proxy_with_instances(proxy_id)
                )
                applied, quiet = await _apply_health_reports(
                    ctx, unit, loaded, [reports[i] for i in indexes], now, switches
                )
                for index, outcome in zip(indexes, applied, strict=True):
                    outcomes[index] = outcome
                if not quiet:
                    loud.add(proxy_id)
    finally:
        for proxy_id in touched:
            ctx.cache.invalidate(proxy_id)
    for event in switches:
        log_switch(ctx, event)
    ctx.announce(unit, sorted(touched), quiet=touched - loud)
    return outcomes


async def _apply_health_reports(
    ctx: ServiceContext,
    unit: UnitOfWork,
    loaded: tuple[RedundancyStatus | None, list[Instance]],
    reports: Sequence[HealthReport],
    now: datetime,
    switches: list[FailoverEvent],
) -> tuple[list[Instance | Exception], bool]:
    """Apply one proxy's reports in order under its lock; (outcomes, all were repeats).

    Each report sees the state the previous one left; each instance row is written once, at
    the end, with its last state (the redundancy row and events as each report moves them).
    """
    locked, instances = loaded
    current = {instance.id: instance for instance in instances}
    active_at_start = active_of(locked, current)
    outcomes: list[Instance | Exception] = []
    changed: dict[str, None] = {}
    quiet = True
    for report in reports:
        before = current.get(report.instance_id)
        if locked is None or before is None:
            ctx.forget_instance(report.instance_id)
            outcomes.append(instance_not_found(report.instance_id))
            continue
        state = (
            before.health
            if before.admin_state is AdminState.MAINTENANCE
            else core_health.report(before.health, report.status)
        )
        # a report refutes an earlier expiry: its "report expired" is no longer the story
        cleared = {"last_error": None} if before.last_error == core_health.REPORT_EXPIRED else {}
        after = with_health(
            before, state, now, last_health_check=now, last_report_at=now, **cleared
        )
        after = with_sample(after, report.sample)
        if report.sample is not None:
            await unit.insert_metric(
                StoredMetricSample(
                    new_id(), after.id, after.proxy_id, after.user_id, report.sample, now
                )
            )
        recomputed = await follow_health_change(
            unit, before, after, now, locked, current, record_recovery=False
        )
        changed[after.id] = None
        locked = recomputed
        quiet = quiet and is_repeat(before, after)
        outcomes.append(after)
    for instance_id in changed:
        await unit.save_instance(current[instance_id])
    if locked is not None and went_down(active_at_start, current):
        switched = await fail_over_if_due(ctx, unit, locked, current, now)
        if switched is not None:
            switches.append(switched)
    return outcomes, quiet


# --- report expiry (``healthReportTtlSeconds``) -----------------------------------------------


async def expire_health_reports(ctx: ServiceContext, proxy_id: str) -> list[Instance]:
    """Mark unhealthy, with ``lastError`` "report expired", each instance of the proxy whose
    reported status expired (``core.health.is_report_expired``), in one transaction under the
    proxy's lock (so a report that arrived meanwhile wins). Handled like a reported failure:
    the same counters, notifications and redundancy; the engine's next decision fails over if
    the instance was active. Returns the expired instances as they now are."""
    expired: list[Instance] = []
    try:
        async with ctx.store.write() as unit:
            locked, instances = await unit.lock_proxy_with_instances(proxy_id)
            config = await unit.get_config(proxy_id)
            if locked is None or config is None:
                return []
            ctx.cache.invalidate(proxy_id)
            now = ctx.now()
            current = {instance.id: instance for instance in instances}
            ttl = config.health_report_ttl_seconds
            for before in instances:
                if not core_health.is_report_expired(before, ttl, now):
                    continue
                state = core_health.report(before.health, HealthStatus.UNHEALTHY)
                after = with_health(before, state, now, last_error=core_health.REPORT_EXPIRED)
                locked = await follow_health_change(
                    unit, before, after, now, locked, current, record_recovery=False
                )
                expired.append(after)
            for instance in expired:
                await unit.save_instance(current[instance.id])
    finally:
        ctx.cache.invalidate(proxy_id)
    if expired:
        ctx.announce(unit, [proxy_id])
    return [current[instance.id] for instance in expired]
