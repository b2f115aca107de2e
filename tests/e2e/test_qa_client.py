"""QA regression: the client takes the library's snake_case keys, as the library does (SPEC §6)."""

from __future__ import annotations

import httpx

from proxy_failover.client import AsyncFailoverClient
from tests.e2e.conftest import Api


async def test_client_sends_snake_case_keys_as_camel_case(sqlite_api: Api) -> None:
    assert sqlite_api.app is not None
    transport = httpx.ASGITransport(app=sqlite_api.app)
    url = "http://testserver"
    async with AsyncFailoverClient(url, sqlite_api.tokens.admin, transport=transport) as client:
        config = await client.create_failover_configuration(
            "qa-snake",
            {
                "failover_strategy": "round_robin",
                "enable_auto_failover": False,
                "health_check": {"expected_status": "200,204"},
            },
        )
        assert config.failover_strategy == "round_robin"
        assert config.health_check.expected_status == "200,204"
        instance = await client.register_proxy_instance(
            "qa-snake", {"instance_name": "a", "priority": 7, "metadata": {"keep_me": 1}}
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
            "qa-snake", {"total_instances": 1, "healthy_instances": 1, "redundancy_level": "single"}
        )
        assert status.overridden is True
