"""Success envelopes rendered straight to JSON bytes, and the error responses OpenAPI documents.

Handlers return ready ``Response`` objects (pydantic's Rust serializer, no second validation pass),
while ``response_model`` still tells the OpenAPI document the exact shape.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from fastapi import Response
from pydantic import BaseModel

from proxy_failover.entrypoints.api.schemas import ErrorBody

_JSON = "application/json"


def ok(
    data: BaseModel | dict[str, Any],
    message: str,
    *,
    status_code: int = 200,
    exclude: Iterable[str] | None = None,
) -> Response:
    """``{"data": <object>, "message": "..."}``."""
    return Response(
        ok_body(data, message, exclude=exclude), status_code=status_code, media_type=_JSON
    )


def ok_body(
    data: BaseModel | dict[str, Any], message: str, *, exclude: Iterable[str] | None = None
) -> bytes:
    """The bytes of ``ok``'s envelope."""
    return b'{"data":' + _dump(data, exclude) + b',"message":' + json.dumps(message).encode() + b"}"


def ok_list(items: Iterable[BaseModel], *, exclude: Iterable[str] | None = None) -> Response:
    """``{"data": [...], "count": n}`` with ``count`` the number of items returned."""
    dumped = [_dump(item, exclude) for item in items]
    body = b'{"data":[' + b",".join(dumped) + b'],"count":' + str(len(dumped)).encode() + b"}"
    return Response(body, media_type=_JSON)


def ok_page(items: Iterable[BaseModel], next_cursor: str | None) -> Response:
    """``ok_list``'s envelope plus ``nextCursor``: where the next page starts, or null."""
    dumped = [_dump(item, None) for item in items]
    body = b"".join(
        [
            b'{"data":[',
            b",".join(dumped),
            b'],"count":',
            str(len(dumped)).encode(),
            b',"nextCursor":',
            json.dumps(next_cursor).encode(),
            b"}",
        ]
    )
    return Response(body, media_type=_JSON)


def _dump(data: BaseModel | dict[str, Any], exclude: Iterable[str] | None) -> bytes:
    if isinstance(data, BaseModel):
        return data.model_dump_json(exclude=set(exclude) if exclude else None).encode()
    return json.dumps(data, separators=(",", ":")).encode()


def _error(description: str) -> dict[str, Any]:
    return {"model": ErrorBody, "description": description}


#: Error responses every authenticated ``/proxy*`` route may give.
COMMON_ERRORS: dict[int | str, dict[str, Any]] = {
    400: _error("Invalid body or parameter (001, or 003/006/007/014)"),
    401: _error("Authentication missing or invalid (015)"),
    404: _error("Not found, or not yours (002/004/012/020)"),
    405: _error("Method not allowed (021)"),
    413: _error("Body larger than 64 KiB (017)"),
    429: _error("Rate limit or stream cap of the caller reached; retry after Retry-After (022)"),
    500: _error("Internal error, a bug (019)"),
    503: _error("Storage unavailable (018) or server at capacity (023); retry after Retry-After"),
}
ADMIN_ERRORS: dict[int | str, dict[str, Any]] = {403: _error("Admin role required (016)")}
CONFLICT_ERRORS: dict[int | str, dict[str, Any]] = {
    409: _error("Conflicts with current state (005, 008-011, 013)")
}
