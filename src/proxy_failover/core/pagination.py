"""Opaque cursors for the lists that grow (events, audit, deliveries): keyset, not offset.

A cursor names the last row of a page by the list's own order (an event's start time and id,
an audit row's id, a delivery's sequence number); the next page holds the rows strictly after it.
Rows added while a client walks the list sort before its cursor (newest first), so a walk sees
every row that existed when it began exactly once, however long it takes. The text is base64url
of a small JSON array tagged with its list, so a cursor of one list is refused by another (400/001).
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from proxy_failover.core import limits
from proxy_failover.core.errors import InvalidInput

EVENTS = "e"
AUDIT = "a"
DELIVERIES = "d"


@dataclass(frozen=True, slots=True)
class EventPosition:
    """Where a page of events (newest first by start time, then id) ended."""

    created_at: datetime
    id: str


def _encode(parts: list[Any]) -> str:
    raw = json.dumps(parts, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode(kind: str, text: object) -> list[Any]:
    """The parts after the tag; 400/001 for anything not made by ``_encode`` for ``kind``."""
    limit = limits.CURSOR.max_length or 0
    if not isinstance(text, str) or not text or len(text) > limit:
        raise _invalid(text)
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        parts = json.loads(raw.decode())
    except (binascii.Error, ValueError) as error:  # UnicodeDecodeError is a ValueError
        raise _invalid(text) from error
    if not isinstance(parts, list) or not parts or parts[0] != kind:
        raise _invalid(text)
    return parts[1:]


def _invalid(text: object) -> InvalidInput:
    shown = text[:40] if isinstance(text, str) else repr(text)[:40]
    return InvalidInput(
        "query parameter 'cursor' is not a cursor of this list (pass nextCursor as given)",
        details={"field": "cursor", "cursor": shown},
    )


def event_cursor(position: EventPosition) -> str:
    """The cursor after ``position`` (an aware UTC time, kept to the microsecond)."""
    return _encode([EVENTS, position.created_at.astimezone(UTC).isoformat(), position.id])


def parse_event_cursor(text: object) -> EventPosition:
    """The position an events cursor names (400/001 otherwise)."""
    parts = _decode(EVENTS, text)
    if len(parts) != 2 or not all(isinstance(part, str) for part in parts):
        raise _invalid(text)
    stamp, event_id = parts
    max_id = limits.ID.max_length or 0
    if not event_id or len(event_id) > max_id or not event_id.isprintable():
        raise _invalid(text)
    try:
        created_at = datetime.fromisoformat(stamp)
        if created_at.tzinfo is None:
            raise ValueError("naive time")
        created_at = created_at.astimezone(UTC)
    except (ValueError, OverflowError) as error:
        raise _invalid(text) from error
    return EventPosition(created_at, event_id)


def sequence_cursor(kind: str, sequence: int) -> str:
    """The cursor after the row numbered ``sequence`` of list ``kind`` (AUDIT, DELIVERIES)."""
    return _encode([kind, sequence])


def parse_sequence_cursor(kind: str, text: object) -> int:
    """The sequence number a ``kind`` cursor names: one the 32-bit columns can hold (else 001)."""
    parts = _decode(kind, text)
    if len(parts) != 1 or type(parts[0]) is not int:
        raise _invalid(text)
    sequence: int = parts[0]
    if not 0 <= sequence <= limits.INT32_MAX:
        raise _invalid(text)
    return sequence
