"""The failover decision (SPEC §5): evaluate for people and execute, decide for the engine.

``evaluate`` is the one place that reads a snapshot and says whether the active role should move;
``decide`` wraps it with the engine's extra gates (auto failover on, first probes done, no manual
switch racing a failback); ``check_execute`` guards the manual compare-and-swap; ``explain`` turns
the same facts into sentences per instance. All are pure: ``now`` is an argument.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from proxy_failover.core.errors import Conflict, ErrorCode, NotFound
from proxy_failover.core.model import (
    AdminState,
    Decision,
    DecisionAction,
    Evaluation,
    EventType,
    Explanation,
    HealthStatus,
    Instance,
    InstanceExplanation,
    ProxySnapshot,
    ReasonCode,
)
from proxy_failover.core.strategies import in_preference_order, is_eligible, select_target


def _unavailable_phrase(instance: Instance) -> str:
    return "in maintenance" if instance.admin_state is AdminState.MAINTENANCE else "draining"


def _failback_candidate(
    snapshot: ProxySnapshot, active: Instance, now: datetime
) -> Instance | None:
    """The most preferred instance when failback to it is due now, else None.

    Due means: auto failback is on, that instance is eligible, not the active one, and has been
    healthy for at least ``failback_delay_seconds`` since ``status_changed_at``. An instance
    whose ``status_changed_at`` is unknown (None) never counts as settled: no failback to it.
    """
    config = snapshot.config
    if not config.enable_auto_failback:
        return None
    first = in_preference_order(snapshot.instances)[0]
    if first.id == active.id or not is_eligible(first) or first.status_changed_at is None:
        return None
    healthy_for = (now - first.status_changed_at).total_seconds()
    return first if healthy_for >= config.failback_delay_seconds else None


def evaluate(snapshot: ProxySnapshot, now: datetime) -> Evaluation:
    """Side-effect-free answer: should the active role move, from where, to where, and why.

    Checks, in order: no instances; no active instance (activate the strategy's choice); active
    unhealthy; active drained or in maintenance (``active_unavailable``); active health unknown
    (never a failover); failback due; otherwise ``active_healthy``. When the active role must move
    but nothing is eligible the code is ``no_healthy_target`` and ``should_failover`` is False. The
    answer does not depend on ``enable_auto_failover`` (it only reports it).
    """
    config = snapshot.config
    active = snapshot.active
    strategy = config.failover_strategy

    def answer(
        code: ReasonCode,
        reason: str,
        target: Instance | None = None,
        event_type: EventType = EventType.FAILOVER,
    ) -> Evaluation:
        return Evaluation(
            proxy_id=config.proxy_id,
            should_failover=target is not None,
            source_instance_id=active.id if active is not None else None,
            target_instance_id=target.id if target is not None else None,
            reason=reason,
            reason_code=code,
            strategy=strategy,
            active_instance_id=active.id if active is not None else None,
            auto_failover_enabled=config.enable_auto_failover,
            evaluated_at=now,
            event_type=event_type,
        )

    if not snapshot.instances:
        return answer(ReasonCode.NO_INSTANCES, "No instances registered for this proxy")
    if active is None:
        target = select_target(snapshot.instances, strategy, None)
        if target is None:
            return answer(
                ReasonCode.NO_HEALTHY_TARGET,
                "No active instance and no eligible instance to activate "
                "(none is both healthy and enabled)",
            )
        return answer(
            ReasonCode.NO_ACTIVE_INSTANCE,
            f"No active instance: activate {target.instance_name} ({strategy.value} strategy)",
            target,
        )

    if active.health_status is HealthStatus.UNHEALTHY:
        code = ReasonCode.ACTIVE_UNHEALTHY
        problem = (
            f"Active instance {active.instance_name} unhealthy "
            f"({active.consecutive_failures} failures)"
        )
    elif active.admin_state is not AdminState.ENABLED:
        code = ReasonCode.ACTIVE_UNAVAILABLE
        problem = f"Active instance {active.instance_name} {_unavailable_phrase(active)}"
    elif active.health_status is HealthStatus.UNKNOWN:
        return answer(
            ReasonCode.ACTIVE_UNKNOWN,
            f"Active instance {active.instance_name} health unknown: "
            "no failover until its health is known",
        )
    else:
        failback = _failback_candidate(snapshot, active, now)
        if failback is not None:
            return answer(
                ReasonCode.FAILBACK,
                f"Preferred instance {failback.instance_name} healthy for at least "
                f"{config.failback_delay_seconds:g}s: fail back from {active.instance_name}",
                failback,
                EventType.FAILBACK,
            )
        return answer(ReasonCode.ACTIVE_HEALTHY, f"Active instance {active.instance_name} healthy")

    target = select_target(snapshot.instances, strategy, active.id)
    if target is None:
        return answer(
            ReasonCode.NO_HEALTHY_TARGET,
            f"{problem}, but no other instance is eligible (healthy and enabled)",
        )
    return answer(code, problem, target)


def _refuse_open_switch(snapshot: ProxySnapshot) -> None:
    """409/009 while a switch (failover or switchover) of the proxy is in progress."""
    if snapshot.open_switch_event is not None:
        raise Conflict(
            f"A {snapshot.open_switch_event.event_type.value} is already in progress "
            f"for proxy {snapshot.config.proxy_id}",
            ErrorCode.FAILOVER_IN_PROGRESS,
            {"eventId": snapshot.open_switch_event.id},
        )


def check_execute(
    snapshot: ProxySnapshot,
    source_id: str | None,
    target_id: str,
    *,
    target_proxy_id: str | None = None,
) -> EventType:
    """Validate a manual execute (compare-and-swap) in SPEC's order 004, 011, 010, 009.

    Returns the event type it records: ``failover`` for an activation or an unhealthy/not-enabled
    source, ``switchover`` for a healthy enabled source. A source whose health is ``unknown`` also
    yields ``failover``: moving away from an instance nobody can vouch for is not a planned
    switchover. ``source_id`` must equal the current active instance (None when there is none).

    A target missing from the snapshot is 004, unless the caller found it in another proxy and
    passes that proxy's id as ``target_proxy_id``: then it is 011 (SPEC §7, "other proxy").
    """
    target = next((i for i in snapshot.instances if i.id == target_id), None)
    if target is None and target_proxy_id is not None:
        raise Conflict(
            f"Target instance {target_id} belongs to another proxy",
            ErrorCode.TARGET_NOT_ELIGIBLE,
            {"field": "targetInstanceId", "instanceId": target_id, "reason": "other proxy"},
        )
    if target is None:
        raise NotFound(
            f"Target instance {target_id} not found for proxy {snapshot.config.proxy_id}",
            ErrorCode.INSTANCE_NOT_FOUND,
            {"field": "targetInstanceId", "instanceId": target_id},
        )
    if not is_eligible(target, source_id):
        if target.id == source_id:
            why = "it is the source instance"
        elif target.health_status is not HealthStatus.HEALTHY:
            why = f"its health is {target.health_status.value}"
        else:
            why = f"its admin state is {target.admin_state.value}"
        raise Conflict(
            f"Target instance {target.instance_name} is not eligible: {why}",
            ErrorCode.TARGET_NOT_ELIGIBLE,
            {"field": "targetInstanceId", "instanceId": target.id, "reason": why},
        )
    active = snapshot.active
    active_id = active.id if active is not None else None
    if source_id != active_id:
        raise Conflict(
            f"Source instance {source_id or '(none)'} is not the active instance "
            f"(active: {active_id or 'none'})",
            ErrorCode.SOURCE_NOT_ACTIVE,
            {"field": "sourceInstanceId", "activeInstanceId": active_id},
        )
    _refuse_open_switch(snapshot)
    if (
        active is None
        or active.health_status is not HealthStatus.HEALTHY
        or active.admin_state is not AdminState.ENABLED
    ):
        return EventType.FAILOVER
    return EventType.SWITCHOVER


def _activation_wait(
    snapshot: ProxySnapshot, now: datetime, probing_since: Mapping[str, datetime]
) -> str | None:
    """Why activation must still wait, or None when it may go ahead.

    Activation waits until every enabled instance with an endpoint has had its first probe (so the
    best instance, not the first to answer, is chosen), or one health-check interval has passed
    since the earliest registration. Without any registration time, only the probe rule applies.

    ``probing_since`` (instance id -> when the engine started probing it): after an engine
    (re)start, instances registered long ago but never probed would satisfy the interval rule at
    once and the first to answer would win; so an unprobed instance the engine started probing
    less than one interval + timeout ago (its first probe's longest wait) is still awaited.
    """
    unprobed = [
        i
        for i in in_preference_order(snapshot.instances)
        if i.admin_state is AdminState.ENABLED and i.endpoint and i.last_health_check is None
    ]
    if not unprobed:
        return None
    config = snapshot.config
    created = [i.created_at for i in snapshot.instances if i.created_at is not None]
    interval = timedelta(seconds=config.health_check_interval_seconds)
    if not created or now - min(created) < interval:
        return f"waiting for the first probe of {', '.join(i.instance_name for i in unprobed)}"
    patience = interval + timedelta(seconds=config.health_check_timeout_seconds)
    awaited = [
        i.instance_name
        for i in unprobed
        if (since := probing_since.get(i.id)) is not None and now - since < patience
    ]
    if awaited:
        return f"waiting for the first probe of {', '.join(awaited)}"
    return None


def decide(
    snapshot: ProxySnapshot,
    now: datetime,
    probing_since: Mapping[str, datetime] | None = None,
) -> Decision:
    """The engine's one decision: activate, fail over, fail back, or nothing — with its sentence.

    NONE whenever ``enable_auto_failover`` is off (the sentence says so), for ``active_unknown`` and
    ``active_healthy``, when no target exists, while activation waits for first probes, and for a
    failback while a switch event is open (a failover away from a broken active instance is not
    held back by an open manual event: the engine supersedes it). ``probing_since``: when the
    engine started probing each instance (see ``_activation_wait``).
    """
    evaluation = evaluate(snapshot, now)
    code = evaluation.reason_code
    source = evaluation.source_instance_id
    target_id = evaluation.target_instance_id
    names = {i.id: i.instance_name for i in snapshot.instances}
    target = names.get(target_id or "", "")
    source_name = names.get(source or "", "")

    def none(reason: str) -> Decision:
        return Decision(DecisionAction.NONE, code, reason, source, None)

    if not snapshot.config.enable_auto_failover:
        return none(f"auto failover is off: {evaluation.reason}")
    if not evaluation.should_failover:
        return none(evaluation.reason)
    if code is ReasonCode.NO_ACTIVE_INSTANCE:
        wait = _activation_wait(snapshot, now, probing_since or {})
        if wait is not None:
            return none(f"no active instance: {wait} before activating")
        return Decision(
            DecisionAction.ACTIVATE,
            code,
            f"no active instance: activating {target}",
            None,
            target_id,
        )
    if code is ReasonCode.FAILBACK:
        if snapshot.open_switch_event is not None:
            return none(f"failback to {target} waits: a switch event is in progress")
        return Decision(
            DecisionAction.FAILBACK,
            code,
            f"preferred {target} healthy for {snapshot.config.failback_delay_seconds:g}s: "
            f"failing back from {source_name}",
            source,
            target_id,
        )
    active = snapshot.active
    assert active is not None  # should_failover without activation or failback implies an active
    if code is ReasonCode.ACTIVE_UNHEALTHY:
        why = f"unhealthy ({active.consecutive_failures} failures)"
    else:
        why = _unavailable_phrase(active)
    return Decision(
        DecisionAction.FAILOVER,
        code,
        f"active {source_name} {why}: failing over to {target}",
        source,
        target_id,
    )


def _instance_reasons(
    snapshot: ProxySnapshot, instance: Instance, backup_rank: int | None, next_target: str | None
) -> tuple[str, ...]:
    config = snapshot.config
    reasons: list[str] = []
    if instance.id == snapshot.redundancy.active_instance_id:
        reasons.append("active")
    if instance.health_status is HealthStatus.UNHEALTHY:
        reasons.append(
            f"unhealthy ({instance.consecutive_failures} consecutive failures, "
            f"threshold {config.unhealthy_threshold})"
        )
        if not config.enable_auto_recovery:
            reasons.append("auto recovery off: only a reported healthy status brings it back")
        elif instance.consecutive_successes:
            reasons.append(
                f"recovering ({instance.consecutive_successes} of "
                f"{config.healthy_threshold} consecutive successes)"
            )
    elif instance.health_status is HealthStatus.UNKNOWN:
        reasons.append("health unknown (no check result yet)")
    else:
        reasons.append(f"healthy ({instance.consecutive_successes} consecutive successes)")
        if instance.consecutive_failures:
            reasons.append(
                f"failing ({instance.consecutive_failures} of "
                f"{config.unhealthy_threshold} failures before unhealthy)"
            )
    if instance.admin_state is not AdminState.ENABLED:
        reasons.append(_unavailable_phrase(instance))
    if backup_rank is not None:
        reasons.append(f"eligible backup (rank {backup_rank})")
    if instance.id == next_target:
        reasons.append(f"next failover target ({config.failover_strategy.value} strategy)")
    if not is_eligible(instance):
        reasons.append("not eligible")
    return tuple(reasons)


def _pending_changes(snapshot: ProxySnapshot) -> list[str]:
    """Health changes under way (a healthy instance failing, an unhealthy one recovering), active
    first: what an operator must not miss when the evaluation still reads "healthy"."""
    config = snapshot.config
    active_id = snapshot.redundancy.active_instance_id
    ordered = sorted(in_preference_order(snapshot.instances), key=lambda i: i.id != active_id)
    pending: list[str] = []
    for instance in ordered:
        if instance.health_status is HealthStatus.HEALTHY and instance.consecutive_failures:
            pending.append(
                f"{instance.instance_name} failing ({instance.consecutive_failures} of "
                f"{config.unhealthy_threshold} failures)"
            )
        elif (
            instance.health_status is HealthStatus.UNHEALTHY
            and config.enable_auto_recovery
            and instance.consecutive_successes
        ):
            pending.append(
                f"{instance.instance_name} recovering ({instance.consecutive_successes} of "
                f"{config.healthy_threshold} successes)"
            )
    return pending


def explain(snapshot: ProxySnapshot, now: datetime) -> Explanation:
    """Why the active instance is active and why each other one is or is not eligible.

    Instances come in preference order with a 1-based ``preference_rank``; backups (eligible,
    not active) get a 1-based backup rank in the same order; the strategy's next target (should
    the active instance fail now) is named.
    """
    evaluation = evaluate(snapshot, now)
    active_id = snapshot.active.id if snapshot.active is not None else None
    next_target = select_target(snapshot.instances, snapshot.config.failover_strategy, active_id)
    explained: list[InstanceExplanation] = []
    backup_rank = 0
    for rank, instance in enumerate(in_preference_order(snapshot.instances), start=1):
        is_backup = is_eligible(instance, active_id)
        backup_rank += is_backup
        explained.append(
            InstanceExplanation(
                instance_id=instance.id,
                instance_name=instance.instance_name,
                is_active=instance.id == active_id,
                is_eligible=is_eligible(instance),
                preference_rank=rank,
                health_status=instance.health_status,
                admin_state=instance.admin_state,
                consecutive_failures=instance.consecutive_failures,
                consecutive_successes=instance.consecutive_successes,
                reasons=_instance_reasons(
                    snapshot,
                    instance,
                    backup_rank if is_backup else None,
                    next_target.id if next_target is not None else None,
                ),
            )
        )
    if snapshot.active is not None:
        summary = f"{snapshot.active.instance_name} is active. {evaluation.reason}"
    else:
        summary = evaluation.reason
    pending = _pending_changes(snapshot)
    if pending:
        summary += ". Pending: " + "; ".join(pending)
    return Explanation(
        proxy_id=snapshot.config.proxy_id,
        active_instance_id=active_id,
        summary=summary,
        strategy=snapshot.config.failover_strategy,
        unhealthy_threshold=snapshot.config.unhealthy_threshold,
        healthy_threshold=snapshot.config.healthy_threshold,
        instances=tuple(explained),
        evaluation=evaluation,
    )


def decision_holds(snapshot: ProxySnapshot, decision: Decision) -> bool:
    """Whether the engine's ``decision`` still holds on ``snapshot``, the state locked when it is
    applied (the compare-and-swap of an automatic switch; the decision was made on an older one).

    It holds when automatic failover is still on, the active instance is still the decision's
    source, the target still exists and is eligible, and: an activation still finds no active
    instance; a failback is still allowed (auto failback on, no manual switch open); a failover
    still moves away from an active instance that is not healthy-and-enabled. A decision to do
    nothing, or without a target, never holds.
    """
    if decision.action is DecisionAction.NONE or decision.target_instance_id is None:
        return False
    config = snapshot.config
    if not config.enable_auto_failover:
        return False
    active = snapshot.active
    active_id = active.id if active is not None else None
    if active_id != decision.source_instance_id:
        return False
    target = next((i for i in snapshot.instances if i.id == decision.target_instance_id), None)
    if target is None or not is_eligible(target, active_id):
        return False
    if decision.action is DecisionAction.ACTIVATE:
        return active is None
    if decision.action is DecisionAction.FAILBACK:
        return config.enable_auto_failback and snapshot.open_switch_event is None
    # FAILOVER: only away from an active instance that is (still) not healthy-and-enabled.
    return active is None or not (
        active.health_status is HealthStatus.HEALTHY and active.admin_state is AdminState.ENABLED
    )


@dataclass(frozen=True, slots=True)
class DeletionPlan:
    """How an instance's deletion goes. A backup is simply removed (``hands_over`` False); the
    active instance first hands its role to ``target_id`` (None: it was the proxy's last
    instance, the role passes to nobody), recorded as a completed switchover with ``reason``."""

    hands_over: bool
    target_id: str | None = None
    reason: str = ""


def plan_deletion(snapshot: ProxySnapshot, instance: Instance) -> DeletionPlan:
    """Plan deleting ``instance`` (one of the snapshot's): 409/009 when it is active while a
    switch is in progress, 409/008 when it is active and other instances remain but none is
    eligible. Deleting the last instance is allowed (decommissioning)."""
    active = snapshot.active
    if active is None or active.id != instance.id:
        return DeletionPlan(hands_over=False)
    _refuse_open_switch(snapshot)
    target = select_target(snapshot.instances, snapshot.config.failover_strategy, instance.id)
    is_last_instance = len(snapshot.instances) == 1
    if target is None and not is_last_instance:
        raise Conflict(
            f"Cannot delete active instance {instance.instance_name}: no other "
            "instance is eligible to take over",
            ErrorCode.NO_ELIGIBLE_TARGET,
            {"instanceId": instance.id},
        )
    # Decommissioning a proxy's last instance leaves it with no active instance; the hand-over
    # to nobody is still recorded and fenced (epoch bump) like any other.
    reason = f"Active instance {instance.instance_name} deleted" + (
        " (last instance: no active instance left)" if target is None else ""
    )
    return DeletionPlan(
        hands_over=True, target_id=target.id if target is not None else None, reason=reason
    )
