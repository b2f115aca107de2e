"""Webhook subscriptions over HTTP: validation, ownership, signed deliveries of a real failover,
the deliveries listing with every attempt, redelivery."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from proxy_failover.entrypoints.api import create_app
from tests.helpers.api import Api, Tokens, api_settings, in_process
from tests.helpers.live_app import fail_over, setup_proxy
from tests.helpers.processes import free_port, wait_for
from tests.helpers.webhook_receiver import WebhookReceiver

PROXY = "edge-hooks"
SECRET = "receiver-secret-0123456789"


@pytest.fixture
async def hooks_api(database_url: str, tokens: Tokens) -> AsyncIterator[Api]:
    """The app in-process (lifespan: the delivery worker runs), retries 1000x faster."""
    app = create_app(api_settings(database_url, webhook_time_scale=0.001))
    async with in_process(app, tokens) as api:
        yield api


async def test_subscriptions_are_validated_owned_and_never_show_the_secret(
    hooks_api: Api,
) -> None:
    api = hooks_api
    alice, bob, admin = api.tokens.alice, api.tokens.bob, api.tokens.admin
    await setup_proxy(api, PROXY)
    path = f"/proxy/{PROXY}/webhooks"
    good = {"url": "https://ops.example/hook", "secret": SECRET}
    for bad in (
        {**good, "url": "ftp://ops.example/hook"},
        {**good, "url": "not a url"},
        {**good, "secret": "too-short"},
        {"url": good["url"]},
        {**good, "events": ["failover.done"]},
        {**good, "events": []},
        {**good, "extra": 1},
    ):
        assert await api.error("POST", path, alice, json=bad) == (400, "PROXY_FAILOVER_001")
    assert await api.error("POST", path, None, json=good) == (401, "PROXY_FAILOVER_015")
    assert await api.error("POST", path, bob, json=good) == (404, "PROXY_FAILOVER_002")
    assert await api.error("POST", "/proxy/nope/webhooks", admin, json=good) == (
        404,
        "PROXY_FAILOVER_002",
    )

    created = await api.ok("POST", path, alice, 201, json=good)
    narrow = await api.ok(
        "POST", path, admin, 201, json={**good, "events": ["failover.completed"] * 2}
    )
    assert "secret" not in created
    assert created["events"] is None
    assert created["userId"] == "alice"
    assert narrow["events"] == ["failover.completed"]
    listed = await api.call("GET", path, alice)
    assert listed.json()["count"] == 2
    assert SECRET not in listed.text
    assert await api.error("GET", path, bob) == (404, "PROXY_FAILOVER_002")

    assert await api.error("DELETE", f"{path}/{narrow['id']}", bob) == (404, "PROXY_FAILOVER_002")
    assert await api.error("DELETE", f"{path}/not-a-subscription", alice) == (
        404,
        "PROXY_FAILOVER_020",
    )
    removed = await api.ok("DELETE", f"{path}/{narrow['id']}", alice)
    assert removed == {"id": narrow["id"], "deleted": True}
    assert [s["id"] for s in await api.ok("GET", path, alice)] == [created["id"]]
    assert await api.error("DELETE", f"{path}/{narrow['id']}", alice) == (
        404,
        "PROXY_FAILOVER_020",
    )
    assert await api.error("POST", f"{path}/deliveries/not-a-delivery/redeliver", alice) == (
        404,
        "PROXY_FAILOVER_020",
    )
    assert await api.error("GET", f"{path}/deliveries?limit=0", alice) == (
        400,
        "PROXY_FAILOVER_001",
    )


async def test_receiver_gets_a_signed_failover_with_its_epoch_even_after_being_down(
    hooks_api: Api,
) -> None:
    api = hooks_api
    alice = api.tokens.alice
    first, second = await setup_proxy(api, PROXY, "edge-a", "edge-b")
    receiver = WebhookReceiver(SECRET, port=free_port())  # not listening yet
    await api.ok(
        "POST",
        f"/proxy/{PROXY}/webhooks",
        alice,
        201,
        json={"url": receiver.url, "secret": SECRET, "events": ["failover.completed"]},
    )
    await fail_over(api, PROXY, None, first)
    deliveries_path = f"/proxy/{PROXY}/webhooks/deliveries"

    async def refused_at_least_twice() -> bool:
        (delivery,) = await api.ok("GET", deliveries_path, alice)
        return int(delivery["attempts"]) >= 2

    await wait_for(refused_at_least_twice, within=10)
    await receiver.start()
    try:
        await wait_for(lambda: _accepted(receiver, 1), within=10)
        done = await fail_over(api, PROXY, first, second)
        await wait_for(lambda: _accepted(receiver, 2), within=10)

        async def both_recorded_delivered() -> list[dict[str, Any]]:
            # the receiver answers before the worker records the attempt: wait for the record
            listed: list[dict[str, Any]] = await api.ok("GET", deliveries_path, alice)
            return listed if {d["status"] for d in listed} == {"delivered"} else []

        listed = await wait_for(both_recorded_delivered, within=10)
        newest, oldest = listed
        assert len(listed) == 2
        assert oldest["attempts"] == len(oldest["attemptLog"]) >= 3
        assert oldest["attemptLog"][0]["success"] is False
        assert oldest["attemptLog"][0]["statusCode"] is None
        assert oldest["attemptLog"][-1]["statusCode"] == 200
        assert newest["attempts"] == 1

        again = await api.ok("POST", f"{deliveries_path}/{oldest['id']}/redeliver", alice)
        assert again["id"] == oldest["id"]
        assert again["status"] == "pending"
        await wait_for(lambda: _accepted(receiver, 3), within=10)
    finally:
        await receiver.stop()

    assert all(r.signature_ok for r in receiver.received)
    payloads = [r.payload for r in receiver.accepted]
    assert [p["type"] for p in payloads] == ["failover.completed"] * 3
    assert [p["epoch"] for p in payloads] == [1, 2, 1]
    assert payloads[1]["data"]["targetInstanceId"] == second
    assert payloads[1]["data"]["eventId"] == done["id"]
    assert payloads[1]["proxyId"] == PROXY
    headers = receiver.accepted[1].headers
    assert headers["x-pfo-event"] == "failover.completed"
    assert headers["x-pfo-delivery"] == newest["id"]
    assert headers["x-pfo-signature"].startswith("sha256=")
    assert receiver.accepted[2].delivery_id == oldest["id"]  # redelivery keeps its id
    assert receiver.accepted[2].body == receiver.accepted[0].body


async def _accepted(receiver: WebhookReceiver, n: int) -> bool:
    return len(receiver.accepted) >= n
