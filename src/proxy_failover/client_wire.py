"""The API's wire formats as the library's values: camelCase JSON objects into ``core.model``
dataclasses, error bodies into ``FailoverError``, server-sent event blocks into ``StreamEvent``.

Shared by the sync and async clients (``proxy_failover.client``) and the data-plane agents.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import httpx

from proxy_failover.core.errors import ErrorCode, FailoverError, code_for_status
from proxy_failover.core.model import MetricSample, StoredMetricSample

T = TypeVar("T")
_CAMEL_PART = re.compile(r"_([a-z])")


def camel(name: str) -> str:
    return _CAMEL_PART.sub(lambda match: match.group(1).upper(), name)


def _convert(hint: Any, value: Any) -> Any:
    """A JSON value as the type ``hint`` names (dataclasses, enums, datetimes, tuples, lists)."""
    if value is None:
        return None
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        return _convert(options[0], value) if len(options) == 1 else value
    if origin in (tuple, list):
        (item, *_) = typing.get_args(hint) or (Any,)
        converted = [_convert(item, element) for element in value]
        return tuple(converted) if origin is tuple else converted
    if isinstance(hint, type):
        if dataclasses.is_dataclass(hint):
            return from_json(hint, value)
        if issubclass(hint, enum.Enum):
            return hint(value)
        if issubclass(hint, datetime):
            return datetime.fromisoformat(value)
        if hint is float and isinstance(value, int):
            return float(value)
    return value


_WIRE_FIELDS: dict[type, tuple[tuple[str, str, Any], ...]] = {}


def _wire_fields(cls: type) -> tuple[tuple[str, str, Any], ...]:
    """Each field of the dataclass ``cls``: its name, its camelCase key and its type. Resolved
    once per class: ``typing.get_type_hints`` evaluates the string annotations every call (about
    0.4-0.8 ms for ``Instance``), which every object of every answer paid before."""
    wire = _WIRE_FIELDS.get(cls)
    if wire is None:
        hints = typing.get_type_hints(cls)
        fields = dataclasses.fields(cls)
        wire = _WIRE_FIELDS[cls] = tuple((f.name, camel(f.name), hints[f.name]) for f in fields)
    return wire


def from_json(cls: type[T], data: Mapping[str, Any]) -> T:
    """Build the library dataclass ``cls`` from the API's camelCase JSON object."""
    values: dict[str, Any] = {}
    for name, key, hint in _wire_fields(cls):
        if key in data:
            values[name] = _convert(hint, data[key])
    if cls is StoredMetricSample and values.get("sample") is None:
        values["sample"] = MetricSample()  # samples are shown to admins only
    return cls(**values)


def error_from_response(response: httpx.Response) -> FailoverError:
    """The server's error body as a ``FailoverError`` (code, message, details)."""
    try:
        error = response.json()["error"]
        code = ErrorCode(error["code"])
        return FailoverError(str(error.get("message", "")), code, dict(error.get("details") or {}))
    except (ValueError, KeyError, TypeError):
        # not the API's error body (a proxy in between answered): the status's generic code
        return FailoverError(
            f"HTTP {response.status_code}: {response.text[:200]}",
            code_for_status(response.status_code),
            {"statusCode": response.status_code},
        )


@dataclass(frozen=True, slots=True)
class StreamEvent:
    """One server-sent event of ``GET /proxy/:id/stream``: its log position, type and payload."""

    id: int | None
    type: str
    data: dict[str, Any]

    @property
    def epoch(self) -> int | None:
        value = self.data.get("epoch")
        return value if isinstance(value, int) else None


#: A stream sends a keepalive comment every 15 s: three missed ones mean the connection is dead.
STREAM_READ_TIMEOUT_SECONDS = 45.0


def stream_event(fields: Mapping[str, str]) -> StreamEvent | None:
    """The event made of one block of ``field: value`` lines; None for comments-only blocks."""
    if "data" not in fields:
        return None
    try:
        data = json.loads(fields["data"])
    except ValueError:
        data = {}
    event_id = fields.get("id", "")
    return StreamEvent(
        int(event_id) if event_id.isdigit() else None,
        fields.get("event", "message"),
        data if isinstance(data, dict) else {},
    )
