"""``trafficAddress`` (SPEC §3, §9): validated, stored, returned by the instance, ``/route`` (the
effective address: the endpoint's host and port when unset) and the event stream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from proxy_failover.client import AsyncFailoverClient, StreamEvent
from tests.helpers.api import Api, Tokens, api_settings
from tests.helpers.live_app import fail_over, live_api

PROXY = "traffic"


async def _register(
    api: Api, name: str, token: str | None = None, **fields: object
) -> dict[str, object]:
    data: dict[str, object] = await api.ok(
        "POST",
        "/proxy/instances",
        token or api.tokens.alice,
        201,
        json={"proxyId": PROXY, "instanceData": {"instanceName": name, **fields}},
    )
    return data


async def _activate(api: Api, instance_id: str, source: str | None) -> None:
    await api.ok(
        "PUT",
        f"/proxy/instances/{instance_id}/health",
        api.tokens.alice,
        json={"healthStatus": "healthy"},
    )
    await fail_over(api, PROXY, source, instance_id)


async def test_traffic_address_is_stored_returned_and_defaults_to_the_endpoint(api: Api) -> None:
    alice = api.tokens.alice
    await api.ok("POST", "/proxy/failover/config", alice, 201, json={"proxyId": PROXY})
    admin = api.tokens.admin  # private endpoints are an admin's to register (docs/security.md)
    relay = await _register(
        api, "relay-a", admin, endpoint="http://10.0.0.1:8080/health", trafficAddress="relay-a:1935"
    )
    plain = await _register(api, "relay-b", admin, endpoint="https://10.0.0.2/health")
    assert relay["trafficAddress"] == "relay-a:1935"
    assert plain["trafficAddress"] is None  # unset: the endpoint's host and port are used

    await _activate(api, str(relay["id"]), None)
    route = await api.ok("GET", f"/proxy/{PROXY}/route", alice)
    assert route["trafficAddress"] == "relay-a:1935"
    await _activate(api, str(plain["id"]), str(relay["id"]))
    route = await api.ok("GET", f"/proxy/{PROXY}/route", alice)
    assert route["trafficAddress"] == "10.0.0.2:443"

    path = f"/proxy/instances/{plain['id']}"
    patched = await api.ok("PATCH", path, alice, json={"trafficAddress": "[fd00::2]:1935"})
    assert patched["trafficAddress"] == "[fd00::2]:1935"
    route = await api.ok("GET", f"/proxy/{PROXY}/route", alice)
    assert route["trafficAddress"] == "[fd00::2]:1935"
    listed = await api.ok("GET", f"/proxy/{PROXY}/instances", alice)
    assert {i["instanceName"]: i["trafficAddress"] for i in listed} == {
        "relay-a": "relay-a:1935",
        "relay-b": "[fd00::2]:1935",
    }
    cleared = await api.ok("PATCH", path, alice, json={"trafficAddress": None})
    assert cleared["trafficAddress"] is None


@pytest.mark.parametrize(
    "bad",
    [
        "relay",
        "relay:0",
        "relay:65536",
        "http://relay:80",
        "re lay:80",
        "fd00::1:80",
        "",
        "a" * 257 + ":1935",  # 262 characters: over limits.ADDRESS
        1935,
    ],
)
async def test_an_invalid_traffic_address_is_refused_and_changes_nothing(
    sqlite_api: Api, bad: object
) -> None:
    api, alice = sqlite_api, sqlite_api.tokens.alice
    body = {"proxyId": PROXY, "instanceData": {"instanceName": "x", "trafficAddress": bad}}
    assert await api.error("POST", "/proxy/instances", alice, json=body) == (
        400,
        "PROXY_FAILOVER_001",
    )
    instance = await _register(api, "relay", trafficAddress="relay:1935")
    path = f"/proxy/instances/{instance['id']}"
    assert await api.error("PATCH", path, alice, json={"trafficAddress": bad}) == (
        400,
        "PROXY_FAILOVER_001",
    )
    assert (await api.ok("GET", path, alice))["trafficAddress"] == "relay:1935"


@pytest.fixture
async def live(sqlite_url: str, tokens: Tokens) -> AsyncIterator[Api]:
    async with live_api(api_settings(sqlite_url), tokens) as api:
        yield api


async def test_instance_events_of_the_stream_carry_the_traffic_address(live: Api) -> None:
    instance = await _register(live, "relay-a", endpoint="relay-a.internal:8080")
    base_url = str(live.http.base_url)
    async with AsyncFailoverClient(base_url, live.tokens.alice) as client:
        opened = asyncio.Event()
        events: list[StreamEvent] = []

        async def follow() -> None:
            async for event in client.stream_events(PROXY, on_open=opened.set):
                events.append(event)
                if event.type == "instance.healthy":
                    return

        task = asyncio.create_task(follow())
        await asyncio.wait_for(opened.wait(), 10)
        await live.ok(
            "PUT",
            f"/proxy/instances/{instance['id']}/health",
            live.tokens.alice,
            json={"healthStatus": "healthy"},
        )
        try:
            await asyncio.wait_for(task, 10)
        except (TimeoutError, httpx.HTTPError):
            task.cancel()
            raise
    healthy = events[-1]
    assert healthy.id is not None
    assert healthy.data["data"]["trafficAddress"] == "relay-a.internal:8080"
