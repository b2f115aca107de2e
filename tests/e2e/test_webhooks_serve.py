"""The new user's path through ``proxy-failover serve``: subscribe a receiver, kill the active
instance, get a signed ``failover.completed`` with the epoch; with the receiver down, the next one
arrives once it is back; ``/metrics`` shows time to detect and to switch; the audit log shows the
engine's actions as ``system``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers.api import SECRET as JWT_SECRET
from tests.helpers.api import Tokens
from tests.helpers.processes import InstanceProcess, wait_for
from tests.helpers.serve import start_serve, stop_serve
from tests.helpers.webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.slow

SECRET = "serve-receiver-secret"
PROXY = "edge"


def _completed_to(receiver: WebhookReceiver, target: str) -> list[dict[str, Any]]:
    return [
        r.payload
        for r in receiver.accepted
        if r.payload["type"] == "failover.completed"
        and r.payload["data"]["targetInstanceId"] == target
    ]


async def test_killed_instance_reaches_the_receiver_signed_even_after_it_was_down(
    sqlite_url: str, tmp_path: Path, tokens: Tokens, instances: list[InstanceProcess]
) -> None:
    receiver = await WebhookReceiver(SECRET).start()
    server = start_serve(
        sqlite_url,
        tmp_path / "serve.log",
        {"PFO_JWT_SECRET": JWT_SECRET, "PFO_WEBHOOK_TIME_SCALE": "0.01"},
    )
    headers = {"Authorization": f"Bearer {tokens.alice}"}
    try:
        async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=10) as http:

            async def data(method: str, path: str, **kwargs: Any) -> Any:
                response = await http.request(method, path, **kwargs)
                assert response.status_code < 300, response.text
                return response.json()["data"]

            await data(
                "POST",
                "/proxy/failover/config",
                json={
                    "proxyId": PROXY,
                    "config": {
                        "healthCheckIntervalSeconds": 0.2,
                        "healthCheckTimeoutSeconds": 0.1,
                        "unhealthyThreshold": 2,
                        "healthyThreshold": 2,
                    },
                },
            )
            await data(
                "POST",
                f"/proxy/{PROXY}/webhooks",
                json={"url": receiver.url, "secret": SECRET, "events": ["failover.completed"]},
            )
            ids = []
            for n, proc in enumerate(instances):
                instance = await data(
                    "POST",
                    "/proxy/instances",
                    json={
                        "proxyId": PROXY,
                        "instanceData": {
                            "instanceName": f"edge-{n}",
                            "endpoint": proc.endpoint,
                            "priority": n + 1,
                        },
                    },
                )
                ids.append(instance["id"])

            await wait_for(lambda: _arrived(receiver, ids[0]))  # the activation
            instances[0].kill()
            (first,) = await wait_for(lambda: _arrived(receiver, ids[1]))
            assert first["epoch"] == 2
            assert first["data"]["sourceInstanceId"] == ids[0]
            assert first["data"]["triggeredBy"] == "system"

            await receiver.stop()
            instances[1].kill()
            deliveries_path = f"/proxy/{PROXY}/webhooks/deliveries"

            async def refused() -> bool:
                newest = (await data("GET", deliveries_path))[0]
                return bool(newest["attempts"] >= 1 and newest["status"] == "pending")

            await wait_for(refused)
            await receiver.start()
            (second,) = await wait_for(lambda: _arrived(receiver, ids[2]))
            assert second["epoch"] == 3

            metrics = (await http.get("/metrics")).text
            admin = {"Authorization": f"Bearer {tokens.admin}"}
            audit = (await http.get("/audit", params={"proxyId": PROXY}, headers=admin)).json()
    finally:
        stop_serve(server)
        await receiver.stop()

    assert receiver.received
    assert all(r.signature_ok for r in receiver.received)
    log_lines = [json.loads(line) for line in server.log.read_text().splitlines() if line]
    assert {"timestamp", "level", "logger", "event"} <= set(log_lines[0])
    assert any(line["logger"] == "proxy_failover.engine" for line in log_lines)
    samples = {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(metrics)
        for s in family.samples
    }
    proxy = frozenset({("proxy_id", PROXY)})
    assert samples[("pfo_failover_last_detect_seconds", proxy)] > 0
    assert samples[("pfo_failover_last_switch_seconds", proxy)] >= 0
    assert samples[("pfo_failover_detect_seconds_count", proxy)] == 2
    assert samples[("pfo_proxy_epoch", proxy)] == 3
    failed_probes = frozenset({("proxy_id", PROXY), ("result", "failure")})
    assert samples[("pfo_probes_total", failed_probes)] >= 4
    system = [e for e in audit["data"] if e["actor"] == "system"]
    assert [e["action"] for e in system].count("failover.completed") == 3


async def _arrived(receiver: WebhookReceiver, target: str) -> list[dict[str, Any]]:
    return _completed_to(receiver, target)
