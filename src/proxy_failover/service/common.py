"""Helpers shared by the use cases: fixed messages, input parsing and the event payload of
notifications. (Notification types, not-found errors and limits are core's.)"""

from __future__ import annotations

from typing import Any

from proxy_failover.core import fields, limits
from proxy_failover.core.errors import InvalidInput
from proxy_failover.core.model import STALE_EVENT_SECONDS, EventStatus, FailoverEvent

DEFAULT_REASON = "Manual failover"
SUPERSEDED_MESSAGE = "superseded by automatic failover"
STALE_MESSAGE = (
    f"timed out: still in progress after {STALE_EVENT_SECONDS:g} s "
    "(the process handling it probably stopped)"
)


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
    """A list limit: an integer within ``core.limits.LIST_LIMIT`` (001 otherwise)."""
    return fields.integer(limit, "limit", limits.LIST_LIMIT)


def parse_close_status(status: object) -> EventStatus:
    """The final status an event may be closed with: completed or failed (001 otherwise)."""
    try:
        parsed = EventStatus(status) if isinstance(status, str) else EventStatus.PENDING
    except ValueError:
        parsed = EventStatus.PENDING
    if parsed not in (EventStatus.COMPLETED, EventStatus.FAILED):
        raise InvalidInput("status must be 'completed' or 'failed'", details={"field": "status"})
    return parsed
