"""The recovery planner (SPEC §5): start, attempts with backoff, give up, complete, abandon."""

from __future__ import annotations

from datetime import timedelta

import pytest

from proxy_failover.core.model import AdminState, FailoverConfig, HealthStatus
from proxy_failover.core.recovery import (
    RecoveryPlan,
    RecoveryProgress,
    RecoveryStep,
    needs_recovery,
    plan_recovery,
)
from tests.helpers.clock import T0
from tests.helpers.factories import PROXY, USER, inst

U, H, K = HealthStatus.UNHEALTHY, HealthStatus.HEALTHY, HealthStatus.UNKNOWN
URL = "http://a/recover"
NOW = T0 + timedelta(minutes=5)
LATER = NOW + timedelta(seconds=10)


def config(**fields: object) -> FailoverConfig:
    values: dict[str, object] = {
        "enable_auto_recovery": True,
        "max_recovery_attempts": 2,
        "recovery_backoff_seconds": 10.0,
    }
    return FailoverConfig(proxy_id=PROXY, user_id=USER, **{**values, **fields})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("health", "admin", "url", "fields", "needed"),
    [
        (U, AdminState.ENABLED, URL, {}, True),
        (U, AdminState.DRAIN, URL, {}, True),  # drained still gets its recovery
        (H, AdminState.ENABLED, URL, {}, False),
        (K, AdminState.ENABLED, URL, {}, False),
        (U, AdminState.MAINTENANCE, URL, {}, False),
        (U, AdminState.ENABLED, None, {}, False),
        (U, AdminState.ENABLED, URL, {"enable_auto_recovery": False}, False),
        (U, AdminState.ENABLED, URL, {"max_recovery_attempts": 0}, False),
    ],
)
def test_needs_recovery(
    health: HealthStatus,
    admin: AdminState,
    url: str | None,
    fields: dict[str, object],
    needed: bool,
) -> None:
    instance = inst("a", health=health, admin=admin, recovery_url=url)
    assert needs_recovery(instance, config(**fields)) is needed


ATTEMPT_2 = RecoveryPlan(RecoveryStep.ATTEMPT, "recovery attempt 2", 2, NOW + timedelta(seconds=10))


@pytest.mark.parametrize(
    ("health", "admin", "progress", "expected"),
    [
        # nothing open: start when needed, with attempt 1 now and the next a backoff later
        (
            U,
            AdminState.ENABLED,
            None,
            RecoveryPlan(
                RecoveryStep.START,
                "Instance a unhealthy: calling its recovery URL",
                1,
                NOW + timedelta(seconds=10),
            ),
        ),
        (H, AdminState.ENABLED, None, RecoveryPlan(RecoveryStep.NONE, "no recovery needed")),
        # open: the backoff runs, attempts never overlap
        (
            U,
            AdminState.ENABLED,
            RecoveryProgress(1, LATER),
            RecoveryPlan(RecoveryStep.WAIT, "waiting for the recovery backoff"),
        ),
        (
            U,
            AdminState.ENABLED,
            RecoveryProgress(1, NOW, posting=True),
            RecoveryPlan(RecoveryStep.WAIT, "recovery attempt 1 in flight"),
        ),
        (U, AdminState.ENABLED, RecoveryProgress(1, NOW), ATTEMPT_2),
        (K, AdminState.ENABLED, RecoveryProgress(1, NOW), ATTEMPT_2),  # not healthy yet either
        (U, AdminState.ENABLED, RecoveryProgress(1, None), ATTEMPT_2),
        # spent, and one more backoff passed: give up
        (
            U,
            AdminState.ENABLED,
            RecoveryProgress(2, LATER),
            RecoveryPlan(RecoveryStep.WAIT, "waiting for the recovery backoff"),
        ),
        (
            U,
            AdminState.ENABLED,
            RecoveryProgress(2, NOW),
            RecoveryPlan(
                RecoveryStep.GIVE_UP, "instance still unhealthy after 2 recovery attempts"
            ),
        ),
        # healthy again: completed; maintenance: abandoned (before anything else)
        (
            H,
            AdminState.ENABLED,
            RecoveryProgress(1, LATER, posting=True),
            RecoveryPlan(RecoveryStep.COMPLETE, "instance healthy again"),
        ),
        (
            H,
            AdminState.MAINTENANCE,
            RecoveryProgress(1, LATER),
            RecoveryPlan(RecoveryStep.ABANDON, "instance put into maintenance"),
        ),
        # spent: no new recovery until health moves
        (
            U,
            AdminState.ENABLED,
            RecoveryProgress(spent=True),
            RecoveryPlan(RecoveryStep.NONE, "recovery attempts spent: waiting for health"),
        ),
        (
            K,
            AdminState.ENABLED,
            RecoveryProgress(spent=True),
            RecoveryPlan(RecoveryStep.FORGET, "health moved: a new recovery may start"),
        ),
    ],
)
def test_plan_recovery(
    health: HealthStatus,
    admin: AdminState,
    progress: RecoveryProgress | None,
    expected: RecoveryPlan,
) -> None:
    instance = inst("a", health=health, admin=admin, recovery_url=URL)
    assert plan_recovery(instance, config(), progress, NOW) == expected


def test_a_removed_instance_abandons_its_recovery_or_forgets_a_spent_one() -> None:
    assert plan_recovery(None, config(), RecoveryProgress(1, NOW), NOW) == RecoveryPlan(
        RecoveryStep.ABANDON, "instance removed"
    )
    assert plan_recovery(None, config(), RecoveryProgress(spent=True), NOW).step is (
        RecoveryStep.FORGET
    )
    assert plan_recovery(None, config(), None, NOW).step is RecoveryStep.NONE


def test_a_recovery_url_removed_mid_recovery_gives_up_when_due() -> None:
    instance = inst("a", health=U, recovery_url=None)
    assert plan_recovery(instance, config(), RecoveryProgress(1, NOW), NOW).step is (
        RecoveryStep.GIVE_UP
    )
