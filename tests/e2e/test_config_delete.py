"""``DELETE /proxy/failover/config/:proxyId`` on SQLite and PostgreSQL: the proxy, its instances,
metric samples and webhooks go; events and audit rows stay; open events close; epochs never go
back when the id is used again."""

from __future__ import annotations

from typing import Any

from proxy_failover.core.model import EventStatus, EventType
from proxy_failover.core.webhooks import DeliveryStatus
from proxy_failover.entrypoints.api import create_app
from tests.helpers.api import Api, api_settings, in_process
from tests.helpers.processes import wait_for

CONFIG = "/proxy/failover/config"


async def _edge_with_history(api: Api) -> dict[str, str]:
    """alice's proxy ``edge``: two healthy instances, a manual switch left in progress, a metric
    sample, an admin's webhook subscription with a pending delivery."""
    alice, admin = api.tokens.alice, api.tokens.admin
    await api.ok("POST", CONFIG, alice, 201, json={"proxyId": "edge", "config": {}})
    ids = {}
    for name in ("a", "b"):
        body = {"proxyId": "edge", "instanceData": {"instanceName": name}}
        ids[name] = (await api.ok("POST", "/proxy/instances", alice, 201, json=body))["id"]
        await api.ok(
            "PUT", f"/proxy/instances/{ids[name]}/health", alice, json={"healthStatus": "healthy"}
        )
    await api.ok(
        "POST",
        f"/proxy/instances/{ids['a']}/metrics",
        alice,
        json={"cpuPercent": 5},
    )
    await api.ok(
        "POST",
        "/proxy/edge/webhooks",
        admin,
        201,
        json={"url": "http://127.0.0.1:9/hook", "secret": "s" * 32},
    )
    execute = {"proxyId": "edge", "sourceInstanceId": None, "targetInstanceId": ids["a"]}
    ids["event"] = (await api.ok("POST", "/proxy/failover/execute", admin, json=execute))["id"]
    return ids


def _service(api: Api) -> Any:
    assert api.app is not None
    return api.app.state.runtime.service


async def test_owner_deletes_a_proxy_and_only_its_history_stays(api: Api) -> None:
    alice, bob, admin = api.tokens.alice, api.tokens.bob, api.tokens.admin
    ids = await _edge_with_history(api)
    deliveries = await _service(api).list_webhook_deliveries("edge")
    assert any(d.status is DeliveryStatus.PENDING for d in deliveries)

    # another user's proxy answers as a missing one would, and nothing changes
    assert await api.error("DELETE", f"{CONFIG}/edge", bob) == (404, "PROXY_FAILOVER_002")
    assert await api.ok("GET", f"{CONFIG}/edge", alice)

    deleted = await api.ok("DELETE", f"{CONFIG}/edge", alice)
    assert deleted == {"proxyId": "edge"}
    assert await api.error("GET", f"{CONFIG}/edge", alice) == (404, "PROXY_FAILOVER_002")
    assert await api.error("DELETE", f"{CONFIG}/edge", alice) == (404, "PROXY_FAILOVER_002")
    assert await api.error("GET", f"/proxy/instances/{ids['a']}", admin) == (
        404,
        "PROXY_FAILOVER_004",
    )
    assert await api.ok("GET", "/proxies", admin) == []

    # events stay in the database (the API answers 002 for the deleted proxy); the open switch
    # closed as failed and the active role went to nobody with a new epoch
    assert await api.error("GET", "/proxy/edge/failover/events", admin) == (
        404,
        "PROXY_FAILOVER_002",
    )
    assert api.app is not None
    events = await _service(api).get_failover_events("edge")
    by_id = {e.id: e for e in events}
    assert by_id[ids["event"]].status is EventStatus.FAILED
    assert by_id[ids["event"]].error_message == "proxy deleted"
    handover = events[0]
    assert handover.event_type is EventType.SWITCHOVER
    assert handover.source_instance_id == ids["a"]
    assert handover.target_instance_id is None
    assert handover.epoch == 2
    audit = await api.ok("GET", "/audit", admin, params={"proxyId": "edge"})
    assert any(row["action"].startswith("DELETE") and row["actor"] == "alice" for row in audit)

    # the id is free again, for anyone; its epoch continues and the old history is not shown
    await api.ok("POST", CONFIG, bob, 201, json={"proxyId": "edge", "config": {}})
    assert (await api.ok("GET", f"{CONFIG}/edge", bob))["userId"] == "bob"
    assert await api.error("GET", f"{CONFIG}/edge", alice) == (404, "PROXY_FAILOVER_002")
    redundancy = await api.ok("GET", "/proxy/edge/redundancy", bob)
    assert redundancy["epoch"] == 2
    assert redundancy["totalInstances"] == 0
    assert await api.ok("GET", "/proxy/edge/failover/events", bob) == []
    assert await api.ok("GET", "/proxy/edge/webhooks", admin) == []
    deliveries = await _service(api).list_webhook_deliveries("edge")
    assert deliveries  # the history stays readable; nothing is left to send
    assert all(d.status is not DeliveryStatus.PENDING for d in deliveries)
    assert any(d.status is DeliveryStatus.CANCELLED for d in deliveries)


async def test_admin_deletes_any_proxy_without_instances(api: Api) -> None:
    await api.ok("POST", CONFIG, api.tokens.alice, 201, json={"proxyId": "p1", "config": {}})
    assert await api.ok("DELETE", f"{CONFIG}/p1", api.tokens.admin) == {"proxyId": "p1"}
    assert await api.error("DELETE", f"{CONFIG}/p1", None) == (401, "PROXY_FAILOVER_015")
    assert await api.error("DELETE", f"{CONFIG}/bad%20id", api.tokens.admin) == (
        400,
        "PROXY_FAILOVER_001",
    )


async def test_an_id_taken_again_by_another_owner_changes_hands_here_at_once_and_on_replicas(
    api: Api, database_url: str
) -> None:
    """Owners are remembered per process for the read cache's TTL: this process forgets at its
    own delete, another replica (a second app on the same database) within the TTL."""
    alice, bob = api.tokens.alice, api.tokens.bob
    replica_app = create_app(api_settings(database_url))
    async with in_process(replica_app, api.tokens, "http://replica") as replica:
        await api.ok("POST", CONFIG, alice, 201, json={"proxyId": "taken", "config": {}})
        for side in (api, replica):  # both remember alice as the owner
            await side.ok("GET", "/proxy/taken/redundancy", alice)
            assert await side.error("GET", "/proxy/taken/redundancy", bob) == (
                404,
                "PROXY_FAILOVER_002",
            )

        await api.ok("DELETE", f"{CONFIG}/taken", alice)
        await api.ok("POST", CONFIG, bob, 201, json={"proxyId": "taken", "config": {}})
        await api.ok("GET", "/proxy/taken/redundancy", bob)  # here: at once
        assert (await api.call("GET", "/proxy/taken/redundancy", alice)).status_code == 404

        async def replica_follows() -> bool:
            bobs = await replica.call("GET", "/proxy/taken/redundancy", bob)
            alices = await replica.call("GET", "/proxy/taken/redundancy", alice)
            return bobs.status_code == 200 and alices.status_code == 404

        await wait_for(replica_follows, within=5)  # the TTL is 1 s
