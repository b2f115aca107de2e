"""The Python client (sync and async): against a real ``proxy-failover serve`` process, and the
library's snake_case keys it accepts."""

from __future__ import annotations

import httpx
import pytest

from proxy_failover.client import AsyncFailoverClient, FailoverClient
from proxy_failover.core.errors import ErrorCode, FailoverError
from proxy_failover.core.model import (
    CheckResult,
    EventStatus,
    EventType,
    HealthStatus,
    RedundancyLevel,
)
from tests.helpers.api import Api, Tokens
from tests.helpers.serve import ServeProcess


@pytest.mark.slow
async def test_sync_and_async_clients_run_the_seed_flow(
    serve_process: ServeProcess, tokens: Tokens
) -> None:
    with FailoverClient(serve_process.url, tokens.alice) as alice:
        # serve runs the engine too; with automatic failover off it leaves the switching to us
        config = alice.create_failover_configuration(
            "proxy-123", {"unhealthyThreshold": 2, "enableAutoFailover": False}
        )
        assert (config.user_id, config.unhealthy_threshold) == ("alice", 2)
        first = alice.register_proxy_instance("proxy-123", {"instanceName": "a", "priority": 1})
        second = alice.register_proxy_instance("proxy-123", {"instanceName": "b", "priority": 2})
        for instance in (first, second):
            updated = alice.update_instance_health(instance.id, "healthy", {"cpuPercent": 5})
            assert updated.health_status is HealthStatus.HEALTHY
        evaluation = alice.evaluate_failover("proxy-123")
        assert evaluation.proxy_id == "proxy-123"
        assert evaluation.auto_failover_enabled is False
        assert alice.get_failover_configuration("nope") is None
        with pytest.raises(FailoverError) as refused:
            alice.execute_failover("proxy-123", None, first.id)
        assert refused.value.code is ErrorCode.FORBIDDEN
        assert refused.value.status_code == 403

    async with AsyncFailoverClient(serve_process.url, tokens.admin) as admin:
        current = await admin.get_redundancy_status("proxy-123")
        assert current is not None
        source = current.active_instance_id
        target = second.id if source == first.id else first.id
        event = await admin.execute_failover("proxy-123", source, target, "operator switch")
        assert event.status is EventStatus.IN_PROGRESS
        assert event.event_type in (EventType.FAILOVER, EventType.SWITCHOVER)
        assert (event.source_instance_id, event.target_instance_id) == (source, target)
        done = await admin.complete_failover_event(event.id, "completed", duration_ms=1500)
        assert (done.status, done.duration_ms) == (EventStatus.COMPLETED, 1500)
        with pytest.raises(FailoverError) as twice:
            await admin.complete_failover_event(event.id, "completed")
        assert twice.value.code is ErrorCode.EVENT_ALREADY_CLOSED

        for _ in range(2):
            await admin.record_check_result(first.id, CheckResult(success=False, error="down"))
        instance = await admin.get_instance(first.id)
        assert (instance.health_status, instance.last_error) == (HealthStatus.UNHEALTHY, "down")
        status = await admin.get_redundancy_status("proxy-123")
        assert status is not None
        assert status.redundancy_level is RedundancyLevel.DUAL
        instances = await admin.get_proxy_instances("proxy-123")
        assert [i.id for i in instances] == [first.id, second.id]

        events = await admin.get_failover_events("proxy-123", limit=10)
        assert [e.id for e in events][-1] == event.id
        route = await admin.get_route("proxy-123")
        assert route.proxy_id == "proxy-123"
        explanation = await admin.explain("proxy-123")
        assert len(explanation.instances) == 2
        (summary,) = await admin.list_proxies()
        assert summary.user_id == "alice"
        await admin.record_instance_metrics(second.id, {"connectionCount": 4})
        newest, from_health_report = await admin.get_instance_metrics(second.id)
        assert newest.sample.connection_count == 4
        assert from_health_report.sample.cpu_percent == 5
        await admin.delete_instance(second.id)
        with pytest.raises(FailoverError) as gone:
            await admin.get_instance(second.id)
        assert gone.value.code is ErrorCode.INSTANCE_NOT_FOUND


async def test_client_sends_snake_case_keys_as_camel_case(sqlite_api: Api) -> None:
    assert sqlite_api.app is not None
    transport = httpx.ASGITransport(app=sqlite_api.app)
    url = "http://testserver"
    async with AsyncFailoverClient(url, sqlite_api.tokens.admin, transport=transport) as client:
        config = await client.create_failover_configuration(
            "snake-keys",
            {
                "failover_strategy": "round_robin",
                "enable_auto_failover": False,
                "health_check": {"expected_status": "200,204"},
            },
        )
        assert config.failover_strategy == "round_robin"
        assert config.health_check.expected_status == "200,204"
        instance = await client.register_proxy_instance(
            "snake-keys", {"instance_name": "a", "priority": 7, "metadata": {"keep_me": 1}}
        )
        assert (instance.instance_name, instance.priority) == ("a", 7)
        assert instance.metadata == {"keep_me": 1}  # free JSON is not renamed
        healthy = await client.update_instance_health(
            instance.id, "healthy", {"cpu_percent": 5, "connection_count": 3}
        )
        assert healthy.active_connections == 3
        patched = await client.update_instance(instance.id, {"admin_state": "drain"})
        assert patched.admin_state == "drain"
        sample = await client.record_instance_metrics(instance.id, {"error_rate": 0.5})
        assert sample.sample.error_rate == 0.5
        status = await client.update_redundancy_status(
            "snake-keys",
            {"total_instances": 1, "healthy_instances": 1, "redundancy_level": "single"},
        )
        assert status.overridden is True
