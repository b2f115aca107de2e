"""Failover and recovery events: close them (by a caller, on timeout, or the engine's recovery),
open a recovery, and read them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from proxy_failover.core import fields, limits, pagination
from proxy_failover.core.errors import Conflict, ErrorCode, InvalidInput, event_not_found
from proxy_failover.core.model import (
    STALE_EVENT_SECONDS,
    EventStatus,
    EventType,
    FailoverEvent,
    Notification,
)
from proxy_failover.service.common import (
    STALE_MESSAGE,
    event_data,
    parse_close_status,
    parse_limit,
)
from proxy_failover.service.context import ServiceContext, log_fields
from proxy_failover.store import UnitOfWork, new_id


async def close_event_in(
    unit: UnitOfWork,
    event: FailoverEvent,
    status: EventStatus,
    now: datetime,
    epoch: int,
    error_message: str | None = None,
    duration_ms: int | None = None,
) -> FailoverEvent:
    """Close ``event`` in ``unit`` (``FailoverEvent.closed``) and announce it as SPEC §8 says
    (``FailoverEvent.closing_notification``) at the proxy's ``epoch``: every path that ends an
    open event (a caller, the engine's recovery, the timeout, a superseding failover, a
    recovery by health) goes through here."""
    closed = event.closed(status, now, error_message, duration_ms)
    await unit.save_event(closed)
    kind = closed.closing_notification
    if kind is not None:
        unit.notify(Notification(kind, closed.proxy_id, epoch, now, event_data(closed)))
    return closed


async def complete_failover_event(
    ctx: ServiceContext,
    event_id: str,
    status: str,
    error_message: str | None = None,
    duration_ms: int | None = None,
) -> FailoverEvent:
    """Close an open event once as completed or failed (001, 012, 013); pointer unchanged."""
    final = parse_close_status(status)
    if error_message is not None:
        fields.string(error_message, "errorMessage", limits.TEXT)
    if duration_ms is not None:
        fields.integer(duration_ms, "durationMs", limits.DURATION_MS)
    return await _close_event(ctx, event_id, final, error_message, duration_ms, None)


async def close_recovery_event(
    ctx: ServiceContext, event_id: str, status: EventStatus, error_message: str | None = None
) -> FailoverEvent:
    """Close a recovery event (012 missing or not a recovery, 013 already closed)."""
    final = parse_close_status(status)
    return await _close_event(ctx, event_id, final, error_message, None, EventType.RECOVERY)


async def _close_event(
    ctx: ServiceContext,
    event_id: str,
    final: EventStatus,
    error_message: str | None,
    duration_ms: int | None,
    only_type: EventType | None,
) -> FailoverEvent:
    async with ctx.store.read() as reader:
        found = await reader.get_event(event_id)
    if found is None or (only_type is not None and found.event_type is not only_type):
        raise event_not_found(event_id)
    async with ctx.write(found.proxy_id) as (unit, locked):
        event = await unit.get_event(event_id)
        if event is None:
            raise event_not_found(event_id)
        if not event.status.is_open:
            raise Conflict(
                f"Failover event {event_id} is already {event.status.value}",
                ErrorCode.EVENT_ALREADY_CLOSED,
                {"eventId": event_id, "status": event.status.value},
            )
        now = ctx.now()  # once the close is accepted under the lock (docs/api.md, "Timestamps")
        epoch = locked.epoch if locked is not None else event.epoch
        closed = await close_event_in(unit, event, final, now, epoch, error_message, duration_ms)
    return closed


async def get_failover_events(
    ctx: ServiceContext,
    proxy_id: str,
    limit: int = 50,
    *,
    status: EventStatus | None = None,
    event_type: EventType | None = None,
    before: datetime | None = None,
    cursor: str | None = None,
) -> list[FailoverEvent]:
    """Newest first by start time; ``limit`` 1-1000 (001); empty for an unknown proxy.
    ``cursor`` (``core.pagination``): only events after the page that ended there (001 if bad).

    A proxy's history starts at its configuration's creation: events recorded under the same id
    by a deleted predecessor (possibly another owner's) are not listed while the id lives again;
    they stay in the database and the audit log.
    """
    limit = parse_limit(limit)
    after = None if cursor is None else pagination.parse_event_cursor(cursor)
    try:
        status = EventStatus(status) if status is not None else None
        event_type = EventType(event_type) if event_type is not None else None
    except ValueError as error:
        raise InvalidInput(f"invalid filter: {error}", details={"field": "filter"}) from error
    if before is not None:
        if not isinstance(before, datetime):
            raise InvalidInput("before must be a timestamp", details={"field": "before"})
        before = before.replace(tzinfo=UTC) if before.tzinfo is None else before
    if not isinstance(proxy_id, str):
        return []
    async with ctx.store.read() as reader:
        config = await reader.get_config(proxy_id)
        return await reader.list_events(
            proxy_id,
            limit,
            status=status,
            event_type=event_type,
            before=before,
            since=None if config is None else config.created_at,
            after=after,
        )


async def get_event(ctx: ServiceContext, event_id: str) -> FailoverEvent:
    async with ctx.store.read() as reader:
        event = await reader.get_event(event_id)
    if event is None:
        raise event_not_found(event_id)
    return event


async def close_stale_events(ctx: ServiceContext) -> list[FailoverEvent]:
    """Close switching events open longer than ``STALE_EVENT_SECONDS`` as failed (timeout)."""
    now = ctx.now()
    cutoff = now - timedelta(seconds=STALE_EVENT_SECONDS)
    async with ctx.store.read() as reader:
        stale = await reader.stale_switch_events(cutoff)
    closed: list[FailoverEvent] = []
    for candidate in stale:
        async with ctx.write(candidate.proxy_id) as (unit, locked):
            event = await unit.get_event(candidate.id)
            if event is None or not event.status.is_open:
                continue
            epoch = locked.epoch if locked is not None else event.epoch
            done = await close_event_in(unit, event, EventStatus.FAILED, now, epoch, STALE_MESSAGE)
        closed.append(done)
        ctx.logger.warning(
            "proxy %s: event %s timed out",
            done.proxy_id,
            done.id,
            extra=log_fields(done.proxy_id, epoch=done.epoch, event_id=done.id),
        )
    return closed


async def open_recovery_event(
    ctx: ServiceContext, instance_id: str, reason: str
) -> FailoverEvent | None:
    """Open an ``in_progress`` recovery event for an instance; None if one is already open.

    Recovery events do not count for the one-switch-in-progress rule. The service closes it
    ``completed`` itself when the instance turns healthy; the engine closes it ``failed``.
    """
    proxy_id = await ctx.proxy_of_instance(instance_id)
    now = ctx.now()
    async with ctx.write(proxy_id) as (unit, locked):
        instance = await ctx.locked_instance(unit, instance_id)
        assert locked is not None
        if await unit.open_recovery_event(instance.id) is not None:
            return None
        config = await unit.get_config(proxy_id)
        event = FailoverEvent(
            id=new_id(),
            proxy_id=proxy_id,
            user_id=config.user_id if config is not None else instance.user_id,
            event_type=EventType.RECOVERY,
            source_instance_id=None,
            target_instance_id=instance.id,
            reason=reason or f"Recovering instance {instance.instance_name}",
            status=EventStatus.IN_PROGRESS,
            triggered_by="system",
            epoch=locked.epoch,
            created_at=now,
        )
        await unit.insert_event(event)
    return event
