"""A reported failure (or posted check result) that makes the active instance unhealthy fails over
in its own transaction, as ``serve`` runs the service (``fails_over_on_health_change``): one commit,
one listener call carrying both the health change and the switch, exactly one switch however the
engine's decision made on the older state races it; off for the bare library (SPEC §6)."""

from __future__ import annotations

import pytest

from proxy_failover.core.model import (
    CheckResult,
    Decision,
    DecisionAction,
    EventStatus,
    EventType,
    FailoverEvent,
    ReasonCode,
    ms_between,
)
from proxy_failover.service import ProxyFailoverService
from tests.helpers.scenario import ADMIN, Recorder, activate, proxy_with


@pytest.fixture
def serving(service: ProxyFailoverService) -> ProxyFailoverService:
    """The service as ``serve`` runs it."""
    service.fails_over_on_health_change = True
    return service


async def _automatic(service: ProxyFailoverService, proxy_id: str) -> list[FailoverEvent]:
    """The automatic switches of the proxy (the set-up's are manual), newest first."""
    return [e for e in await service.get_failover_events(proxy_id) if e.triggered_by == "system"]


async def _active(service: ProxyFailoverService, proxy_id: str) -> str | None:
    status = await service.get_redundancy_status(proxy_id)
    assert status is not None
    return status.active_instance_id


async def test_a_reported_failure_of_the_active_switches_in_the_reports_own_commit(
    serving: ProxyFailoverService,
) -> None:
    made = await proxy_with(serving, "p1", ["a", "b", "c"])
    await activate(serving, "p1", made["a"])
    recorder = Recorder()
    serving.on_change = recorder

    await serving.update_instance_health(made["a"].id, "unhealthy")

    assert await _active(serving, "p1") == made["b"].id
    [(proxy_id, notes)] = recorder.calls  # one commit told once, with both changes
    assert proxy_id == "p1"
    kinds = [n.type for n in notes]
    assert kinds.index("instance.unhealthy") < kinds.index("failover.completed")
    unhealthy = recorder.of_type("instance.unhealthy")[0]
    completed = recorder.of_type("failover.completed")[0]
    # Detected at the report's stamp, recorded at a later reading of the clock, once decided
    # (the fake clock steps a millisecond per reading): createdAt <= completedAt, durationMs the
    # difference; the stream's occurredAt of failover.completed is the event's completedAt.
    assert completed.occurred_at > unhealthy.occurred_at
    [event] = await _automatic(serving, "p1")
    assert event.created_at == unhealthy.occurred_at
    assert event.completed_at == completed.occurred_at
    assert event.duration_ms == ms_between(event.created_at, event.completed_at) >= 1
    assert (event.source_instance_id, event.target_instance_id) == (made["a"].id, made["b"].id)
    assert event.event_type is EventType.FAILOVER
    assert event.status is EventStatus.COMPLETED
    assert event.triggered_by == "system"
    assert event.epoch == completed.epoch == 2  # the set-up's activation was 1
    actives = [i.instance_name for i in await serving.get_proxy_instances("p1") if i.is_active]
    assert actives == ["b"]


async def test_a_repeated_report_of_an_already_failed_instance_switches_nothing_more(
    serving: ProxyFailoverService,
) -> None:
    made = await proxy_with(serving, "p1", ["a", "b", "c"])
    await activate(serving, "p1", made["a"])
    await serving.update_instance_health(made["a"].id, "unhealthy")
    await serving.update_instance_health(made["a"].id, "unhealthy")
    await serving.update_instance_health(made["c"].id, "unhealthy")  # a backup: no switch
    assert await _active(serving, "p1") == made["b"].id
    switches = await _automatic(serving, "p1")
    assert [e.target_instance_id for e in switches] == [made["b"].id]


@pytest.mark.parametrize(
    ("config", "healthy_backups"),
    [({"enableAutoFailover": False}, ["b"]), ({}, [])],
    ids=["auto-failover-off", "no-eligible-target"],
)
async def test_no_switch_where_the_engine_would_not_make_one(
    serving: ProxyFailoverService, config: dict[str, object], healthy_backups: list[str]
) -> None:
    made = await proxy_with(
        serving,
        "p1",
        ["a", "b"],
        healthy=["a", *healthy_backups],
        unhealthy=[] if healthy_backups else ["b"],
        config=config,
    )
    await activate(serving, "p1", made["a"])
    await serving.update_instance_health(made["a"].id, "unhealthy")
    assert await _active(serving, "p1") == made["a"].id
    assert await _automatic(serving, "p1") == []
    evaluation = await serving.evaluate_failover("p1")
    assert evaluation.reason_code in {ReasonCode.ACTIVE_UNHEALTHY, ReasonCode.NO_HEALTHY_TARGET}


async def test_the_bare_library_leaves_the_switch_to_an_engine(
    service: ProxyFailoverService,
) -> None:
    assert not service.fails_over_on_health_change
    made = await proxy_with(service, "p1", ["a", "b"])
    await activate(service, "p1", made["a"])
    await service.update_instance_health(made["a"].id, "unhealthy")
    assert await _active(service, "p1") == made["a"].id
    assert (await service.evaluate_failover("p1")).should_failover


async def test_failed_checks_reaching_the_threshold_switch_in_the_same_commit(
    serving: ProxyFailoverService,
) -> None:
    made = await proxy_with(serving, "p1", ["a", "b"], config={"unhealthyThreshold": 2})
    await activate(serving, "p1", made["a"])
    await serving.record_check_result(made["a"].id, CheckResult(False, error="refused"))
    assert await _active(serving, "p1") == made["a"].id  # one failure: below the threshold
    recorder = Recorder()
    serving.on_change = recorder
    await serving.record_check_result(made["a"].id, CheckResult(False, error="refused"))
    assert await _active(serving, "p1") == made["b"].id
    assert [n.type for _, notes in recorder.calls for n in notes if n.type.startswith("f")] == [
        "failover.completed"
    ]
    assert len(recorder.calls) == 1


async def test_the_engines_decision_on_the_older_state_finds_the_switch_made(
    serving: ProxyFailoverService,
) -> None:
    """Exactly once: the engine decided on the state before the report; applying it after the
    report's own switch finds the source no longer active and records nothing."""
    made = await proxy_with(serving, "p1", ["a", "b", "c"])
    await activate(serving, "p1", made["a"])
    stale = Decision(
        DecisionAction.FAILOVER, ReasonCode.ACTIVE_UNHEALTHY, "stale", made["a"].id, made["c"].id
    )
    await serving.update_instance_health(made["a"].id, "unhealthy")
    assert await serving.apply_decision("p1", stale, serving.clock()) is None
    switches = await _automatic(serving, "p1")
    assert [e.target_instance_id for e in switches] == [made["b"].id]


async def test_an_open_manual_switch_is_superseded_in_the_reports_commit(
    serving: ProxyFailoverService,
) -> None:
    made = await proxy_with(serving, "p1", ["a", "b", "c"])
    await activate(serving, "p1", made["a"])
    manual = await serving.execute_failover("p1", ADMIN, made["a"].id, made["c"].id, "planned")
    await serving.update_instance_health(made["c"].id, "unhealthy")
    assert await _active(serving, "p1") == made["a"].id  # a failover away from c, to a
    closed = await serving.get_event(manual.id)
    assert closed is not None
    assert closed.status is EventStatus.FAILED
    assert closed.error_message == "superseded by automatic failover"
