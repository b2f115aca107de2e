"""Evaluate, execute (compare-and-swap), complete exactly once, and the event history."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from proxy_failover.core.errors import Conflict, ErrorCode, InvalidInput, NotFound
from proxy_failover.core.model import EventStatus, EventType, ReasonCode
from proxy_failover.service import ProxyFailoverService
from tests.helpers.clock import FakeClock
from tests.helpers.scenario import ADMIN, OWNER, Recorder, activate, proxy_with


async def test_evaluate_proposes_activation_then_failover_away_from_an_unhealthy_active(
    service: ProxyFailoverService,
) -> None:
    made = await proxy_with(service, "p1", ["a", "b"])
    first = await service.evaluate_failover("p1", OWNER)
    assert first.should_failover
    assert first.reason_code is ReasonCode.NO_ACTIVE_INSTANCE
    assert (first.source_instance_id, first.target_instance_id) == (None, made["a"].id)
    await activate(service, "p1", made["a"])
    calm = await service.evaluate_failover("p1", OWNER)
    assert not calm.should_failover
    assert calm.reason_code is ReasonCode.ACTIVE_HEALTHY
    await service.update_instance_health(made["a"].id, "unhealthy")
    due = await service.evaluate_failover("p1")
    assert due.should_failover
    assert due.reason_code is ReasonCode.ACTIVE_UNHEALTHY
    assert (due.source_instance_id, due.target_instance_id) == (made["a"].id, made["b"].id)
    # evaluate changed nothing
    status = await service.get_redundancy_status("p1")
    assert status is not None
    assert status.active_instance_id == made["a"].id


async def test_execute_activates_records_the_event_and_moves_the_pointer(
    service: ProxyFailoverService,
) -> None:
    made = await proxy_with(service, "p1", ["a", "b"])
    recorder = Recorder()
    service.on_change = recorder
    event = await service.execute_failover("p1", ADMIN, None, made["a"].id)
    assert event.event_type is EventType.FAILOVER  # an activation
    assert event.status is EventStatus.IN_PROGRESS
    assert event.source_instance_id is None
    assert event.reason == "Manual failover"
    assert event.triggered_by == ADMIN
    assert event.epoch == 1
    assert event.start_time_ms == int(event.created_at.timestamp() * 1000)
    status = await service.get_redundancy_status("p1")
    assert status is not None
    assert status.active_instance_id == made["a"].id
    assert status.epoch == 1
    assert status.last_failover_at == event.created_at
    assert status.last_failover_reason == "Manual failover"
    assert not status.is_degraded
    assert status.backup_instance_ids == (made["b"].id,)
    actives = [i.instance_name for i in await service.get_proxy_instances("p1") if i.is_active]
    assert actives == ["a"]
    assert recorder.types == ["redundancy.restored", "failover.started"]
    assert recorder.of_type("failover.started")[0].epoch == 1
    assert await service.get_event(event.id) == event


async def test_execute_from_a_healthy_source_is_a_switchover(
    service: ProxyFailoverService,
) -> None:
    made = await proxy_with(service, "p1", ["a", "b"])
    await activate(service, "p1", made["a"])
    event = await service.execute_failover("p1", ADMIN, made["a"].id, made["b"].id, "maintenance")
    assert event.event_type is EventType.SWITCHOVER
    assert event.reason == "maintenance"
    assert event.epoch == 2
    actives = [i.instance_name for i in await service.get_proxy_instances("p1") if i.is_active]
    assert actives == ["b"]


async def test_execute_checks_in_spec_order_and_writes_nothing_on_refusal(
    service: ProxyFailoverService,
) -> None:
    made = await proxy_with(service, "p1", ["a", "b", "c"], healthy=["a", "b"], unhealthy=["c"])
    await activate(service, "p1", made["a"])
    before = await service.get_redundancy_status("p1")
    events_before = await service.get_failover_events("p1")

    async def refused(source: str | None, target: str, proxy: str = "p1") -> ErrorCode:
        with pytest.raises((Conflict, NotFound)) as caught:
            await service.execute_failover(proxy, ADMIN, source, target)
        return caught.value.code

    assert await refused(made["a"].id, made["b"].id, "nope") is ErrorCode.CONFIG_NOT_FOUND
    assert await refused(made["a"].id, "not-a-uuid") is ErrorCode.INSTANCE_NOT_FOUND
    # an instance of another proxy is 011 "other proxy" (SPEC §7), not 004
    other = await service.register_proxy_instance("p2", OWNER, {"instanceName": "x"})
    assert await refused(made["a"].id, other.id) is ErrorCode.TARGET_NOT_ELIGIBLE
    with pytest.raises(Conflict) as caught:
        await service.execute_failover("p1", ADMIN, made["a"].id, other.id)
    assert caught.value.details["reason"] == "other proxy"
    assert await refused(made["a"].id, made["c"].id) is ErrorCode.TARGET_NOT_ELIGIBLE
    assert await refused(made["a"].id, made["a"].id) is ErrorCode.TARGET_NOT_ELIGIBLE
    # 011 before 010: an ineligible target with a wrong source is still 011
    assert await refused(made["b"].id, made["c"].id) is ErrorCode.TARGET_NOT_ELIGIBLE
    assert await refused(made["b"].id, made["b"].id) is ErrorCode.TARGET_NOT_ELIGIBLE
    assert await refused(None, made["b"].id) is ErrorCode.SOURCE_NOT_ACTIVE
    assert await service.get_redundancy_status("p1") == before
    assert await service.get_failover_events("p1") == events_before
    open_event = await service.execute_failover("p1", ADMIN, made["a"].id, made["b"].id)
    # 010 before 009
    assert await refused(made["a"].id, made["b"].id) is ErrorCode.SOURCE_NOT_ACTIVE
    await service.update_instance_health(made["c"].id, "healthy")
    assert await refused(made["b"].id, made["c"].id) is ErrorCode.FAILOVER_IN_PROGRESS
    await service.complete_failover_event(open_event.id, "completed")
    await service.execute_failover("p1", ADMIN, made["b"].id, made["c"].id)


async def test_execute_with_missing_data_is_invalid_input(
    service: ProxyFailoverService,
) -> None:
    cases: list[tuple[Any, Any, Any, Any, Any]] = [
        ("", ADMIN, None, "x", None),
        ("p1", "", None, "x", None),
        ("p1", ADMIN, None, "", None),
        ("p1", ADMIN, None, None, None),
        ("p1", ADMIN, 5, "x", None),
        ("p1", ADMIN, None, "x", 7),
        ("p1", ADMIN, None, "x", "r" * 1001),  # core.limits.TEXT, as the API says
    ]
    for proxy_id, user_id, source, target, reason in cases:
        with pytest.raises(InvalidInput) as caught:
            await service.execute_failover(proxy_id, user_id, source, target, reason)
        assert caught.value.code is ErrorCode.INVALID_INPUT


async def test_complete_closes_exactly_once(
    service: ProxyFailoverService, clock: FakeClock
) -> None:
    made = await proxy_with(service, "p1", ["a", "b"])
    event = await service.execute_failover("p1", ADMIN, None, made["a"].id)
    recorder = Recorder()
    service.on_change = recorder
    clock.advance(1.5)
    done = await service.complete_failover_event(event.id, "completed")
    assert done.status is EventStatus.COMPLETED
    assert done.completed_at is not None
    assert done.duration_ms is not None
    assert 1500 <= done.duration_ms < 1600  # defaults to the time since the start
    assert recorder.types == ["failover.completed"]
    for status in ("completed", "failed"):
        with pytest.raises(Conflict) as caught:
            await service.complete_failover_event(event.id, status)
        assert caught.value.code is ErrorCode.EVENT_ALREADY_CLOSED
    assert await service.get_event(event.id) == done


async def test_completing_as_failed_keeps_the_pointer_where_execute_put_it(
    service: ProxyFailoverService,
) -> None:
    made = await proxy_with(service, "p1", ["a", "b"])
    await activate(service, "p1", made["a"])
    event = await service.execute_failover("p1", ADMIN, made["a"].id, made["b"].id)
    recorder = Recorder()
    service.on_change = recorder
    failed = await service.complete_failover_event(event.id, "failed", "relay refused", 1500)
    assert failed.status is EventStatus.FAILED
    assert failed.error_message == "relay refused"
    assert failed.duration_ms == 1500
    assert recorder.types == ["failover.failed"]
    status = await service.get_redundancy_status("p1")
    assert status is not None
    assert status.active_instance_id == made["b"].id


async def test_complete_with_invalid_data_changes_nothing(
    service: ProxyFailoverService,
) -> None:
    made = await proxy_with(service, "p1", ["a"])
    event = await service.execute_failover("p1", ADMIN, None, made["a"].id)
    cases: list[tuple[Any, Any, Any]] = [
        ("done", None, None),
        ("pending", None, None),
        ("completed", None, -1),
        ("completed", None, True),
        ("failed", 3, None),
        # the API's limits, from core.limits, hold for library callers too
        ("completed", None, 2**31),
        ("failed", "x" * 1001, None),
    ]
    for status, error_message, duration_ms in cases:
        with pytest.raises(InvalidInput) as caught:
            await service.complete_failover_event(event.id, status, error_message, duration_ms)
        assert caught.value.code is ErrorCode.INVALID_INPUT
    assert (await service.get_event(event.id)).status is EventStatus.IN_PROGRESS


async def test_events_are_newest_first_with_filters(
    service: ProxyFailoverService, clock: FakeClock
) -> None:
    made = await proxy_with(service, "p1", ["a", "b"])
    first = await service.execute_failover("p1", ADMIN, None, made["a"].id)
    await service.complete_failover_event(first.id, "completed")
    clock.advance(10)
    second = await service.execute_failover("p1", ADMIN, made["a"].id, made["b"].id)
    await service.complete_failover_event(second.id, "failed", "nope")
    clock.advance(10)
    third = await service.execute_failover("p1", ADMIN, made["b"].id, made["a"].id)
    ids = [e.id for e in await service.get_failover_events("p1")]
    assert ids == [third.id, second.id, first.id]
    assert [e.id for e in await service.get_failover_events("p1", 2)] == [third.id, second.id]
    failed = await service.get_failover_events("p1", status=EventStatus.FAILED)
    assert [e.id for e in failed] == [second.id]
    switchovers = await service.get_failover_events("p1", event_type=EventType.SWITCHOVER)
    assert [e.id for e in switchovers] == [third.id, second.id]
    earlier = await service.get_failover_events(
        "p1", before=second.created_at + timedelta(microseconds=1)
    )
    assert [e.id for e in earlier] == [second.id, first.id]
    naive = (second.created_at + timedelta(microseconds=1)).replace(tzinfo=None)
    assert [e.id for e in await service.get_failover_events("p1", before=naive)] == [
        second.id,
        first.id,
    ]
    for limit in (0, 1001, -5):
        with pytest.raises(InvalidInput):
            await service.get_failover_events("p1", limit)
    with pytest.raises(InvalidInput):
        await service.get_failover_events("p1", status="sideways")  # type: ignore[arg-type]
