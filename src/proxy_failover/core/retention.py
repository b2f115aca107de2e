"""What history may be deleted, and from when on (SPEC §10's retention).

Pure rules, ``now`` passed in. The store's prune statements are built from these constants and
``cutoff``; a test on both databases checks that what they delete is exactly what ``prunable``
says. Open work is never pruned whatever its age: an event that is ``pending``/``in_progress``
(the stale-event sweep closes it first) and a webhook delivery that is still ``pending``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from proxy_failover.core.model import EventStatus
from proxy_failover.core.webhooks import DeliveryStatus

DEFAULT_RETENTION_DAYS = 90
DEFAULT_DELIVERY_RETENTION_DAYS = 14
#: Rows deleted by one statement (one short transaction): a backlog never holds the write lock long.
PRUNE_BATCH = 1000

#: Events in these states are history; the others are open work and stay.
FINISHED_EVENT_STATUSES: frozenset[str] = frozenset(
    status.value for status in EventStatus if not status.is_open
)
#: Deliveries in these states are finished (a 2xx, retries spent, or their subscription removed).
FINISHED_DELIVERY_STATUSES: frozenset[str] = frozenset(
    status.value for status in DeliveryStatus if status is not DeliveryStatus.PENDING
)


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """Days history is kept (``PFO_RETENTION_DAYS``, ``PFO_DELIVERY_RETENTION_DAYS``)."""

    days: float = DEFAULT_RETENTION_DAYS
    delivery_days: float = DEFAULT_DELIVERY_RETENTION_DAYS
    batch: int = PRUNE_BATCH

    def __post_init__(self) -> None:
        if self.days <= 0 or self.delivery_days <= 0 or self.batch < 1:
            raise ValueError("retention days must be positive and the batch at least 1")


@dataclass(frozen=True, slots=True)
class Cutoffs:
    """Rows stamped strictly before these instants may go (if finished)."""

    history: datetime
    deliveries: datetime


def cutoff(now: datetime, days: float) -> datetime:
    """The instant before which a row is older than ``days``."""
    return now - timedelta(days=days)


def cutoffs(now: datetime, policy: RetentionPolicy) -> Cutoffs:
    """Both cut-offs of ``policy`` at ``now``."""
    return Cutoffs(cutoff(now, policy.days), cutoff(now, policy.delivery_days))


def row_prunable(stamped_at: datetime, before: datetime) -> bool:
    """Audit rows, metric samples, notification-log entries: history once older than the cut-off."""
    return stamped_at < before


def event_prunable(status: str, created_at: datetime, before: datetime) -> bool:
    """A failover event goes once finished and created before the cut-off; an open one never."""
    return status in FINISHED_EVENT_STATUSES and created_at < before


def delivery_prunable(
    status: str, created_at: datetime, last_attempt_at: datetime | None, before: datetime
) -> bool:
    """A webhook delivery (with its attempts) goes once finished and both created and last
    attempted before the cut-off (a redelivered old one counts from its last attempt); a pending
    one never."""
    return (
        status in FINISHED_DELIVERY_STATUSES
        and created_at < before
        and (last_attempt_at is None or last_attempt_at < before)
    )
