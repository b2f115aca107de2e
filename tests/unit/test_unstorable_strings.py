"""Strings that could be stored but never served back (NUL, lone surrogates) are refused by core."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from proxy_failover.core.errors import InvalidInput
from proxy_failover.core.fields import unstorable_reason
from proxy_failover.core.validation import build_instance, parse_check_result

NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("plain text, emoji \U0001f600", None),
        (42, None),
        ({"k": ["a", ("b", {"c": None})]}, None),
        ("nul\x00", "must not contain a NUL character (U+0000)"),
        ("\ud800", "must not contain a lone UTF-16 surrogate (not valid Unicode)"),
        ({"\udfff": 1}, "must not contain a lone UTF-16 surrogate (not valid Unicode)"),
        ({"k": [1, ("x", "\x00")]}, "must not contain a NUL character (U+0000)"),
    ],
)
def test_unstorable_reason_finds_nul_and_lone_surrogates_at_any_depth(
    value: object, reason: str | None
) -> None:
    assert unstorable_reason(value) == reason


@pytest.mark.parametrize(
    "data",
    [
        {"instanceName": "bad\ud800"},
        {"instanceName": "ok", "metadata": {"k": "\udc00"}},
        {"instanceName": "ok", "metadata": {"nested": {"k": "\x00"}}},
    ],
)
def test_instance_data_with_unstorable_strings_is_invalid_input(data: dict[str, object]) -> None:
    with pytest.raises(InvalidInput) as refused:
        build_instance("p", "owner", "id-1", data, NOW)
    assert refused.value.details["field"] in {"instanceName", "metadata"}


@pytest.mark.parametrize("error", ["boom\x00", "boom\ud800"])
def test_a_check_error_with_unstorable_strings_is_invalid_input(error: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        parse_check_result({"success": False, "error": error})
    assert refused.value.details["field"] == "error"
