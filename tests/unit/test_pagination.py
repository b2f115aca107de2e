"""``core.pagination``: cursors round-trip, and anything else is 400/001 naming the cursor."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from proxy_failover.core.errors import ErrorCode, InvalidInput
from proxy_failover.core.pagination import (
    AUDIT,
    DELIVERIES,
    EventPosition,
    event_cursor,
    parse_event_cursor,
    parse_sequence_cursor,
    sequence_cursor,
)

WHEN = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)


def _raw(value: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


def test_event_cursors_round_trip_to_the_microsecond() -> None:
    position = EventPosition(WHEN, "5f2b0c1e-0000-4000-8000-000000000001")
    cursor = event_cursor(position)
    assert parse_event_cursor(cursor) == position
    assert set(cursor) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def test_event_cursors_store_utc_whatever_zone_they_were_given() -> None:
    local = WHEN.astimezone(timezone(timedelta(hours=5)))
    assert parse_event_cursor(event_cursor(EventPosition(local, "x"))).created_at == WHEN


@pytest.mark.parametrize("sequence", [0, 1, 2**31 - 1])
@pytest.mark.parametrize("kind", [AUDIT, DELIVERIES])
def test_sequence_cursors_round_trip(kind: str, sequence: int) -> None:
    assert parse_sequence_cursor(kind, sequence_cursor(kind, sequence)) == sequence


@pytest.mark.parametrize(
    "text",
    [
        "",
        None,
        123,
        "x" * 201,
        "!!!!",  # not base64
        "_w",  # base64 of a byte that is no UTF-8
        _raw("not a list"),
        _raw([]),
        _raw(["a", 5]),  # another list's cursor
        _raw(["e", "2026-01-01T00:00:00+00:00"]),
        _raw(["e", "2026-01-01T00:00:00+00:00", 7]),
        _raw(["e", "2026-01-01T00:00:00", "id"]),  # naive
        _raw(["e", "yesterday", "id"]),
        _raw(["e", "0001-01-01T00:00:00+14:00", "id"]),  # overflows converting to UTC
        _raw(["e", "2026-01-01T00:00:00+00:00", ""]),
        _raw(["e", "2026-01-01T00:00:00+00:00", "x" * 65]),
        _raw(["e", "2026-01-01T00:00:00+00:00", "a\x00b"]),
    ],
)
def test_bad_event_cursors_are_400_001(text: object) -> None:
    with pytest.raises(InvalidInput) as raised:
        parse_event_cursor(text)
    assert raised.value.code is ErrorCode.INVALID_INPUT
    assert raised.value.details["field"] == "cursor"


@pytest.mark.parametrize(
    "text",
    [
        _raw(["d", 5]),  # a deliveries cursor given to the audit log
        _raw(["a"]),
        _raw(["a", 1, 2]),
        _raw(["a", "5"]),
        _raw(["a", 5.0]),
        _raw(["a", True]),
        _raw(["a", -1]),
        _raw(["a", 2**31]),
    ],
)
def test_bad_sequence_cursors_are_400_001(text: str) -> None:
    with pytest.raises(InvalidInput, match="cursor"):
        parse_sequence_cursor(AUDIT, text)
