"""The one error vocabulary: every failure the service reports carries a PROXY_FAILOVER_0NN code.

Lower layers map their own exceptions into these; the API turns them into the JSON error body by
looking up ``status_code`` and ``code`` — one table, no per-route handling.
"""

from __future__ import annotations

import enum
from typing import Any


class ErrorCode(enum.StrEnum):
    INVALID_INPUT = "PROXY_FAILOVER_001"
    CONFIG_NOT_FOUND = "PROXY_FAILOVER_002"
    INVALID_STRATEGY = "PROXY_FAILOVER_003"
    INSTANCE_NOT_FOUND = "PROXY_FAILOVER_004"
    DUPLICATE_INSTANCE_NAME = "PROXY_FAILOVER_005"
    INVALID_HEALTH_STATUS = "PROXY_FAILOVER_006"
    INVALID_METRICS = "PROXY_FAILOVER_007"
    NO_ELIGIBLE_TARGET = "PROXY_FAILOVER_008"
    FAILOVER_IN_PROGRESS = "PROXY_FAILOVER_009"
    SOURCE_NOT_ACTIVE = "PROXY_FAILOVER_010"
    TARGET_NOT_ELIGIBLE = "PROXY_FAILOVER_011"
    EVENT_NOT_FOUND = "PROXY_FAILOVER_012"
    EVENT_ALREADY_CLOSED = "PROXY_FAILOVER_013"
    INVALID_REDUNDANCY = "PROXY_FAILOVER_014"
    UNAUTHENTICATED = "PROXY_FAILOVER_015"
    FORBIDDEN = "PROXY_FAILOVER_016"
    BODY_TOO_LARGE = "PROXY_FAILOVER_017"
    STORAGE_UNAVAILABLE = "PROXY_FAILOVER_018"
    INTERNAL = "PROXY_FAILOVER_019"
    NOT_FOUND = "PROXY_FAILOVER_020"
    METHOD_NOT_ALLOWED = "PROXY_FAILOVER_021"
    TOO_MANY_REQUESTS = "PROXY_FAILOVER_022"
    SERVER_BUSY = "PROXY_FAILOVER_023"


HTTP_STATUS: dict[ErrorCode, int] = {
    ErrorCode.INVALID_INPUT: 400,
    ErrorCode.CONFIG_NOT_FOUND: 404,
    ErrorCode.INVALID_STRATEGY: 400,
    ErrorCode.INSTANCE_NOT_FOUND: 404,
    ErrorCode.DUPLICATE_INSTANCE_NAME: 409,
    ErrorCode.INVALID_HEALTH_STATUS: 400,
    ErrorCode.INVALID_METRICS: 400,
    ErrorCode.NO_ELIGIBLE_TARGET: 409,
    ErrorCode.FAILOVER_IN_PROGRESS: 409,
    ErrorCode.SOURCE_NOT_ACTIVE: 409,
    ErrorCode.TARGET_NOT_ELIGIBLE: 409,
    ErrorCode.EVENT_NOT_FOUND: 404,
    ErrorCode.EVENT_ALREADY_CLOSED: 409,
    ErrorCode.INVALID_REDUNDANCY: 400,
    ErrorCode.UNAUTHENTICATED: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.BODY_TOO_LARGE: 413,
    ErrorCode.STORAGE_UNAVAILABLE: 503,
    ErrorCode.INTERNAL: 500,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.METHOD_NOT_ALLOWED: 405,
    ErrorCode.TOO_MANY_REQUESTS: 429,
    ErrorCode.SERVER_BUSY: 503,
}

#: The code a bare HTTP status stands for when nothing more specific is known (routing errors,
#: framework rejections); derived from ``HTTP_STATUS`` so the numbers live in one table.
GENERIC_CODE: dict[int, ErrorCode] = {
    HTTP_STATUS[code]: code
    for code in (
        ErrorCode.INVALID_INPUT,
        ErrorCode.UNAUTHENTICATED,
        ErrorCode.FORBIDDEN,
        ErrorCode.NOT_FOUND,
        ErrorCode.METHOD_NOT_ALLOWED,
        ErrorCode.TOO_MANY_REQUESTS,
        ErrorCode.BODY_TOO_LARGE,
        ErrorCode.INTERNAL,
        ErrorCode.STORAGE_UNAVAILABLE,
    )
}


def code_for_status(status: int) -> ErrorCode:
    """The generic code of an HTTP status; an unlisted 4xx is 001, anything else 019."""
    code = GENERIC_CODE.get(status)
    if code is not None:
        return code
    return ErrorCode.INVALID_INPUT if status < 500 else ErrorCode.INTERNAL


class FailoverError(Exception):
    """Base of every reported failure: a code, its HTTP status, a message and optional details."""

    default_code: ErrorCode = ErrorCode.INTERNAL

    def __init__(
        self,
        message: str,
        code: ErrorCode | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.code: ErrorCode = code or self.default_code
        self.message = message
        self.details: dict[str, Any] = details or {}

    @property
    def status_code(self) -> int:
        return HTTP_STATUS[self.code]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code.value}: {self.message})"


class InvalidInput(FailoverError):
    """Bad input (400): 001, or the specific 003/006/007/014 code."""

    default_code = ErrorCode.INVALID_INPUT


class NotFound(FailoverError):
    """A missing resource (404): 002, 004, 012 or 020."""

    default_code = ErrorCode.NOT_FOUND


class Conflict(FailoverError):
    """The request contradicts current state (409): 005, 008-011, 013."""

    default_code = ErrorCode.TARGET_NOT_ELIGIBLE


class Unauthenticated(FailoverError):
    default_code = ErrorCode.UNAUTHENTICATED


class Forbidden(FailoverError):
    default_code = ErrorCode.FORBIDDEN


class TooBusy(FailoverError):
    """Refused for load, not for what was asked: 429/022 over the caller's own limit, 503/023
    when the server's total is reached; ``retry_after_seconds`` goes to ``Retry-After``."""

    default_code = ErrorCode.TOO_MANY_REQUESTS

    def __init__(
        self,
        message: str,
        retry_after_seconds: int,
        code: ErrorCode | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(
            message, code, {**(details or {}), "retryAfterSeconds": retry_after_seconds}
        )
        self.retry_after_seconds = retry_after_seconds


class StorageUnavailable(FailoverError):
    """The database cannot be reached; callers should retry later (503)."""

    default_code = ErrorCode.STORAGE_UNAVAILABLE


class StorageTimeout(StorageUnavailable):
    """The database did not answer within its deadline (hung, frozen, or locked by another
    process): the same for every caller, so work that failed with it is not retried piecemeal."""


# The 404s a hidden resource must share word for word with a missing one (SPEC §7: existence never
# leaks), so they are built in one place.


def config_not_found(proxy_id: str) -> NotFound:
    """404/002: no failover configuration (proxy) with this id, or not the caller's."""
    return NotFound(
        f"Failover configuration for proxy {proxy_id} not found",
        ErrorCode.CONFIG_NOT_FOUND,
        {"proxyId": proxy_id},
    )


def instance_not_found(instance_id: str) -> NotFound:
    """404/004: no instance with this id, or not the caller's."""
    return NotFound(
        f"Proxy instance {instance_id} not found",
        ErrorCode.INSTANCE_NOT_FOUND,
        {"instanceId": instance_id},
    )


def event_not_found(event_id: str) -> NotFound:
    """404/012: no failover event with this id, or not the caller's."""
    return NotFound(
        f"Failover event {event_id} not found", ErrorCode.EVENT_NOT_FOUND, {"eventId": event_id}
    )
