"""QA regression: the live stream hides health-check detail from non-admins (SPEC §7).

A non-admin "never sees lastError, lastLatencyMs": the instance events of the stream carried the
probe error verbatim to the proxy's owner.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.e2e.conftest import Api, Tokens, api_settings
from tests.e2e.test_stream import EventStream, _auth
from tests.helpers.live_app import live_api, setup_proxy

PROXY = "qa-stream-detail"
DETAIL = "connection refused by 10.0.0.7"


@pytest.fixture
async def live(sqlite_url: str, tokens: Tokens) -> AsyncIterator[Api]:
    async with live_api(api_settings(sqlite_url), tokens) as api:
        yield api


async def test_owner_stream_has_no_last_error_but_admin_stream_has(live: Api) -> None:
    api = live
    (instance,) = await setup_proxy(api, PROXY, "only")
    path = f"/proxy/{PROXY}/stream"
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
