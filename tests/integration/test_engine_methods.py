"""The engine's side of the service: snapshots, applying decisions, stale and recovery events."""

from __future__ import annotations

from datetime import timedelta

import pytest

from proxy_failover.core import failover as core_failover
from proxy_failover.core.errors import Conflict, ErrorCode, InvalidInput, NotFound
from proxy_failover.core.model import (
    STALE_EVENT_SECONDS,
    CheckResult,
    Decision,
    DecisionAction,
    EventStatus,
    EventType,
    ReasonCode,
)
from proxy_failover.service import ProxyFailoverService
from tests.helpers.clock import FakeClock
from tests.helpers.scenario import ADMIN, OWNER, Recorder, activate, proxy_with


async def test_snapshot_is_one_consistent_view(service: ProxyFailoverService) -> None:
    made = await proxy_with(service, "p2", ["b", "a"])
    await service.create_failover_configuration("p1", OWNER, {})
    assert await service.list_proxy_ids() == ["p1", "p2"]
    event = await service.execute_failover("p2", ADMIN, None, made["b"].id)
    snapshot = await service.load_snapshot("p2")
    assert snapshot.config.proxy_id == "p2"
    assert [i.instance_name for i in snapshot.instances] == ["b", "a"]
    assert snapshot.redundancy.active_instance_id == made["b"].id
    assert snapshot.active is not None
    assert snapshot.active.id == made["b"].id
    assert snapshot.open_switch_event == event
    with pytest.raises(NotFound) as caught:
        await service.load_snapshot("nope")
    assert caught.value.code is ErrorCode.CONFIG_NOT_FOUND


async def test_engine_activation_is_recorded_completed_in_one_step(
    service: ProxyFailoverService, clock: FakeClock
) -> None:
    made = await proxy_with(service, "p1", ["a", "b"])
    recorder = Recorder()
    service.on_change = recorder
    detected_at = clock.now
    decision = core_failover.decide(await service.load_snapshot("p1"), clock.now)
    assert decision.action is DecisionAction.ACTIVATE
    clock.advance(0.25)
    event = await service.apply_decision("p1", decision, detected_at)
    assert event is not None
    assert event.status is EventStatus.COMPLETED
    assert event.triggered_by == "system"
    assert event.user_id == OWNER
    assert event.event_type is EventType.FAILOVER
    assert event.target_instance_id == made["a"].id
    assert event.duration_ms is not None
    assert 250 <= event.duration_ms < 300
    assert event.epoch == 1
    status = await service.get_redundancy_status("p1")
    assert status is not None
    assert status.active_instance_id == made["a"].id
    assert status.epoch == 1
    assert status.last_failover_reason == decision.reason
    assert recorder.types == ["redundancy.restored", "failover.completed"]
    # the same decision again no longer holds: the pointer moved
    assert await service.apply_decision("p1", decision, detected_at) is None


async def test_a_decision_that_no_longer_holds_changes_nothing(
    service: ProxyFailoverService, clock: FakeClock
) -> None:
    made = await proxy_with(service, "p1", ["a", "b", "c"])
    await activate(service, "p1", made["a"])
    await service.update_instance_health(made["a"].id, "unhealthy")
    decision = core_failover.decide(await service.load_snapshot("p1"), clock.now)
    assert decision.action is DecisionAction.FAILOVER
    assert decision.target_instance_id == made["b"].id
    before = await service.get_redundancy_status("p1")
    # the active instance recovered meanwhile
    await service.update_instance_health(made["a"].id, "healthy")
    assert await service.apply_decision("p1", decision, clock.now) is None
    # the target became unhealthy meanwhile
    await service.update_instance_health(made["a"].id, "unhealthy")
    await service.update_instance_health(made["b"].id, "unhealthy")
    assert await service.apply_decision("p1", decision, clock.now) is None
    # automatic failover switched off meanwhile
    await service.update_instance_health(made["b"].id, "healthy")
    await service.create_failover_configuration("p1", OWNER, {"enableAutoFailover": False})
    assert await service.apply_decision("p1", decision, clock.now) is None
    nothing = Decision(DecisionAction.NONE, ReasonCode.ACTIVE_HEALTHY, "fine", made["a"].id)
    assert await service.apply_decision("p1", nothing, clock.now) is None
    assert await service.apply_decision("nope", decision, clock.now) is None
    after = await service.get_redundancy_status("p1")
    assert after is not None
    assert before is not None
    assert (after.active_instance_id, after.epoch) == (before.active_instance_id, before.epoch)


async def test_automatic_failover_supersedes_an_open_manual_switch(
    service: ProxyFailoverService, clock: FakeClock
) -> None:
    made = await proxy_with(service, "p1", ["a", "b", "c"])
    await activate(service, "p1", made["a"])
    manual = await service.execute_failover("p1", ADMIN, made["a"].id, made["b"].id)
    await service.update_instance_health(made["b"].id, "unhealthy")
    decision = core_failover.decide(await service.load_snapshot("p1"), clock.now)
    assert decision.action is DecisionAction.FAILOVER
    recorder = Recorder()
    service.on_change = recorder
    event = await service.apply_decision("p1", decision, clock.now)
    assert event is not None
    assert event.target_instance_id == made["a"].id
    superseded = await service.get_event(manual.id)
    assert superseded.status is EventStatus.FAILED
    assert superseded.error_message == "superseded by automatic failover"
    assert recorder.types == ["failover.failed", "failover.completed"]
    snapshot = await service.load_snapshot("p1")
    assert snapshot.open_switch_event is None
    assert [i.instance_name for i in snapshot.instances if i.is_active] == ["a"]


async def test_failback_waits_while_a_switch_is_open(
    service: ProxyFailoverService, clock: FakeClock
) -> None:
    made = await proxy_with(
        service,
        "p1",
        ["a", "b", "c"],
        config={"enableAutoFailback": True, "failbackDelaySeconds": 0},
    )
    await activate(service, "p1", made["b"])
    clock.advance(1)
    decision = core_failover.decide(await service.load_snapshot("p1"), clock.now)
    assert decision.action is DecisionAction.FAILBACK
    await service.execute_failover("p1", ADMIN, made["b"].id, made["c"].id)
    assert await service.apply_decision("p1", decision, clock.now) is None
    snapshot = await service.load_snapshot("p1")
    assert snapshot.active is not None
    assert snapshot.active.id == made["c"].id


async def test_stale_switch_events_are_closed_as_failed(
    service: ProxyFailoverService, clock: FakeClock
) -> None:
    made = await proxy_with(service, "p1", ["a", "b"])
    stale = await service.execute_failover("p1", ADMIN, None, made["a"].id)
    recovery = await service.open_recovery_event(made["b"].id, "probe says down")
    assert recovery is not None
    clock.advance(STALE_EVENT_SECONDS - 1)
    assert await service.close_stale_events() == []
    clock.advance(2)
    recorder = Recorder()
    service.on_change = recorder
    (closed,) = await service.close_stale_events()
    assert closed.id == stale.id
    assert closed.status is EventStatus.FAILED
    assert closed.error_message is not None
    assert "timed out" in closed.error_message
    assert closed.duration_ms is not None
    assert closed.duration_ms >= STALE_EVENT_SECONDS * 1000
    assert recorder.types == ["failover.failed"]
    # recovery events are not closed by the timeout
    assert (await service.get_event(recovery.id)).status is EventStatus.IN_PROGRESS
    assert await service.close_stale_events() == []


async def test_recovery_events_open_once_and_do_not_block_switches(
    service: ProxyFailoverService, clock: FakeClock
) -> None:
    made = await proxy_with(service, "p1", ["a", "b"], healthy=["a"], unhealthy=["b"])
    event = await service.open_recovery_event(made["b"].id, "")
    assert event is not None
    assert event.event_type is EventType.RECOVERY
    assert event.status is EventStatus.IN_PROGRESS
    assert event.target_instance_id == made["b"].id
    assert event.reason == "Recovering instance b"
    assert await service.open_recovery_event(made["b"].id, "again") is None
    await service.execute_failover("p1", ADMIN, None, made["a"].id)  # not blocked (no 009)
    recorder = Recorder()
    service.on_change = recorder
    clock.advance(2)
    failed = await service.close_recovery_event(event.id, EventStatus.FAILED, "3 attempts spent")
    assert failed.status is EventStatus.FAILED
    assert failed.error_message == "3 attempts spent"
    assert failed.duration_ms is not None
    assert failed.duration_ms >= 2000
    assert recorder.types == ["instance.recovery_failed"]
    with pytest.raises(Conflict) as closed:
        await service.close_recovery_event(event.id, EventStatus.COMPLETED)
    assert closed.value.code is ErrorCode.EVENT_ALREADY_CLOSED
    with pytest.raises(InvalidInput):
        await service.close_recovery_event(event.id, EventStatus.IN_PROGRESS)


async def test_a_healthy_instance_closes_its_open_recovery_event(
    service: ProxyFailoverService,
) -> None:
    made = await proxy_with(
        service, "p1", ["a"], healthy=[], unhealthy=["a"], config={"healthyThreshold": 1}
    )
    event = await service.open_recovery_event(made["a"].id, "recovering")
    assert event is not None
    await service.record_check_result(made["a"].id, CheckResult(True))
    closed = await service.get_event(event.id)
    assert closed.status is EventStatus.COMPLETED
    # closed, not duplicated: one recovery event in the history
    assert [e.id for e in await service.get_failover_events("p1")] == [event.id]
    with pytest.raises(Conflict):
        await service.close_recovery_event(event.id, EventStatus.COMPLETED)


async def test_deleting_an_instance_closes_its_open_recovery_event(
    service: ProxyFailoverService,
) -> None:
    made = await proxy_with(service, "p1", ["a", "b"], healthy=["a"], unhealthy=["b"])
    event = await service.open_recovery_event(made["b"].id, "recovering")
    assert event is not None
    await service.delete_instance(made["b"].id, OWNER)
    closed = await service.get_event(event.id)
    assert closed.status is EventStatus.FAILED
    assert closed.error_message == "instance deleted"


async def test_recovery_events_are_only_for_instances_and_recovery_ids(
    service: ProxyFailoverService,
) -> None:
    made = await proxy_with(service, "p1", ["a"])
    with pytest.raises(NotFound) as missing:
        await service.open_recovery_event("00000000-0000-4000-8000-000000000000", "x")
    assert missing.value.code is ErrorCode.INSTANCE_NOT_FOUND
    switch = await service.execute_failover("p1", ADMIN, None, made["a"].id)
    with pytest.raises(NotFound) as wrong_type:
        await service.close_recovery_event(switch.id, EventStatus.FAILED)
    assert wrong_type.value.code is ErrorCode.EVENT_NOT_FOUND


async def test_open_events_older_than_the_window_ignore_young_ones(
    service: ProxyFailoverService, clock: FakeClock
) -> None:
    made = await proxy_with(service, "p1", ["a", "b"])
    await proxy_with(service, "p2", ["x"])
    first = await service.execute_failover("p1", ADMIN, None, made["a"].id)
    clock.advance(STALE_EVENT_SECONDS + 1)
    x = (await service.get_proxy_instances("p2"))[0]
    young = await service.execute_failover("p2", ADMIN, None, x.id)
    closed = await service.close_stale_events()
    assert [e.id for e in closed] == [first.id]
    assert (await service.get_event(young.id)).status is EventStatus.IN_PROGRESS
    assert young.created_at - first.created_at > timedelta(seconds=STALE_EVENT_SECONDS)
