"""Reported health, probe/check results through the state machine, metric samples."""

from __future__ import annotations

from typing import Any

import pytest

from proxy_failover.core.errors import ErrorCode, InvalidInput, NotFound
from proxy_failover.core.model import (
    CheckResult,
    EventStatus,
    EventType,
    HealthStatus,
)
from proxy_failover.service import ProxyFailoverService
from tests.helpers.clock import FakeClock
from tests.helpers.scenario import OWNER, Recorder, activate, proxy_with


async def test_reported_status_holds_at_once_and_moves_the_counters(
    service: ProxyFailoverService,
) -> None:
    made = await proxy_with(service, "p1", ["a"], healthy=[])
    instance = made["a"]
    unhealthy = await service.update_instance_health(instance.id, "unhealthy")
    assert unhealthy.health_status is HealthStatus.UNHEALTHY
    assert (unhealthy.consecutive_failures, unhealthy.consecutive_successes) == (1, 0)
    assert unhealthy.last_health_check is not None
    assert unhealthy.status_changed_at is not None
    healthy = await service.update_instance_health(instance.id, "healthy")
    assert healthy.health_status is HealthStatus.HEALTHY
    assert (healthy.consecutive_failures, healthy.consecutive_successes) == (0, 1)
    again = await service.update_instance_health(instance.id, "healthy")
    assert again.status_changed_at == healthy.status_changed_at  # no change, no new timestamp
    unknown = await service.update_instance_health(instance.id, "unknown")
    assert unknown.health_status is HealthStatus.UNKNOWN
    assert (unknown.consecutive_failures, unknown.consecutive_successes) == (0, 0)
    assert await service.get_instance(instance.id) == unknown


async def test_reported_health_recomputes_redundancy_and_notifies_transitions(
    service: ProxyFailoverService,
) -> None:
    made = await proxy_with(service, "p1", ["a", "b"])
    await activate(service, "p1", made["a"])
    recorder = Recorder()
    service.on_change = recorder
    await service.update_instance_health(made["b"].id, "unhealthy")
    status = await service.get_redundancy_status("p1")
    assert status is not None
    assert (status.healthy_instances, status.unhealthy_instances) == (1, 1)
    assert status.is_degraded
    assert status.backup_instance_ids == ()
    assert recorder.types == ["redundancy.degraded", "instance.unhealthy"]
    (note,) = recorder.of_type("instance.unhealthy")
    assert note.proxy_id == "p1"
    assert note.data["instanceId"] == made["b"].id
    assert note.data["previousStatus"] == "healthy"
    recorder.clear()
    await service.update_instance_health(made["b"].id, "healthy")
    assert recorder.types == ["redundancy.restored", "instance.healthy"]
    status = await service.get_redundancy_status("p1")
    assert status is not None
    assert not status.is_degraded
    assert status.backup_instance_ids == (made["b"].id,)
    # a reported return to healthy records no event
    assert [e.event_type for e in await service.get_failover_events("p1")] == [EventType.FAILOVER]


async def test_health_report_with_metrics_stores_a_sample(service: ProxyFailoverService) -> None:
    made = await proxy_with(service, "p1", ["a"], healthy=[])
    after = await service.update_instance_health(
        made["a"].id,
        "healthy",
        {"cpuPercent": 45, "memoryPercent": 60, "connectionCount": 7, "errorRate": 0.25},
    )
    assert after.active_connections == 7
    assert after.error_rate == 0.25
    (sample,) = await service.get_instance_metrics(made["a"].id)
    assert sample.sample.cpu_percent == 45
    assert sample.sample.memory_percent == 60
    assert sample.proxy_id == "p1"
    assert sample.recorded_at.tzinfo is not None
    # empty or absent metrics store nothing
    await service.update_instance_health(made["a"].id, "healthy", {})
    await service.update_instance_health(made["a"].id, "healthy", None)
    assert len(await service.get_instance_metrics(made["a"].id)) == 1


async def test_invalid_health_reports_change_nothing(service: ProxyFailoverService) -> None:
    made = await proxy_with(service, "p1", ["a"], healthy=[])
    cases: list[tuple[Any, Any, ErrorCode]] = [
        ("sick", None, ErrorCode.INVALID_HEALTH_STATUS),
        (None, None, ErrorCode.INVALID_HEALTH_STATUS),
        ("healthy", {"cpuPercent": 101}, ErrorCode.INVALID_METRICS),
        ("healthy", {"bogus": 1}, ErrorCode.INVALID_METRICS),
        ("healthy", {"connectionCount": -1}, ErrorCode.INVALID_METRICS),
    ]
    for status, metrics, code in cases:
        with pytest.raises(InvalidInput) as caught:
            await service.update_instance_health(made["a"].id, status, metrics)
        assert caught.value.code is code, (status, metrics)
    assert await service.get_instance(made["a"].id) == made["a"]
    assert await service.get_instance_metrics(made["a"].id) == []


async def test_checks_flip_state_exactly_at_the_thresholds(
    service: ProxyFailoverService,
) -> None:
    made = await proxy_with(
        service, "p1", ["a"], healthy=[], config={"unhealthyThreshold": 3, "healthyThreshold": 2}
    )
    instance_id = made["a"].id
    first = await service.record_check_result(instance_id, CheckResult(True, 10.0))
    assert first.health_status is HealthStatus.HEALTHY  # unknown -> healthy on the first success
    for expected in (HealthStatus.HEALTHY, HealthStatus.HEALTHY, HealthStatus.UNHEALTHY):
        after = await service.record_check_result(
            instance_id, CheckResult(False, 30.0, "connection refused")
        )
        assert after.health_status is expected
    assert after.consecutive_failures == 3
    assert after.last_error == "connection refused"
    assert after.last_latency_ms == 30.0
    assert (after.total_requests, after.successful_requests, after.failed_requests) == (4, 1, 3)
    assert after.error_rate == pytest.approx(0.75)
    assert after.average_latency_ms == pytest.approx(25.0)
    still = await service.record_check_result(instance_id, CheckResult(True, 10.0))
    assert still.health_status is HealthStatus.UNHEALTHY
    assert still.last_error is None
    back = await service.record_check_result(instance_id, CheckResult(True, 10.0))
    assert back.health_status is HealthStatus.HEALTHY
    assert back.status_changed_at is not None
    assert after.status_changed_at is not None
    assert back.status_changed_at > after.status_changed_at


async def test_recovery_by_checks_is_recorded_as_a_completed_recovery_event(
    service: ProxyFailoverService,
) -> None:
    made = await proxy_with(service, "p1", ["a"], healthy=[], unhealthy=["a"])
    recorder = Recorder()
    service.on_change = recorder
    instance_id = made["a"].id
    await service.record_check_result(instance_id, CheckResult(True))
    await service.record_check_result(instance_id, CheckResult(True))
    (event,) = await service.get_failover_events("p1")
    assert event.event_type is EventType.RECOVERY
    assert event.status is EventStatus.COMPLETED
    assert event.target_instance_id == instance_id
    assert event.triggered_by == "system"
    assert "instance.healthy" in recorder.types


async def test_without_auto_recovery_checks_never_heal(service: ProxyFailoverService) -> None:
    made = await proxy_with(
        service,
        "p1",
        ["a"],
        healthy=[],
        unhealthy=["a"],
        config={"enableAutoRecovery": False, "healthyThreshold": 1},
    )
    for _ in range(3):
        after = await service.record_check_result(made["a"].id, CheckResult(True))
    assert after.health_status is HealthStatus.UNHEALTHY
    healed = await service.update_instance_health(made["a"].id, "healthy")
    assert healed.health_status is HealthStatus.HEALTHY


async def test_checks_of_an_instance_in_maintenance_are_ignored(
    service: ProxyFailoverService,
) -> None:
    made = await proxy_with(service, "p1", ["a"], healthy=[])
    maintained = await service.update_instance(made["a"].id, OWNER, {"adminState": "maintenance"})
    after = await service.record_check_result(made["a"].id, CheckResult(True))
    assert after == maintained
    assert after.health_status is HealthStatus.UNKNOWN


async def test_reports_for_an_instance_in_maintenance_keep_it_unknown(
    service: ProxyFailoverService,
) -> None:
    made = await proxy_with(service, "p1", ["a"], healthy=[])
    await service.update_instance(made["a"].id, OWNER, {"adminState": "maintenance"})
    after = await service.update_instance_health(made["a"].id, "healthy", {"cpuPercent": 5})
    assert after.health_status is HealthStatus.UNKNOWN
    assert after.last_health_check is not None
    assert len(await service.get_instance_metrics(made["a"].id)) == 1


async def test_metric_samples_overwrite_latency_and_error_rate(
    service: ProxyFailoverService, clock: FakeClock
) -> None:
    made = await proxy_with(service, "p1", ["a"])
    instance_id = made["a"].id
    await service.record_check_result(instance_id, CheckResult(True, 100.0))
    first = await service.record_instance_metrics(
        instance_id, "p1", OWNER, {"averageLatencyMs": 5, "errorRate": 0.5, "connectionCount": 3}
    )
    clock.advance(1)
    second = await service.record_instance_metrics(instance_id, "p1", OWNER, {"cpu_percent": 9.5})
    instance = await service.get_instance(instance_id)
    assert instance.average_latency_ms == 5
    assert instance.error_rate == 0.5
    assert instance.active_connections == 3
    samples = await service.get_instance_metrics(instance_id)
    assert [s.id for s in samples] == [second.id, first.id]  # newest first
    assert [s.id for s in await service.get_instance_metrics(instance_id, limit=1)] == [second.id]
    assert second.sample.cpu_percent == 9.5
    assert second.user_id == OWNER


async def test_metric_samples_need_data_and_the_right_proxy(
    service: ProxyFailoverService,
) -> None:
    made = await proxy_with(service, "p1", ["a"])
    for metrics in ({}, {"cpuPercent": None}, {"throughputMbps": -1}):
        with pytest.raises(InvalidInput) as caught:
            await service.record_instance_metrics(made["a"].id, "p1", OWNER, metrics)
        assert caught.value.code is ErrorCode.INVALID_METRICS
    with pytest.raises(NotFound) as missing:
        await service.record_instance_metrics(made["a"].id, "other-proxy", OWNER, {"cpuPercent": 1})
    assert missing.value.code is ErrorCode.INSTANCE_NOT_FOUND
    for limit in (0, 1001, True):
        with pytest.raises(InvalidInput):
            await service.get_instance_metrics(made["a"].id, limit=limit)
    assert await service.get_instance_metrics(made["a"].id) == []


async def test_a_repeated_health_report_wakes_no_listener_but_a_status_change_does(
    service: ProxyFailoverService,
) -> None:
    made = await proxy_with(service, "p1", ["a", "b"])
    recorder = Recorder()
    service.on_change = recorder
    repeated = await service.update_instance_health(made["b"].id, "healthy")
    assert repeated.consecutive_successes > made["b"].consecutive_successes  # it was stored
    assert recorder.calls == []  # nothing a decision depends on moved
    await service.update_instance_health(made["b"].id, "unhealthy")
    assert [proxy for proxy, _ in recorder.calls] == ["p1"]
    await service.update_instance(made["a"].id, OWNER, {"priority": 7})
    assert len(recorder.calls) == 2  # other changes still wake listeners without notifications


@pytest.mark.parametrize("rise", [1, 2])
async def test_a_probe_made_before_a_report_cannot_undo_it(
    service: ProxyFailoverService, clock: FakeClock, rise: int
) -> None:
    """A probe in flight when an operator reports the instance unhealthy describes the world
    before the report: recorded after it, it must not count toward recovery (with rise 1 it would
    have undone the report before the engine could act on it)."""
    made = await proxy_with(service, "p1", ["a"], config={"healthyThreshold": rise})
    probe_started = clock.now
    clock.advance(0.05)
    reported = await service.update_instance_health(made["a"].id, "unhealthy")
    clock.advance(0.05)
    stale = CheckResult(True, 3.0, observed_at=probe_started)
    after = await service.record_check_result(made["a"].id, stale)
    assert after == reported  # discarded whole: no counter moved
    fresh = CheckResult(True, 3.0, observed_at=clock.now)
    after = await service.record_check_result(made["a"].id, fresh)
    assert after.consecutive_successes == 1
    assert after.total_requests == reported.total_requests + 1
    assert after.health_status.value == ("healthy" if rise == 1 else "unhealthy")
    # the engine's path (routine successes in bulk) applies the same rule
    before_bulk = await service.get_instance(made["a"].id)
    (health,) = await service.record_probe_results([(made["a"].id, stale)])
    assert health == before_bulk.health
    assert await service.get_instance(made["a"].id) == before_bulk
