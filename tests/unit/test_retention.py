"""``core.retention``: what history may be pruned, as tables of (status, age) -> verdict."""

from __future__ import annotations

from datetime import timedelta

import pytest

from proxy_failover.core.retention import (
    FINISHED_DELIVERY_STATUSES,
    FINISHED_EVENT_STATUSES,
    RetentionPolicy,
    cutoff,
    cutoffs,
    delivery_prunable,
    event_prunable,
    row_prunable,
)
from tests.helpers.clock import T0

CUT = cutoff(T0, 90)
OLD = CUT - timedelta(seconds=1)
NEW = CUT + timedelta(seconds=1)


def test_cutoffs_count_days_back_from_now() -> None:
    assert cutoff(T0, 90) == T0 - timedelta(days=90)
    assert cutoff(T0, 0.5) == T0 - timedelta(hours=12)
    both = cutoffs(T0, RetentionPolicy(days=90, delivery_days=14))
    assert (both.history, both.deliveries) == (T0 - timedelta(days=90), T0 - timedelta(days=14))
    defaults = RetentionPolicy()
    assert (defaults.days, defaults.delivery_days, defaults.batch) == (90, 14, 1000)


@pytest.mark.parametrize(
    ("days", "delivery_days", "batch"), [(0, 14, 1000), (90, 0, 1000), (-1, 14, 1), (90, 14, 0)]
)
def test_a_policy_keeps_something(days: float, delivery_days: float, batch: int) -> None:
    with pytest.raises(ValueError, match="retention days must be positive"):
        RetentionPolicy(days, delivery_days, batch)


def test_finished_states_are_exactly_the_closed_ones() -> None:
    assert {"completed", "failed"} == FINISHED_EVENT_STATUSES
    assert {"delivered", "dead", "cancelled"} == FINISHED_DELIVERY_STATUSES


@pytest.mark.parametrize(("stamped_at", "expected"), [(OLD, True), (CUT, False), (NEW, False)])
def test_rows_go_strictly_before_the_cutoff(stamped_at: object, expected: bool) -> None:
    assert row_prunable(stamped_at, CUT) is expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("status", "created_at", "expected"),
    [
        ("completed", OLD, True),
        ("failed", OLD, True),
        ("completed", CUT, False),
        ("failed", NEW, False),
        ("in_progress", OLD - timedelta(days=1000), False),  # open work stays whatever its age
        ("pending", OLD - timedelta(days=1000), False),
        ("in_progress", NEW, False),
    ],
)
def test_events(status: str, created_at: object, expected: bool) -> None:
    assert event_prunable(status, created_at, CUT) is expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("status", "created_at", "last_attempt_at", "expected"),
    [
        ("delivered", OLD, OLD, True),
        ("dead", OLD, None, True),
        ("cancelled", OLD, None, True),
        ("pending", OLD - timedelta(days=1000), None, False),  # never a pending delivery
        ("pending", OLD, OLD, False),
        ("delivered", NEW, NEW, False),
        ("delivered", OLD, NEW, False),  # redelivered lately: counts from its last attempt
        ("dead", OLD, CUT, False),
    ],
)
def test_deliveries(
    status: str, created_at: object, last_attempt_at: object, expected: bool
) -> None:
    verdict = delivery_prunable(status, created_at, last_attempt_at, CUT)  # type: ignore[arg-type]
    assert verdict is expected
