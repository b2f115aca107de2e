"""One table from exception class to the JSON error body (SPEC §7), looked up by base class.

Validation errors become 400 with the SPEC code the field implies (003 strategy, 006 health
status, 007 metrics, 014 redundancy override, else 001) instead of FastAPI's 422; routing errors
become 404/020 and 405/021; storage outages 503/018 with ``Retry-After``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException

from proxy_failover.core.errors import (
    HTTP_STATUS,
    ErrorCode,
    FailoverError,
    StorageUnavailable,
    TooBusy,
    code_for_status,
)
from proxy_failover.store.database import map_database_error

log = logging.getLogger("proxy_failover.api")

#: Seconds a client should wait before retrying after a storage outage.
RETRY_AFTER_SECONDS = 5
#: Scope key where the strict JSON parser leaves why a body was refused.
JSON_ERROR_SCOPE_KEY = "pfo.json_error"

#: Routes whose whole body carries one specific code when it is invalid.
_BODY_CODES: dict[tuple[str, str], ErrorCode] = {
    ("PUT", "/proxy/{proxyId}/redundancy"): ErrorCode.INVALID_REDUNDANCY,
    ("POST", "/proxy/instances/{instanceId}/metrics"): ErrorCode.INVALID_METRICS,
}
#: Body fields whose invalid value has its own code.
_FIELD_CODES: dict[str, ErrorCode] = {
    "failoverStrategy": ErrorCode.INVALID_STRATEGY,
    "healthStatus": ErrorCode.INVALID_HEALTH_STATUS,
    "metrics": ErrorCode.INVALID_METRICS,
}


def error_payload(
    code: ErrorCode, message: str, details: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "error": {
            "code": code.value,
            "message": message,
            "statusCode": HTTP_STATUS[code],
            "details": dict(details or {}),
        }
    }


def error_response(
    code: ErrorCode,
    message: str,
    details: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """The JSON error body with its status (and ``Retry-After`` for 503)."""
    extra = dict(headers or {})
    if code is ErrorCode.STORAGE_UNAVAILABLE:
        extra.setdefault("Retry-After", str(RETRY_AFTER_SECONDS))
    if code is ErrorCode.UNAUTHENTICATED:
        extra.setdefault("WWW-Authenticate", "Bearer")
    return JSONResponse(
        error_payload(code, message, details), status_code=HTTP_STATUS[code], headers=extra
    )


async def _failover_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, FailoverError)
    if exc.code is ErrorCode.INTERNAL:
        log.error("internal error: %s", exc.message, exc_info=exc)
    if isinstance(exc, TooBusy):
        headers = {"Retry-After": str(exc.retry_after_seconds)}
        return error_response(exc.code, exc.message, exc.details, headers)
    return error_response(exc.code, exc.message, exc.details)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    json_error = request.scope.get(JSON_ERROR_SCOPE_KEY)
    if json_error:
        return error_response(ErrorCode.INVALID_INPUT, f"malformed JSON body: {json_error}")
    route = request.scope.get("route")
    route_key = (request.method, getattr(route, "path", ""))
    problems = []
    code: ErrorCode | None = None
    for error in exc.errors():
        loc = [str(part) for part in error.get("loc", ())]
        where, fields = (loc[0], loc[1:]) if loc else ("body", [])
        problem_code = _code_for(where, fields, str(error.get("type", "")), route_key)
        code = code or problem_code
        problems.append(
            {
                "location": where,
                "field": ".".join(fields),
                "message": str(error.get("msg", "invalid")),
                "type": str(error.get("type", "")),
            }
        )
    code = code or ErrorCode.INVALID_INPUT
    first = problems[0] if problems else {"field": "", "message": "invalid request"}
    if first["type"] == "model_attributes_type" and not first["field"]:
        message = "request body must be a JSON object (Content-Type: application/json)"
    elif first["field"]:
        message = f"{first['location']} field {first['field']!r}: {first['message']}"
    else:
        message = f"{first['location']}: {first['message']}"
    return error_response(code, message, {"errors": problems})


def _code_for(
    where: str, fields: list[str], error_type: str, route_key: tuple[str, str]
) -> ErrorCode:
    if where != "body" or error_type == "extra_forbidden" or (error_type == "missing"):
        return ErrorCode.INVALID_INPUT
    for name in fields:
        if name in _FIELD_CODES:
            return _FIELD_CODES[name]
    return _BODY_CODES.get(route_key, ErrorCode.INVALID_INPUT)


async def _http_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    code = code_for_status(exc.status_code)
    if exc.status_code == 404:
        message = "no such resource or route"
    elif exc.status_code == 405:
        message = "method not allowed"
    else:
        message = str(exc.detail)
    return error_response(code, message, headers=exc.headers)


async def _unmapped_error(request: Request, exc: Exception) -> Response:
    """Driver errors that escaped the store's mapping: outages are 503, anything else a bug."""
    mapped = map_database_error(exc)
    if mapped is not None:
        if not isinstance(mapped, StorageUnavailable):
            return error_response(mapped.code, mapped.message, mapped.details)
        log.warning("storage unavailable on %s %s: %s", request.method, request.url.path, exc)
        return error_response(mapped.code, mapped.message)
    return internal_error_response(request, exc)


def internal_error_response(request: Request | None, exc: BaseException) -> JSONResponse:
    where = f"{request.method} {request.url.path}" if request is not None else "request"
    log.error("internal error on %s", where, exc_info=exc)
    return error_response(ErrorCode.INTERNAL, "internal error")


Handler = Callable[[Request, Any], Coroutine[Any, Any, Response]]

#: The table: exception class → handler (Starlette looks handlers up along the class's MRO).
EXCEPTION_HANDLERS: dict[int | type[Exception], Handler] = {
    FailoverError: _failover_error,
    RequestValidationError: _validation_error,
    StarletteHTTPException: _http_error,
    OSError: _unmapped_error,
    sa_exc.SQLAlchemyError: _unmapped_error,
}
