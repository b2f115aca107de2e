"""Small behaviours of the shared vocabulary: derived properties, error codes and HTTP statuses."""

from __future__ import annotations

from datetime import timedelta

import pytest

from proxy_failover.core.errors import (
    HTTP_STATUS,
    Conflict,
    ErrorCode,
    FailoverError,
    Forbidden,
    InvalidInput,
    NotFound,
    StorageUnavailable,
    TooBusy,
    Unauthenticated,
)
from proxy_failover.core.model import (
    EventStatus,
    EventType,
    FailoverConfig,
    FailoverEvent,
    HealthRules,
    HealthState,
    HealthStatus,
    NotificationType,
)
from tests.helpers.clock import T0
from tests.helpers.factories import PROXY, USER, inst


def test_open_event_statuses() -> None:
    assert {s for s in EventStatus if s.is_open} == {EventStatus.PENDING, EventStatus.IN_PROGRESS}


def test_health_rules_come_from_the_config() -> None:
    config = FailoverConfig(
        PROXY, USER, unhealthy_threshold=4, healthy_threshold=6, enable_auto_recovery=False
    )
    assert HealthRules.of(config) == HealthRules(4, 6, False)


def test_instance_health_state() -> None:
    instance = inst(
        "a", health=HealthStatus.UNHEALTHY, consecutive_failures=3, consecutive_successes=0
    )
    assert instance.health == HealthState(HealthStatus.UNHEALTHY, 3, 0)


def test_event_start_time_in_epoch_milliseconds() -> None:
    event = FailoverEvent(
        "e",
        PROXY,
        USER,
        EventType.FAILOVER,
        None,
        "a",
        "r",
        EventStatus.IN_PROGRESS,
        "system",
        1,
        T0 + timedelta(milliseconds=1500),
    )
    assert event.start_time_ms == int(T0.timestamp() * 1000) + 1500


def _open(kind: EventType) -> FailoverEvent:
    return FailoverEvent(
        "e", PROXY, USER, kind, "a", "b", "r", EventStatus.IN_PROGRESS, "system", 1, T0
    )


@pytest.mark.parametrize(
    ("kind", "status", "announced"),
    [
        (EventType.FAILOVER, EventStatus.COMPLETED, NotificationType.FAILOVER_COMPLETED),
        (EventType.FAILBACK, EventStatus.COMPLETED, NotificationType.FAILOVER_COMPLETED),
        (EventType.SWITCHOVER, EventStatus.FAILED, NotificationType.FAILOVER_FAILED),
        (EventType.FAILOVER, EventStatus.FAILED, NotificationType.FAILOVER_FAILED),
        (EventType.RECOVERY, EventStatus.FAILED, NotificationType.INSTANCE_RECOVERY_FAILED),
        (EventType.RECOVERY, EventStatus.COMPLETED, None),  # instance.healthy says it
    ],
)
def test_a_closed_event_is_stamped_once_and_announced_by_its_kind(
    kind: EventType, status: EventStatus, announced: NotificationType | None
) -> None:
    closed = _open(kind).closed(status, T0 + timedelta(milliseconds=2500), "why")
    assert (closed.status, closed.error_message) == (status, "why")
    assert (closed.completed_at, closed.duration_ms) == (T0 + timedelta(milliseconds=2500), 2500)
    assert closed.closing_notification is announced


def test_a_closed_events_duration_is_the_callers_or_never_negative() -> None:
    event = _open(EventType.SWITCHOVER)
    assert event.closed(EventStatus.COMPLETED, T0, duration_ms=40).duration_ms == 40
    # another replica's clock behind this event's creation
    assert event.closed(EventStatus.FAILED, T0 - timedelta(seconds=1)).duration_ms == 0


def test_every_code_has_an_http_status() -> None:
    assert set(HTTP_STATUS) == set(ErrorCode)


@pytest.mark.parametrize(
    ("error", "code", "status"),
    [
        (InvalidInput("bad"), ErrorCode.INVALID_INPUT, 400),
        (InvalidInput("bad strategy", ErrorCode.INVALID_STRATEGY), ErrorCode.INVALID_STRATEGY, 400),
        (NotFound("gone"), ErrorCode.NOT_FOUND, 404),
        (NotFound("gone", ErrorCode.INSTANCE_NOT_FOUND), ErrorCode.INSTANCE_NOT_FOUND, 404),
        (Conflict("no"), ErrorCode.TARGET_NOT_ELIGIBLE, 409),
        (Unauthenticated("who"), ErrorCode.UNAUTHENTICATED, 401),
        (Forbidden("admin"), ErrorCode.FORBIDDEN, 403),
        (StorageUnavailable("db"), ErrorCode.STORAGE_UNAVAILABLE, 503),
        (FailoverError("bug"), ErrorCode.INTERNAL, 500),
    ],
)
def test_errors_carry_code_status_and_message(
    error: FailoverError, code: ErrorCode, status: int
) -> None:
    assert error.code is code
    assert error.status_code == status
    assert error.details == {}
    assert str(error) == error.message
    assert repr(error) == f"{type(error).__name__}({code.value}: {error.message})"


@pytest.mark.parametrize(
    ("code", "status"),
    [(None, 429), (ErrorCode.TOO_MANY_REQUESTS, 429), (ErrorCode.SERVER_BUSY, 503)],
)
def test_too_busy_says_when_to_retry_beside_its_details(
    code: ErrorCode | None, status: int
) -> None:
    error = TooBusy("slow down", 7, code, {"limit": 10})
    assert (error.status_code, error.retry_after_seconds) == (status, 7)
    assert error.details == {"limit": 10, "retryAfterSeconds": 7}
    assert TooBusy("slow down", 2).details == {"retryAfterSeconds": 2}
