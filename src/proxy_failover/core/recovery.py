"""SPEC §5 recovery actions: when to start one, when the next POST is due, when to give up.

Pure: the engine keeps each instance's progress (attempts made, when the next is due, whether
one is being posted) and asks ``plan_recovery`` on every evaluation what to do next. The POSTs,
the events and the bookkeeping are the engine's; the rules are here, once.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta

from proxy_failover.core.model import AdminState, FailoverConfig, HealthStatus, Instance


class RecoveryStep(enum.StrEnum):
    """What the engine does for one instance on this evaluation."""

    NONE = "none"  # no recovery is due, none is open
    START = "start"  # open a recovery event and make attempt 1 now
    ATTEMPT = "attempt"  # POST the next attempt now
    WAIT = "wait"  # an attempt is being posted, or its backoff has not passed yet
    COMPLETE = "complete"  # the instance is healthy again: the event is completed
    GIVE_UP = "give_up"  # attempts spent and one more backoff passed: the event failed
    ABANDON = "abandon"  # the instance was removed or put into maintenance: the event failed
    FORGET = "forget"  # a spent recovery's instance is no longer unhealthy: a new one may start


@dataclass(frozen=True, slots=True)
class RecoveryProgress:
    """An instance's recovery as the engine knows it.

    ``spent``: the attempts were spent and the event closed; no new recovery starts until the
    instance's health moves (else every evaluation would open another event and POST again).
    """

    attempts: int = 0
    next_attempt_at: datetime | None = None  # None: due at once
    posting: bool = False
    spent: bool = False


@dataclass(frozen=True, slots=True)
class RecoveryPlan:
    """One step with its sentence; ``attempt`` and ``next_attempt_at`` for START and ATTEMPT."""

    step: RecoveryStep
    reason: str
    attempt: int | None = None
    next_attempt_at: datetime | None = None


def needs_recovery(instance: Instance, config: FailoverConfig) -> bool:
    """An unhealthy instance with a recovery URL, not in maintenance, auto recovery on and at
    least one attempt allowed."""
    return (
        bool(instance.recovery_url)
        and instance.health_status is HealthStatus.UNHEALTHY
        and instance.admin_state is not AdminState.MAINTENANCE
        and config.enable_auto_recovery
        and config.max_recovery_attempts > 0
    )


def plan_recovery(
    instance: Instance | None,
    config: FailoverConfig,
    progress: RecoveryProgress | None,
    now: datetime,
) -> RecoveryPlan:
    """The next step of ``instance``'s recovery (``None``: it was removed).

    An open recovery (``progress`` not spent) ends completed when the instance is healthy, failed
    when it is removed or put into maintenance, and failed ("still unhealthy after N recovery
    attempts") once ``max_recovery_attempts`` POSTs were made ``recovery_backoff_seconds`` apart
    and one more backoff has passed. Attempts never overlap: a POST still in flight waits.
    """
    backoff = timedelta(seconds=config.recovery_backoff_seconds)
    if progress is None:
        if instance is not None and needs_recovery(instance, config):
            return RecoveryPlan(
                RecoveryStep.START,
                f"Instance {instance.instance_name} unhealthy: calling its recovery URL",
                attempt=1,
                next_attempt_at=now + backoff,
            )
        return RecoveryPlan(RecoveryStep.NONE, "no recovery needed")
    if progress.spent:
        if instance is None or instance.health_status is not HealthStatus.UNHEALTHY:
            return RecoveryPlan(RecoveryStep.FORGET, "health moved: a new recovery may start")
        return RecoveryPlan(RecoveryStep.NONE, "recovery attempts spent: waiting for health")
    if instance is None:
        return RecoveryPlan(RecoveryStep.ABANDON, "instance removed")
    if instance.admin_state is AdminState.MAINTENANCE:
        return RecoveryPlan(RecoveryStep.ABANDON, "instance put into maintenance")
    if instance.health_status is HealthStatus.HEALTHY:
        return RecoveryPlan(RecoveryStep.COMPLETE, "instance healthy again")
    if progress.posting:
        return RecoveryPlan(RecoveryStep.WAIT, f"recovery attempt {progress.attempts} in flight")
    if progress.next_attempt_at is not None and now < progress.next_attempt_at:
        return RecoveryPlan(RecoveryStep.WAIT, "waiting for the recovery backoff")
    if progress.attempts < config.max_recovery_attempts and instance.recovery_url:
        attempt = progress.attempts + 1
        return RecoveryPlan(
            RecoveryStep.ATTEMPT,
            f"recovery attempt {attempt}",
            attempt=attempt,
            next_attempt_at=now + backoff,
        )
    return RecoveryPlan(
        RecoveryStep.GIVE_UP,
        f"instance still unhealthy after {progress.attempts} recovery attempts",
    )
