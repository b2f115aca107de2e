"""Webhook rules (SPEC §8): event types, subscription input, payload, signature, retry schedule.

Pure functions over plain values: the store persists what these produce and the delivery adapter
sends it. ``now`` is always a parameter; nothing here reads the clock or does I/O.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from proxy_failover.core import fields, limits
from proxy_failover.core.errors import InvalidInput
from proxy_failover.core.fields import camel
from proxy_failover.core.model import ADMIN_ONLY_INSTANCE_FIELDS, Notification, NotificationType

#: Every notification type a subscription may ask for (SPEC §8).
EVENT_TYPES: frozenset[str] = frozenset(NotificationType)

#: Delays after the 1st, 2nd, ... failed attempt; after the last one, every ``HOURLY`` seconds.
RETRY_DELAYS_SECONDS: tuple[float, ...] = (1.0, 5.0, 30.0, 300.0, 3600.0)
HOURLY_SECONDS = 3600.0
#: A delivery not delivered this long after its first attempt is dead.
GIVE_UP_AFTER_SECONDS = 24 * 3600.0
#: Receivers should reject a signature whose timestamp is further than this from their clock.
DEFAULT_TOLERANCE_SECONDS = 300

SIGNATURE_PREFIX = "sha256="


class DeliveryStatus(enum.StrEnum):
    PENDING = "pending"  # waiting for its (next) attempt
    DELIVERED = "delivered"  # a 2xx answer was received
    DEAD = "dead"  # retries spent (24 h after the first attempt)
    CANCELLED = "cancelled"  # its subscription was removed before it was delivered


@dataclass(frozen=True, slots=True)
class Subscription:
    """A proxy's webhook subscription as shown to callers: never carries the secret."""

    id: str
    proxy_id: str
    user_id: str
    url: str
    events: tuple[str, ...] | None  # None = every event type
    created_at: datetime


@dataclass(frozen=True, slots=True)
class DeliveryAttempt:
    """One POST of a delivery: its answer (or error) and how long it took."""

    attempt: int
    attempted_at: datetime
    success: bool
    status_code: int | None
    error: str | None
    latency_ms: float


@dataclass(frozen=True, slots=True)
class Delivery:
    """One event queued for one subscription, with every attempt made so far."""

    id: str
    subscription_id: str
    proxy_id: str
    event_id: str
    event_type: str
    status: DeliveryStatus
    attempts: int
    created_at: datetime
    next_attempt_at: datetime | None = None
    last_attempt_at: datetime | None = None
    last_status_code: int | None = None
    last_error: str | None = None
    delivered_at: datetime | None = None
    attempt_log: tuple[DeliveryAttempt, ...] = ()
    #: Order of queueing (the store's sequence): where a page of deliveries ends.
    seq: int = 0


@dataclass(frozen=True, slots=True)
class ClaimedDelivery:
    """What a delivery worker needs to make one attempt (includes the secret: never expose)."""

    id: str
    subscription_id: str
    proxy_id: str
    event_type: str
    url: str
    secret: str
    body: str
    attempts: int  # made before this one
    first_attempt_at: datetime | None
    #: The subscription was made by an admin: its URL may be internal (``core.outbound``).
    made_by_admin: bool = False


@dataclass(frozen=True, slots=True)
class StoredNotification:
    """A notification as logged, with its position in the log (the SSE event id)."""

    seq: int
    id: str
    type: str
    body: str  # the encoded payload


@dataclass(frozen=True, slots=True)
class LoggedBatch:
    """What one committed change appended to one proxy's log, handed to this process's live
    streams from memory: the entries in ``seq`` order and ``after_seq``, the ``seq`` of the
    proxy's entry just before them (0: none). A stream that has sent exactly up to ``after_seq``
    may send them as they are; any other must read the log (another replica's entries, or a
    hand-over it missed, lie in between)."""

    proxy_id: str
    after_seq: int
    entries: tuple[StoredNotification, ...]


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """Who did what to which target, with what result, and when."""

    occurred_at: datetime
    actor: str  # a user id, or "system" for automatic actions
    action: str  # "POST /proxy/failover/execute", "failover.completed", ...
    result: str  # "success", or the error code
    proxy_id: str | None = None
    target: str | None = None
    status_code: int | None = None
    request_id: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    id: int | None = None


def validate_url(url: object) -> str:
    """An absolute http(s) URL with a host (001); other schemes are refused."""
    url = fields.string(url, "url", limits.URL)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput("url must be an absolute http or https URL", details={"url": url})
    try:
        _ = parts.port  # raises ValueError on a malformed port
    except ValueError as exc:
        raise InvalidInput("url has an invalid port", details={"url": url}) from exc
    return url


def validate_secret(secret: object) -> str:
    """16 to 512 characters: short secrets make the HMAC guessable (001)."""
    return fields.string(secret, "secret", limits.WEBHOOK_SECRET)


def validate_events(events: object) -> tuple[str, ...] | None:
    """``None`` (omitted) means every type; otherwise a non-empty subset of ``EVENT_TYPES`` (001).

    Duplicates are dropped; the result is sorted so equal subscriptions look equal.
    """
    if events is None:
        return None
    if not isinstance(events, list | tuple) or not events:
        raise InvalidInput("events must be a non-empty list of event types, or omitted for all")
    unknown = [e for e in events if not isinstance(e, str) or e not in EVENT_TYPES]
    if unknown:
        raise InvalidInput(
            "unknown event type",
            details={"unknown": [str(e) for e in unknown], "allowed": sorted(EVENT_TYPES)},
        )
    return tuple(sorted(set(events)))


def wants(events: Iterable[str] | None, event_type: str) -> bool:
    """Whether a subscription with these ``events`` (None = all) receives ``event_type``."""
    return events is None or event_type in events


def format_timestamp(moment: datetime) -> str:
    """ISO 8601 UTC with a ``Z`` and millisecond precision, as the API writes times."""
    if moment.tzinfo is None:
        raise ValueError("naive datetime: times are timezone-aware UTC")
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def build_payload(event_id: str, notification: Notification) -> dict[str, Any]:
    """The delivered JSON object ``{id, type, proxyId, occurredAt, epoch, data}``.

    ``id`` identifies the event (the same for every subscription and every retry); the per-
    subscription delivery id travels in the ``X-PFO-Delivery`` header.
    """
    return {
        "id": event_id,
        "type": notification.type,
        "proxyId": notification.proxy_id,
        "occurredAt": format_timestamp(notification.occurred_at),
        "epoch": notification.epoch,
        "data": dict(notification.data),
    }


def encode_payload(payload: Mapping[str, Any]) -> str:
    """Compact, key-sorted JSON: stored once so every retry posts (and signs) the same bytes."""
    return json.dumps(payload, separators=(",", ":"), sort_keys=True, default=str)


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """``sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">`` (SPEC §8)."""
    message = str(timestamp).encode("ascii") + b"." + body
    digest = hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()
    return SIGNATURE_PREFIX + digest


def verify(
    secret: str,
    timestamp: str,
    body: bytes,
    signature: str,
    now: datetime,
    tolerance_seconds: int = DEFAULT_TOLERANCE_SECONDS,
) -> bool:
    """What a receiver checks: the signature matches and the timestamp is fresh (no replay)."""
    try:
        ts = int(timestamp)
    except ValueError:
        return False
    if abs(now.timestamp() - ts) > tolerance_seconds:
        return False
    return hmac.compare_digest(sign(secret, ts, body), signature)


def retry_delay(failed_attempts: int) -> float:
    """Seconds to wait after the n-th failed attempt (1-based): 1, 5, 30, 300, then 3600."""
    if failed_attempts < 1:
        raise ValueError("failed_attempts starts at 1")
    if failed_attempts <= len(RETRY_DELAYS_SECONDS):
        return RETRY_DELAYS_SECONDS[failed_attempts - 1]
    return HOURLY_SECONDS


def next_attempt_at(
    first_attempt_at: datetime,
    failed_attempts: int,
    now: datetime,
    time_scale: float = 1.0,
) -> datetime | None:
    """When to try again after a failed attempt at ``now``; ``None`` when the delivery is dead.

    A retry is scheduled only while it falls within 24 h of the first attempt. ``time_scale``
    shrinks every delay and the 24 h horizon alike (tests use 0.001 so the schedule takes seconds).
    """
    due = now + timedelta(seconds=retry_delay(failed_attempts) * time_scale)
    deadline = first_attempt_at + timedelta(seconds=GIVE_UP_AFTER_SECONDS * time_scale)
    return due if due <= deadline else None


def status_after_attempt(success: bool, retry_at: datetime | None) -> DeliveryStatus:
    """A delivery's status after an attempt: delivered on success; after a failure, pending
    while a retry is scheduled (``next_attempt_at``), else dead."""
    if success:
        return DeliveryStatus.DELIVERED
    return DeliveryStatus.DEAD if retry_at is None else DeliveryStatus.PENDING


#: Health-check detail SPEC §7 shows to admins only, as named in a payload's ``data``.
HEALTH_DETAIL_FIELDS = tuple(sorted(camel(name) for name in ADMIN_ONLY_INSTANCE_FIELDS))


def without_health_detail(body: str) -> str:
    """The stored payload with the admin-only health-check detail removed from its ``data``.

    Subscriptions created by non-admins get this form, and so does the live stream to non-admins,
    so neither tells them more than the API would.
    """
    if not any(f'"{key}"' in body for key in HEALTH_DETAIL_FIELDS):
        return body  # cheap: a payload without the names cannot hold the fields
    payload = json.loads(body)
    data = payload.get("data")
    if not isinstance(data, dict) or not any(key in data for key in HEALTH_DETAIL_FIELDS):
        return body
    payload["data"] = {k: v for k, v in data.items() if k not in HEALTH_DETAIL_FIELDS}
    return encode_payload(payload)
