"""``proxy-failover serve`` runs the engine: the new user's path through the HTTP API.

Register three real instances, kill the active one: the API shows the failover, its completed
event and the degraded redundancy; restart it: the recovery is recorded.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.helpers.api import Tokens
from tests.helpers.processes import InstanceProcess, wait_for
from tests.helpers.serve import ServeProcess

pytestmark = pytest.mark.slow


async def test_serve_fails_over_and_records_recovery_of_a_killed_instance(
    serve_process: ServeProcess, tokens: Tokens, instances: list[InstanceProcess]
) -> None:
    headers = {"Authorization": f"Bearer {tokens.alice}"}
    async with httpx.AsyncClient(base_url=serve_process.url, headers=headers) as http:

        async def data(method: str, path: str, **kwargs: Any) -> Any:
            response = await http.request(method, path, **kwargs)
            assert response.status_code < 300, response.text
            return response.json()["data"]

        await data(
            "POST",
            "/proxy/failover/config",
            json={
                "proxyId": "edge",
                "config": {
                    "healthCheckIntervalSeconds": 0.2,
                    "healthCheckTimeoutSeconds": 0.1,
                    "unhealthyThreshold": 2,
                    "healthyThreshold": 2,
                },
            },
        )
        ids = []
        for n, proc in enumerate(instances):
            instance = await data(
                "POST",
                "/proxy/instances",
                json={
                    "proxyId": "edge",
                    "instanceData": {
                        "instanceName": f"edge-{n}",
                        "endpoint": proc.endpoint,
                        "priority": n + 1,
                    },
                },
            )
            ids.append(instance["id"])

        async def redundancy() -> Any:
            return await data("GET", "/proxy/edge/redundancy")

        async def active_is(instance_id: str) -> bool:
            return bool((await redundancy())["activeInstanceId"] == instance_id)

        await wait_for(lambda: active_is(ids[0]))
        instances[0].kill()
        await wait_for(lambda: active_is(ids[1]))
        status = await redundancy()
        assert status["isDegraded"] is True
        events = await data("GET", "/proxy/edge/failover/events", params={"type": "failover"})
        latest = events[0]
        assert (latest["sourceInstanceId"], latest["targetInstanceId"]) == (ids[0], ids[1])
        assert (latest["status"], latest["triggeredBy"]) == ("completed", "system")

        instances[0].restart()

        async def recovery_recorded() -> bool:
            found = await data("GET", "/proxy/edge/failover/events", params={"type": "recovery"})
            return any(
                e["targetInstanceId"] == ids[0] and e["status"] == "completed" for e in found
            )

        await wait_for(recovery_recorded)
        assert (await redundancy())["isDegraded"] is False
