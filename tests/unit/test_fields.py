"""Typed field readers against core limits, the status->code table and the shared 404s."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from proxy_failover.core import fields, limits
from proxy_failover.core.errors import (
    HTTP_STATUS,
    ErrorCode,
    InvalidInput,
    code_for_status,
    config_not_found,
    event_not_found,
    instance_not_found,
)
from proxy_failover.core.limits import Limit


def refused(call: Any, *args: Any) -> InvalidInput:
    with pytest.raises(InvalidInput) as caught:
        call(*args)
    return caught.value


@pytest.mark.parametrize(
    ("limit", "value", "words"),
    [
        (Limit(minimum=1, maximum=3), 4, "between 1 and 3"),
        (Limit(minimum=1), 0, "at least 1"),
        (Limit(maximum=3), 4, "at most 3"),
        (Limit(minimum=0), -(10**20), "a very large number"),
    ],
)
def test_integer_range_messages_name_the_bounds(limit: Limit, value: int, words: str) -> None:
    error = refused(fields.integer, value, "n", limit)
    assert words in error.message
    assert error.details == {"field": "n"}


def test_integer_and_number_accept_values_inside_and_unbounded() -> None:
    assert fields.integer(3, "n", Limit(maximum=3)) == 3
    assert fields.integer(-5, "n", Limit()) == -5
    assert fields.number(2.5, "x", limits.NON_NEGATIVE) == 2.5
    assert "between 0 and 1" in refused(fields.number, 1.5, "x", limits.FRACTION).message
    assert "finite" in refused(fields.number, float("inf"), "x", limits.NON_NEGATIVE).message
    assert "a number" in refused(fields.number, True, "x", limits.NON_NEGATIVE).message


def test_string_checks_lengths_and_pattern_with_the_limits_hint() -> None:
    assert fields.string("/ok", "path", limits.HEALTH_CHECK_PATH) == "/ok"
    assert "at least 1" in refused(fields.string, "", "s", Limit(min_length=1)).message
    assert "at most 2" in refused(fields.string, "abc", "s", Limit(max_length=2)).message
    assert "a string" in refused(fields.string, 5, "s", Limit()).message
    hinted = refused(fields.string, "no slash", "path", limits.HEALTH_CHECK_PATH)
    assert hinted.message == "path must start with '/' and contain no spaces"
    bare = refused(fields.string, "x", "s", Limit(pattern=r"^\d+$"))
    assert bare.message == r"s must match ^\d+$"
    # the whole string must match: a trailing newline does not slip past '$'
    refused(fields.string, "12\n", "s", Limit(pattern=r"^\d+$"))


def test_strings_checks_the_list_and_each_item() -> None:
    ids = Limit(min_items=1, max_items=2, items=Limit(max_length=3))
    assert fields.strings(["a", "b"], "ids", ids) == ["a", "b"]
    assert fields.strings(["anything long"], "ids", Limit()) == ["anything long"]
    assert "a list" in refused(fields.strings, "a", "ids", ids).message
    assert "at least 1 items" in refused(fields.strings, [], "ids", ids).message
    assert "at most 2 items" in refused(fields.strings, ["a", "b", "c"], "ids", ids).message
    assert "at most 3 characters" in refused(fields.strings, ["abcd"], "ids", ids).message


def test_text_refuses_blank_and_control_characters_with_the_given_code() -> None:
    code = ErrorCode.INVALID_REDUNDANCY
    assert refused(fields.text, " ", "t", limits.TEXT, code).code is code
    assert "control" in refused(fields.text, "a\x01", "t", limits.TEXT).message
    assert "a string" in refused(fields.text, None, "t", limits.TEXT).message


def test_timestamp_reads_iso_times_as_utc() -> None:
    stamp = limits.TIMESTAMP_TEXT
    assert fields.timestamp("2026-01-02T03:04:05.678Z", "at", stamp) == datetime(
        2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC
    )
    assert fields.timestamp("2026-01-02T03:04:05", "at", stamp).tzinfo is UTC
    assert fields.timestamp("2026-01-02T05:04:05+02:00", "at", stamp).hour == 3
    assert "ISO 8601" in refused(fields.timestamp, "yesterday", "at", stamp).message
    # converting to UTC overflows at the end of the calendar: still a 400, never a 500
    assert "ISO 8601" in refused(fields.timestamp, "0001-01-01T00:00+14:00", "at", stamp).message


def test_every_status_has_one_generic_code_from_the_one_table() -> None:
    for status, code in [(400, "001"), (401, "015"), (403, "016"), (404, "020"), (405, "021")]:
        assert code_for_status(status).value.endswith(code)
        assert HTTP_STATUS[code_for_status(status)] == status
    assert code_for_status(413) is ErrorCode.BODY_TOO_LARGE
    assert code_for_status(503) is ErrorCode.STORAGE_UNAVAILABLE
    assert code_for_status(500) is ErrorCode.INTERNAL
    assert code_for_status(418) is ErrorCode.INVALID_INPUT  # an unlisted 4xx
    assert code_for_status(502) is ErrorCode.INTERNAL  # an unlisted 5xx


def test_the_shared_not_found_errors() -> None:
    config = config_not_found("p1")
    assert (config.code, config.status_code) == (ErrorCode.CONFIG_NOT_FOUND, 404)
    assert config.message == "Failover configuration for proxy p1 not found"
    assert config.details == {"proxyId": "p1"}
    instance = instance_not_found("i1")
    assert (instance.code, instance.message) == (
        ErrorCode.INSTANCE_NOT_FOUND,
        "Proxy instance i1 not found",
    )
    event = event_not_found("e1")
    assert (event.code, event.message, event.details) == (
        ErrorCode.EVENT_NOT_FOUND,
        "Failover event e1 not found",
        {"eventId": "e1"},
    )


def test_the_limits_table_names_each_limit_by_its_api_field() -> None:
    assert limits.FIELDS["instanceName"] is limits.INSTANCE_NAME
    assert limits.FIELDS["priority"] == Limit(minimum=-1_000_000, maximum=1_000_000)
    assert limits.INSTANCE_NAME.max_length == 128
    patterned = [limit for limit in limits.FIELDS.values() if limit.pattern is not None]
    assert all(
        p.pattern.startswith("^") and p.pattern.endswith("$") for p in patterned if p.pattern
    )
