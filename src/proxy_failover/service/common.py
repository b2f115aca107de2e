"""Vocabulary shared by the use cases: notification types, fixed messages, input parsing, the
not-found errors (worded as SPEC §6 requires) and the event payload of notifications."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from proxy_failover.core.errors import ErrorCode, InvalidInput, NotFound
from proxy_failover.core.model import STALE_EVENT_SECONDS, EventStatus, FailoverEvent

#: Notification types (SPEC §8) produced by the use cases.
FAILOVER_STARTED = "failover.started"
FAILOVER_COMPLETED = "failover.completed"
FAILOVER_FAILED = "failover.failed"
INSTANCE_UNHEALTHY = "instance.unhealthy"
INSTANCE_HEALTHY = "instance.healthy"
INSTANCE_RECOVERY_FAILED = "instance.recovery_failed"
REDUNDANCY_DEGRADED = "redundancy.degraded"
REDUNDANCY_RESTORED = "redundancy.restored"

DEFAULT_REASON = "Manual failover"
SUPERSEDED_MESSAGE = "superseded by automatic failover"
STALE_MESSAGE = (
    f"timed out: still in progress after {STALE_EVENT_SECONDS:g} s "
    "(the process handling it probably stopped)"
)
MAX_LIST_LIMIT = 1000


def instance_not_found(instance_id: str) -> NotFound:
    return NotFound(
        f"Proxy instance {instance_id} not found",
        ErrorCode.INSTANCE_NOT_FOUND,
        {"instanceId": instance_id},
    )


def config_not_found(proxy_id: str) -> NotFound:
    return NotFound(
        f"Failover configuration for proxy {proxy_id} not found",
        ErrorCode.CONFIG_NOT_FOUND,
        {"proxyId": proxy_id},
    )


def event_not_found(event_id: str) -> NotFound:
    return NotFound(
        f"Failover event {event_id} not found", ErrorCode.EVENT_NOT_FOUND, {"eventId": event_id}
    )


def ms_between(start: datetime, end: datetime) -> int:
    """Whole milliseconds from ``start`` to ``end``, never negative (clocks of replicas differ)."""
    return max(0, int((end - start).total_seconds() * 1000))


def event_data(event: FailoverEvent) -> dict[str, Any]:
    """The ``data`` of a notification about ``event`` (SPEC §8)."""
    return {
        "eventId": event.id,
        "eventType": event.event_type.value,
        "status": event.status.value,
        "sourceInstanceId": event.source_instance_id,
        "targetInstanceId": event.target_instance_id,
        "reason": event.reason,
        "triggeredBy": event.triggered_by,
        "errorMessage": event.error_message,
        "durationMs": event.duration_ms,
    }


def require_text(value: object, field: str, *, optional: bool = False) -> str | None:
    """``value`` if it is a non-empty string (None allowed when ``optional``), else 001."""
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(
            f"{field} is required and must be a non-empty string", details={"field": field}
        )
    return value


def parse_limit(limit: object) -> int:
    """A list limit: an integer from 1 to ``MAX_LIST_LIMIT`` (001 otherwise)."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIST_LIMIT:
        raise InvalidInput(
            f"limit must be an integer between 1 and {MAX_LIST_LIMIT}", details={"field": "limit"}
        )
    return limit


def parse_close_status(status: object) -> EventStatus:
    """The final status an event may be closed with: completed or failed (001 otherwise)."""
    try:
        parsed = EventStatus(status) if isinstance(status, str) else EventStatus.PENDING
    except ValueError:
        parsed = EventStatus.PENDING
    if parsed not in (EventStatus.COMPLETED, EventStatus.FAILED):
        raise InvalidInput("status must be 'completed' or 'failed'", details={"field": "status"})
    return parsed
