"""Configuration upsert and ownership, instance registration, patch, delete, listing."""

from __future__ import annotations

from typing import Any

import pytest

from proxy_failover.bootstrap import open_service
from proxy_failover.core.errors import Conflict, ErrorCode, FailoverError, InvalidInput, NotFound
from proxy_failover.core.model import (
    AdminState,
    EventStatus,
    EventType,
    FailoverStrategy,
    HealthCheckType,
    HealthStatus,
    RedundancyLevel,
)
from proxy_failover.service import ProxyFailoverService
from tests.helpers.scenario import ADMIN, OWNER, Recorder, activate, proxy_with


async def test_new_config_gets_defaults_and_the_creator_as_owner(
    service: ProxyFailoverService,
) -> None:
    config = await service.create_failover_configuration(
        "proxy-123", OWNER, {"failoverStrategy": "round_robin", "unhealthyThreshold": 4}
    )
    assert config.proxy_id == "proxy-123"
    assert config.user_id == OWNER
    assert config.failover_strategy is FailoverStrategy.ROUND_ROBIN
    assert config.unhealthy_threshold == 4
    assert config.healthy_threshold == 2
    assert config.health_check_interval_seconds == 30
    assert config.id
    assert config.created_at is not None
    assert config.created_at.tzinfo is not None
    assert await service.get_failover_configuration("proxy-123") == config
    status = await service.get_redundancy_status("proxy-123")
    assert status is not None
    assert status.redundancy_level is RedundancyLevel.NONE
    assert status.is_degraded


async def test_config_update_changes_only_given_fields_and_keeps_the_owner(
    service: ProxyFailoverService,
) -> None:
    first = await service.create_failover_configuration(
        "p1",
        OWNER,
        {"unhealthy_threshold": 5, "healthCheck": {"type": "tcp", "path": "/ready"}},
    )
    second = await service.create_failover_configuration(
        "p1", "someone-else", {"healthyThreshold": 7, "healthCheck": {"path": "/live"}}
    )
    assert second.user_id == OWNER
    assert second.id == first.id
    assert second.created_at == first.created_at
    assert second.unhealthy_threshold == 5
    assert second.healthy_threshold == 7
    assert second.health_check.type is HealthCheckType.TCP
    assert second.health_check.path == "/live"
    assert first.updated_at is not None
    assert second.updated_at is not None
    assert second.updated_at > first.updated_at
    assert await service.get_failover_configuration("p1") == second


INVALID_CONFIGS: list[tuple[str, str, Any, ErrorCode]] = [
    ("p1", OWNER, {"failoverStrategy": "fastest"}, ErrorCode.INVALID_STRATEGY),
    ("p1", OWNER, {"unhealthyThreshold": 0}, ErrorCode.INVALID_INPUT),
    ("p1", OWNER, {"noSuchField": 1}, ErrorCode.INVALID_INPUT),
    ("p1", OWNER, "not an object", ErrorCode.INVALID_INPUT),
    ("failover", OWNER, {}, ErrorCode.INVALID_INPUT),
    ("bad id!", OWNER, {}, ErrorCode.INVALID_INPUT),
    ("p1", "", {}, ErrorCode.INVALID_INPUT),
]


async def test_invalid_config_is_refused_and_nothing_is_written(
    service: ProxyFailoverService,
) -> None:
    for proxy_id, user_id, config, code in INVALID_CONFIGS:
        with pytest.raises(InvalidInput) as caught:
            await service.create_failover_configuration(proxy_id, user_id, config)
        assert caught.value.code is code, (proxy_id, user_id, config)
    assert await service.list_proxies() == []


async def test_invalid_partial_update_keeps_the_stored_config(
    service: ProxyFailoverService,
) -> None:
    before = await service.create_failover_configuration("p1", OWNER, {})
    with pytest.raises(InvalidInput):
        await service.create_failover_configuration("p1", OWNER, {"healthCheckTimeoutSeconds": 99})
    assert await service.get_failover_configuration("p1") == before


async def test_unknown_proxy_reads_as_none_or_empty(service: ProxyFailoverService) -> None:
    assert await service.get_failover_configuration("nope") is None
    assert await service.get_redundancy_status("nope") is None
    assert await service.get_proxy_instances("nope") == []
    assert await service.get_failover_events("nope") == []


async def test_registering_for_an_unknown_proxy_creates_its_default_config(
    service: ProxyFailoverService,
) -> None:
    instance = await service.register_proxy_instance(
        "fresh", "registrant", {"instanceName": "edge-a", "endpoint": "127.0.0.1:9000"}
    )
    config = await service.get_failover_configuration("fresh")
    assert config is not None
    assert config.user_id == "registrant"
    assert config.failover_strategy is FailoverStrategy.PRIORITY
    assert instance.health_status is HealthStatus.UNKNOWN
    assert instance.endpoint == "127.0.0.1:9000"
    assert not instance.is_active
    status = await service.get_redundancy_status("fresh")
    assert status is not None
    assert status.total_instances == 1
    assert status.redundancy_level is RedundancyLevel.SINGLE
    # a later registrant does not take the proxy over
    await service.register_proxy_instance("fresh", "other", {"instanceName": "edge-b"})
    config = await service.get_failover_configuration("fresh")
    assert config is not None
    assert config.user_id == "registrant"


async def test_instance_names_are_unique_within_a_proxy(service: ProxyFailoverService) -> None:
    await service.register_proxy_instance("p1", OWNER, {"instanceName": "edge-a"})
    with pytest.raises(Conflict) as caught:
        await service.register_proxy_instance("p1", OWNER, {"instance_name": "edge-a"})
    assert caught.value.code is ErrorCode.DUPLICATE_INSTANCE_NAME
    assert caught.value.status_code == 409
    assert len(await service.get_proxy_instances("p1")) == 1
    # the same name in another proxy is fine
    await service.register_proxy_instance("p2", OWNER, {"instanceName": "edge-a"})


async def test_invalid_instance_data_is_refused_before_any_write(
    service: ProxyFailoverService,
) -> None:
    for data in (
        {},
        {"instanceName": ""},
        {"instanceName": "a", "weight": 5000},
        {"instanceName": "a", "x": 1},
    ):
        with pytest.raises(InvalidInput) as caught:
            await service.register_proxy_instance("p1", OWNER, data)
        assert caught.value.code is ErrorCode.INVALID_INPUT, data
    assert await service.get_failover_configuration("p1") is None


async def test_instances_are_listed_in_preference_order(service: ProxyFailoverService) -> None:
    await service.register_proxy_instance("p1", OWNER, {"instanceName": "c", "priority": 200})
    await service.register_proxy_instance("p1", OWNER, {"instanceName": "a", "priority": 100})
    await service.register_proxy_instance(
        "p1", OWNER, {"instanceName": "b", "priority": 100, "weight": 500}
    )
    await service.register_proxy_instance("p1", OWNER, {"instanceName": "d", "priority": 100})
    names = [i.instance_name for i in await service.get_proxy_instances("p1")]
    assert names == ["b", "a", "d", "c"]


async def test_list_proxies_filters_by_owner(service: ProxyFailoverService) -> None:
    await service.create_failover_configuration("mine", OWNER, {})
    await service.create_failover_configuration("theirs", "other", {})
    everything = await service.list_proxies()
    assert [(p.proxy_id, p.user_id) for p in everything] == [
        ("mine", OWNER),
        ("theirs", "other"),
    ]
    mine = await service.list_proxies(OWNER)
    assert [p.proxy_id for p in mine] == ["mine"]
    assert mine[0].redundancy.proxy_id == "mine"


@pytest.mark.parametrize("instance_id", ["not-a-uuid", "00000000-0000-4000-8000-000000000000"])
async def test_missing_or_malformed_ids_find_nothing(sqlite_url: str, instance_id: str) -> None:
    async with open_service(sqlite_url, migrate=False) as service:
        await _assert_nothing_found(service, instance_id)


async def test_missing_ids_find_nothing_on_every_database(service: ProxyFailoverService) -> None:
    await _assert_nothing_found(service, "00000000-0000-4000-8000-000000000000")


async def _assert_nothing_found(service: ProxyFailoverService, instance_id: str) -> None:
    calls = [
        service.get_instance(instance_id),
        service.update_instance_health(instance_id, "healthy"),
        service.update_instance(instance_id, OWNER, {"priority": 1}),
        service.delete_instance(instance_id, OWNER),
        service.get_instance_metrics(instance_id),
        service.record_instance_metrics(instance_id, "p1", OWNER, {"cpuPercent": 1}),
    ]
    for call in calls:
        with pytest.raises(NotFound) as caught:
            await call
        assert caught.value.code is ErrorCode.INSTANCE_NOT_FOUND
    for event_call in (
        service.get_event(instance_id),
        service.complete_failover_event(instance_id, "completed"),
        service.close_recovery_event(instance_id, EventStatus.FAILED),
    ):
        with pytest.raises(NotFound) as caught_event:
            await event_call
        assert caught_event.value.code is ErrorCode.EVENT_NOT_FOUND


async def test_patch_changes_order_and_maintenance_resets_health(
    service: ProxyFailoverService,
) -> None:
    made = await proxy_with(service, "p1", ["a", "b"])
    recorder = Recorder()
    service.on_change = recorder
    moved = await service.update_instance(
        made["b"].id, OWNER, {"priority": 1, "metadata": {"k": 1}}
    )
    assert moved.priority == 1
    assert moved.metadata == {"k": 1}
    assert [i.instance_name for i in await service.get_proxy_instances("p1")] == ["b", "a"]
    maintained = await service.update_instance(made["a"].id, OWNER, {"adminState": "maintenance"})
    assert maintained.admin_state is AdminState.MAINTENANCE
    assert maintained.health_status is HealthStatus.UNKNOWN
    stored = await service.get_instance(made["a"].id)
    assert stored.health_status is HealthStatus.UNKNOWN
    status = await service.get_redundancy_status("p1")
    assert status is not None
    assert status.healthy_instances == 1
    assert [call[0] for call in recorder.calls] == ["p1", "p1"]  # engine wake-ups
    with pytest.raises(InvalidInput):
        await service.update_instance(made["a"].id, OWNER, {"adminState": "broken"})


async def test_deleting_a_backup_recomputes_redundancy(service: ProxyFailoverService) -> None:
    made = await proxy_with(service, "p1", ["a", "b", "c"])
    await activate(service, "p1", made["a"])
    await service.record_instance_metrics(made["c"].id, "p1", OWNER, {"cpuPercent": 3})
    await service.delete_instance(made["c"].id, OWNER)
    status = await service.get_redundancy_status("p1")
    assert status is not None
    assert status.total_instances == 2
    assert status.redundancy_level is RedundancyLevel.DUAL
    assert status.backup_instance_ids == (made["b"].id,)
    assert status.active_instance_id == made["a"].id
    with pytest.raises(NotFound):
        await service.get_instance(made["c"].id)


async def test_deleting_the_active_instance_hands_over_first(
    service: ProxyFailoverService,
) -> None:
    made = await proxy_with(service, "p1", ["a", "b"])
    await activate(service, "p1", made["a"])
    before = await service.get_redundancy_status("p1")
    assert before is not None
    recorder = Recorder()
    service.on_change = recorder
    await service.delete_instance(made["a"].id, ADMIN)
    after = await service.get_redundancy_status("p1")
    assert after is not None
    assert after.active_instance_id == made["b"].id
    assert after.epoch == before.epoch + 1
    assert after.last_failover_reason == "Active instance a deleted"
    (event, *_) = await service.get_failover_events("p1")
    assert event.event_type is EventType.SWITCHOVER
    assert event.status is EventStatus.COMPLETED
    assert (event.source_instance_id, event.target_instance_id) == (made["a"].id, made["b"].id)
    assert event.epoch == after.epoch
    assert recorder.types == ["failover.completed"]
    instances = await service.get_proxy_instances("p1")
    assert [(i.instance_name, i.is_active) for i in instances] == [("b", True)]


async def test_deleting_the_active_instance_needs_an_eligible_successor(
    service: ProxyFailoverService,
) -> None:
    made = await proxy_with(service, "p1", ["a", "b"], healthy=["a"], unhealthy=["b"])
    await activate(service, "p1", made["a"])
    with pytest.raises(Conflict) as caught:
        await service.delete_instance(made["a"].id, ADMIN)
    assert caught.value.code is ErrorCode.NO_ELIGIBLE_TARGET
    assert len(await service.get_proxy_instances("p1")) == 2


async def test_deleting_the_last_instance_leaves_no_active_and_records_it(
    service: ProxyFailoverService,
) -> None:
    made = await proxy_with(service, "p1", ["a"])
    await activate(service, "p1", made["a"])
    before = await service.get_redundancy_status("p1")
    assert before is not None
    await service.delete_instance(made["a"].id, ADMIN)
    after = await service.get_redundancy_status("p1")
    assert after is not None
    assert after.active_instance_id is None
    assert after.epoch == before.epoch + 1
    assert after.total_instances == 0
    (event, *_) = await service.get_failover_events("p1")
    assert event.event_type is EventType.SWITCHOVER
    assert (event.source_instance_id, event.target_instance_id) == (made["a"].id, None)
    assert event.epoch == after.epoch
    assert await service.get_proxy_instances("p1") == []


async def test_deleting_the_active_instance_waits_for_an_open_switch(
    service: ProxyFailoverService,
) -> None:
    made = await proxy_with(service, "p1", ["a", "b", "c"])
    await activate(service, "p1", made["a"])
    await service.execute_failover("p1", ADMIN, made["a"].id, made["b"].id)
    with pytest.raises(Conflict) as caught:
        await service.delete_instance(made["b"].id, ADMIN)
    assert caught.value.code is ErrorCode.FAILOVER_IN_PROGRESS
    assert len(await service.get_proxy_instances("p1")) == 3


async def test_errors_share_one_type_with_code_and_status(service: ProxyFailoverService) -> None:
    with pytest.raises(FailoverError) as caught:
        await service.evaluate_failover("nope")
    assert caught.value.code is ErrorCode.CONFIG_NOT_FOUND
    assert caught.value.status_code == 404
    assert caught.value.message
