"""Typed readers of one input field each, checked against a ``core.limits.Limit``.

Type rules are strict on purpose, so that a client bug surfaces as a 400 rather than a surprise:
booleans must be real booleans (not 1 or "true"), numbers must be finite and never booleans,
integers must be ``int`` (not 3.0). Every failure is ``InvalidInput`` naming the field (camelCase,
as the API speaks) in ``details["field"]``; callers pass the SPEC code the field belongs to.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

from proxy_failover.core.errors import ErrorCode, InvalidInput
from proxy_failover.core.limits import Limit

_E = TypeVar("_E", bound=enum.Enum)
_SURROGATE = re.compile("[\ud800-\udfff]")

INVALID = ErrorCode.INVALID_INPUT


def camel(snake: str) -> str:
    """``health_check`` -> ``healthCheck`` (the API's name of a field)."""
    head, *rest = snake.split("_")
    return head + "".join(part.title() for part in rest)


def fail(message: str, field: str, code: ErrorCode = INVALID) -> InvalidInput:
    return InvalidInput(message, code, {"field": field})


def normalise(data: object, fields: tuple[str, ...], code: ErrorCode, what: str) -> dict[str, Any]:
    """Map camelCase or snake_case keys to snake_case field names; unknown or doubled keys fail.

    ``fields`` are snake_case names; the result holds only the keys that were given.
    """
    if not isinstance(data, Mapping):
        raise InvalidInput(f"{what} must be a JSON object", code, {"field": what})
    by_key = {camel(f): f for f in fields} | {f: f for f in fields}
    result: dict[str, Any] = {}
    for key, value in data.items():
        name = by_key.get(key) if isinstance(key, str) else None
        if name is None:
            raise InvalidInput(f"Unknown field {key!r} in {what}", code, {"field": str(key)})
        if name in result:
            raise fail(
                f"Field {camel(name)} given twice (camelCase and snake_case)", camel(name), code
            )
        result[name] = value
    return result


def _show(value: float) -> str:
    """A number for a message; str() of a huge integer is slow or raises, so it is summarised."""
    if isinstance(value, int) and abs(value) > 10**15:
        return "a very large number"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _check_range(value: float, field: str, limit: Limit, code: ErrorCode) -> None:
    low, high = limit.minimum, limit.maximum
    if (low is not None and value < low) or (high is not None and value > high):
        if low is not None and high is not None:
            bounds = f"between {low:g} and {high:g}"
        elif low is not None:
            bounds = f"at least {low:g}"
        else:
            bounds = f"at most {high:g}"
        raise fail(f"{field} must be {bounds} (got {_show(value)})", field, code)


def number(value: object, field: str, limit: Limit, code: ErrorCode = INVALID) -> float:
    """A finite real number (int or float, never bool) within the limit."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise fail(f"{field} must be a number", field, code)
    if isinstance(value, float) and not math.isfinite(value):
        raise fail(f"{field} must be a finite number", field, code)
    _check_range(value, field, limit, code)
    return float(value)


def integer(value: object, field: str, limit: Limit, code: ErrorCode = INVALID) -> int:
    """An ``int`` (never bool or float) within the limit."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise fail(f"{field} must be an integer", field, code)
    _check_range(value, field, limit, code)
    return value


def boolean(value: object, field: str, code: ErrorCode = INVALID) -> bool:
    if not isinstance(value, bool):
        raise fail(f"{field} must be true or false", field, code)
    return value


def choice(value: object, enum_type: type[_E], field: str, code: ErrorCode = INVALID) -> _E:
    allowed = [member.value for member in enum_type]
    if not isinstance(value, str) or value not in allowed:
        raise fail(f"{field} must be one of {', '.join(allowed)} (got {value!r})", field, code)
    return enum_type(value)


def unstorable_reason(value: object) -> str | None:
    """Why a string anywhere in ``value`` (keys too) could not be stored and served back, or None.

    A lone UTF-16 surrogate cannot be encoded as UTF-8, so a stored one fails every later read that
    carries it; PostgreSQL text refuses NUL. Checked here, after decoding, whatever path the value
    came by (HTTP body, library call), so no stored value can make a read fail."""
    stack: list[object] = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            if "\x00" in node:
                return "must not contain a NUL character (U+0000)"
            if _SURROGATE.search(node):
                return "must not contain a lone UTF-16 surrogate (not valid Unicode)"
        elif isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list | tuple):
            stack.extend(node)
    return None


def string(value: object, field: str, limit: Limit, code: ErrorCode = INVALID) -> str:
    """A storable string within the limit's lengths and matching its pattern."""
    if not isinstance(value, str):
        raise fail(f"{field} must be a string", field, code)
    if limit.min_length is not None and len(value) < limit.min_length:
        raise fail(f"{field} must be at least {limit.min_length} characters", field, code)
    if limit.max_length is not None and len(value) > limit.max_length:
        raise fail(f"{field} must be at most {limit.max_length} characters", field, code)
    if limit.pattern is not None and re.fullmatch(limit.pattern, value) is None:
        raise fail(f"{field} {limit.hint or 'must match ' + limit.pattern}", field, code)
    if (problem := unstorable_reason(value)) is not None:
        raise fail(f"{field} {problem}", field, code)
    return value


def strings(value: object, field: str, limit: Limit, code: ErrorCode = INVALID) -> list[str]:
    """A list within the limit's item counts whose elements obey ``limit.items``."""
    if not isinstance(value, list):
        raise fail(f"{field} must be a list", field, code)
    if limit.min_items is not None and len(value) < limit.min_items:
        raise fail(f"{field} must have at least {limit.min_items} items", field, code)
    if limit.max_items is not None and len(value) > limit.max_items:
        raise fail(f"{field} must have at most {limit.max_items} items", field, code)
    item = limit.items or Limit()
    return [string(element, field, item, code) for element in value]


def text(value: object, field: str, limit: Limit, code: ErrorCode = INVALID) -> str:
    """A non-blank string without control characters, within the limit."""
    if not isinstance(value, str):
        raise fail(f"{field} must be a string", field, code)
    if not value.strip():
        raise fail(f"{field} must not be empty", field, code)
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise fail(f"{field} must not contain control characters", field, code)
    return string(value, field, limit, code)


def timestamp(value: object, field: str, limit: Limit, code: ErrorCode = INVALID) -> datetime:
    """An ISO 8601 time (UTC when it names no zone), as the API writes them."""
    stamp = string(value, field, limit, code)
    try:
        parsed = datetime.fromisoformat(stamp)
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    except (ValueError, OverflowError):
        raise fail(f"{field} must be an ISO 8601 time", field, code) from None
