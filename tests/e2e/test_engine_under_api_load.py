"""A saturated API never makes a healthy instance look dead (issue 10).

``serve`` with three healthy instances probed every 0.5 s with a 0.25 s timeout, while ``wrk``
keeps 16 connections reading a 300-event list (``limit=1000``) of another proxy for 20 s: no
status moves, no failover, and the engine keeps probing throughout. With the engine on the API's
event loop this failed over healthy instances within 20 s (the probe answers sat unread behind
request handling past their timeout); the engine now runs on its own loop and thread.
"""

from __future__ import annotations

import asyncio
import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from proxy_failover.bootstrap import open_service
from tests.helpers.api import Tokens
from tests.helpers.processes import InstanceProcess, wait_for
from tests.helpers.serve import ServeProcess, start_serve, stop_serve

pytestmark = pytest.mark.slow

SECRET = "under-load-secret-for-tests-0123456789abcdef"
LOAD_SECONDS = 20
EVENTS = 300


async def _busy_proxy_with_events(database_url: str) -> None:
    """Proxy ``busy`` (alice's): two instances without endpoints and 300 switchover events."""
    async with open_service(database_url, migrate=False) as service:
        await service.create_failover_configuration("busy", "alice", {})
        pair = [
            await service.register_proxy_instance("busy", "alice", {"instanceName": f"b{n}"})
            for n in range(2)
        ]
        for instance in pair:
            await service.update_instance_health(instance.id, "healthy")
        active = None
        for n in range(EVENTS):
            target = pair[n % 2].id
            event = await service.execute_failover("busy", "root", active, target, "load")
            await service.complete_failover_event(event.id, "completed")
            active = target


@pytest.fixture
async def loaded_serve(sqlite_url: str, tmp_path: Path) -> AsyncIterator[ServeProcess]:
    await _busy_proxy_with_events(sqlite_url)
    # Rate limits off: they would refuse most of the load (429), and this test needs the API
    # saturated; the limits' own effect is measured by bench/greedy.py.
    env = {"PFO_JWT_SECRET": SECRET, "PFO_RATE_LIMIT_PER_SECOND": "0"}
    server = start_serve(sqlite_url, tmp_path / "serve.log", env)
    try:
        yield server
    finally:
        stop_serve(server)


async def test_a_saturated_api_changes_no_status_of_healthy_instances(
    loaded_serve: ServeProcess, instances: list[InstanceProcess]
) -> None:
    wrk = shutil.which("wrk")
    if wrk is None:
        pytest.fail("wrk is missing: run `make system-deps` (installs the Debian package)")
    token = Tokens.signed_with(SECRET).alice
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=loaded_serve.url, headers=headers, timeout=30) as http:

        async def data(method: str, path: str, **kwargs: Any) -> Any:
            response = await http.request(method, path, **kwargs)
            assert response.status_code < 300, response.text
            return response.json()["data"]

        config = {"healthCheckIntervalSeconds": 0.5, "healthCheckTimeoutSeconds": 0.25}
        await data("POST", "/proxy/failover/config", json={"proxyId": "p", "config": config})
        for n, proc in enumerate(instances):
            body = {"instanceName": f"i{n}", "endpoint": proc.endpoint, "priority": n + 1}
            await data("POST", "/proxy/instances", json={"proxyId": "p", "instanceData": body})

        async def all_healthy_and_active() -> list[Any]:
            found = await data("GET", "/proxy/p/instances")
            healthy = all(i["healthStatus"] == "healthy" for i in found)
            return found if healthy and any(i["isActive"] for i in found) else []

        before: list[Any] = await wait_for(all_healthy_and_active)
        assert len(await data("GET", "/proxy/busy/failover/events?limit=1000")) == EVENTS

        wrk_run = await asyncio.create_subprocess_exec(
            wrk,
            "-t2",
            "-c16",
            f"-d{LOAD_SECONDS}s",
            "-H",
            f"Authorization: Bearer {token}",
            f"{loaded_serve.url}/proxy/busy/failover/events?limit=1000",
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await asyncio.wait_for(wrk_run.communicate(), LOAD_SECONDS + 30)
        assert wrk_run.returncode == 0
        report = out.decode()
        served = re.search(r"(\d+) requests in", report)
        assert served is not None, report
        assert int(served.group(1)) > 0
        assert "Non-2xx" not in report, report

        after = await data("GET", "/proxy/p/instances")
        events = await data("GET", "/proxy/p/failover/events")
    # Nothing moved: same statuses and transitions, the activation is the only event ...
    assert [(i["id"], i["healthStatus"], i["isActive"]) for i in after] == [
        (i["id"], i["healthStatus"], i["isActive"]) for i in before
    ], report
    assert [e["eventType"] for e in events] == ["failover"]
    # ... and not because probing stopped: every instance was probed during the load.
    for old, new in zip(before, after, strict=True):
        assert new["totalRequests"] > old["totalRequests"], (old, new)
