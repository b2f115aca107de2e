"""``GET /proxy/{proxyId}/stream``: server-sent events over a real socket (uvicorn); non-admins
never see health-check detail in them (SPEC §7)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.helpers.api import Api, Tokens, api_settings
from tests.helpers.live_app import EventStream, fail_over, live_api, setup_proxy

PROXY = "edge-stream"
DETAIL_PROXY = "stream-detail"
DETAIL = "connection refused by 10.0.0.7"


@pytest.fixture
async def live(sqlite_url: str, tokens: Tokens) -> AsyncIterator[Api]:
    async with live_api(api_settings(sqlite_url), tokens) as api:
        yield api


def _auth(token: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **extra}


async def test_stream_delivers_a_failover_within_a_second_and_resumes_by_last_event_id(
    live: Api,
) -> None:
    api = live
    first, second = await setup_proxy(api, PROXY, "edge-a", "edge-b")
    path = f"/proxy/{PROXY}/stream"
    async with api.http.stream("GET", path, headers=_auth(api.tokens.alice)) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        stream = EventStream(response)
        # events from before the connection are not replayed
        await fail_over(api, PROXY, None, first)
        started = await stream.next_event(within=1.0, prefix="failover.")
        completed = await stream.next_event(within=1.0, prefix="failover.")
    assert started["event"] == "failover.started"
    assert completed["event"] == "failover.completed"
    assert completed["data"]["epoch"] == 1
    assert completed["data"]["data"]["targetInstanceId"] == first
    assert int(completed["id"]) > int(started["id"])

    await fail_over(api, PROXY, first, second)  # while nobody listens
    resume = _auth(api.tokens.admin, **{"Last-Event-ID": completed["id"]})
    async with api.http.stream("GET", path, headers=resume) as response:
        stream = EventStream(response)
        missed = [await stream.next_event(within=5.0, prefix="failover.") for _ in range(2)]
    assert [(e["event"], e["data"]["epoch"]) for e in missed] == [
        ("failover.started", 2),
        ("failover.completed", 2),
    ]


async def test_stream_is_for_the_owner_or_an_admin(live: Api) -> None:
    api = live
    await setup_proxy(api, PROXY)
    path = f"/proxy/{PROXY}/stream"
    assert await api.error("GET", path, None) == (401, "PROXY_FAILOVER_015")
    assert await api.error("GET", path, api.tokens.bob) == (404, "PROXY_FAILOVER_002")
    assert await api.error("GET", "/proxy/missing/stream", api.tokens.admin) == (
        404,
        "PROXY_FAILOVER_002",
    )
    bad_resume = {"Last-Event-ID": "abc"}
    assert await api.error("GET", path, api.tokens.alice, headers=bad_resume) == (
        400,
        "PROXY_FAILOVER_001",
    )


@pytest.mark.parametrize("bad", ["-1", "2147483648", "9223372036854775808", "99999999999999999999"])
async def test_a_last_event_id_past_the_event_sequence_is_400_on_both_databases(
    api: Api, bad: str
) -> None:
    """Past the 32-bit sequence the stream broke mid-response (PostgreSQL; at 2^63 on SQLite)."""
    await setup_proxy(api, PROXY)
    resume = {"Last-Event-ID": bad}
    path = f"/proxy/{PROXY}/stream"
    assert await api.error("GET", path, api.tokens.admin, headers=resume) == (
        400,
        "PROXY_FAILOVER_001",
    )


async def test_owner_stream_has_no_last_error_but_admin_stream_has(live: Api) -> None:
    api = live
    (instance,) = await setup_proxy(api, DETAIL_PROXY, "only")
    path = f"/proxy/{DETAIL_PROXY}/stream"
    async with api.http.stream("GET", path, headers=_auth(api.tokens.alice)) as response:
        stream = EventStream(response)
        for _ in range(3):  # the default unhealthyThreshold
            check = {"success": False, "latencyMs": 5, "error": DETAIL}
            await api.ok(
                "POST", f"/proxy/instances/{instance}/checks", api.tokens.alice, json=check
            )
        seen = await stream.next_event(within=5.0, prefix="instance.unhealthy")
    assert seen["data"]["data"]["instanceId"] == instance
    assert "lastError" not in seen["data"]["data"]
    assert DETAIL not in str(seen)

    resume = _auth(api.tokens.admin, **{"Last-Event-ID": str(int(seen["id"]) - 1)})
    async with api.http.stream("GET", path, headers=resume) as response:
        stream = EventStream(response)
        as_admin = await stream.next_event(within=5.0, prefix="instance.unhealthy")
    assert as_admin["id"] == seen["id"]
    assert as_admin["data"]["data"]["lastError"] == DETAIL
