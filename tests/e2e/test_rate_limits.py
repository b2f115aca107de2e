"""Per-caller rate limits through the whole app: 429/022 with ``Retry-After``, in the envelope.

Before: nothing limited a caller, and 20 loops of one non-admin reading ``limit=1000`` event lists
raised everyone's median latency from 2 ms to 386 ms.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from proxy_failover.entrypoints.api import create_app
from proxy_failover.entrypoints.api.auth import mint_token
from proxy_failover.entrypoints.api.ratelimit import requested_rows
from proxy_failover.store.tables import events
from tests.helpers.api import SECRET, Api, Tokens, api_settings, in_process

#: Budgets that refill so slowly that no test's own pace adds a token (timing-proof).
TIGHT = {
    "rate_limit_per_second": 0.01,
    "rate_limit_burst": 3,
    "rate_limit_heavy_rows_per_second": 10,
    "rate_limit_heavy_rows_burst": 1000,
    "rate_limit_reports_per_second": 0.01,
    "rate_limit_reports_burst": 2,
    "rate_limit_admin_factor": 2,
}


async def _api(database_url: str, tokens: Tokens, **settings: Any) -> AsyncIterator[Api]:
    app = create_app(api_settings(database_url, **settings))
    async with in_process(app, tokens) as api:
        yield api


@pytest.fixture
async def tight(database_url: str, tokens: Tokens) -> AsyncIterator[Api]:
    async for api in _api(database_url, tokens, **TIGHT):
        yield api


def _assert_429(response: httpx.Response, budget: str) -> int:
    assert response.status_code == 429, response.text
    error = response.json()["error"]
    assert error["code"] == "PROXY_FAILOVER_022"
    assert error["statusCode"] == 429
    assert error["details"]["limit"] == budget
    seconds = int(response.headers["Retry-After"])
    assert seconds == error["details"]["retryAfterSeconds"] >= 1
    return seconds


async def test_a_caller_over_its_burst_gets_429_with_retry_after_then_recovers(
    database_url: str, tokens: Tokens
) -> None:
    async for api in _api(database_url, tokens, rate_limit_per_second=2, rate_limit_burst=1):
        assert (await api.call("GET", "/proxies", tokens.alice)).status_code == 200
        refused = await api.call("GET", "/proxies", tokens.alice)
        if refused.status_code == 200:  # a call slower than half a second earned a token back
            refused = await api.call("GET", "/proxies", tokens.alice)
        seconds = _assert_429(refused, "requests")
        assert seconds == 1
        # Waiting what the server said is enough: 2 tokens/s refill the 1-token bucket in 0.5 s.
        await asyncio.sleep(seconds)
        assert (await api.call("GET", "/proxies", tokens.alice)).status_code == 200


async def test_the_error_is_documented_in_the_openapi_errors(tight: Api) -> None:
    document = (await tight.call("GET", "/openapi.json")).json()
    responses = document["paths"]["/proxies"]["get"]["responses"]
    assert "429" in responses


async def test_a_greedy_caller_does_not_throttle_another(tight: Api) -> None:
    for _ in range(3):
        await tight.call("GET", "/proxies", tight.tokens.alice)
    _assert_429(await tight.call("GET", "/proxies", tight.tokens.alice), "requests")
    for _ in range(3):
        assert (await tight.call("GET", "/proxies", tight.tokens.bob)).status_code == 200


async def test_callers_are_told_apart_by_sub_not_by_token(tight: Api) -> None:
    """Two tokens of one user share that user's budget."""
    other_token = mint_token(SECRET, "alice", ttl_seconds=600)
    for _ in range(3):
        await tight.call("GET", "/proxies", tight.tokens.alice)
    _assert_429(await tight.call("GET", "/proxies", other_token), "requests")


async def test_admins_get_the_factor_more(tight: Api) -> None:
    admin = tight.tokens.admin
    answers = [(await tight.call("GET", "/proxies", admin)).status_code for _ in range(7)]
    assert answers == [200] * 6 + [429]


async def test_unauthenticated_requests_are_limited_by_address_and_write_no_audit(
    tight: Api,
) -> None:
    statuses = [
        (await tight.call("POST", "/proxy/failover/config", None, json={})).status_code
        for _ in range(4)
    ]
    assert statuses == [401, 401, 401, 429]
    _assert_429(await tight.call("GET", "/proxies", "not-a-token"), "requests")
    # ...while a caller with a valid token, from the same address, is served.
    assert (await tight.call("GET", "/proxies", tight.tokens.bob)).status_code == 200
    assert await tight.ok("GET", "/audit", tight.tokens.admin) == []


async def test_health_and_metrics_probes_are_never_limited(tight: Api) -> None:
    for _ in range(20):
        assert (await tight.call("GET", "/healthz")).status_code == 200
    assert (await tight.call("GET", "/proxies", tight.tokens.alice)).status_code == 200


async def test_reports_have_their_own_budget(tight: Api) -> None:
    """A reporter that spent its request budget still reports health, and the other way round."""
    alice = tight.tokens.alice
    await tight.ok("POST", "/proxy/failover/config", alice, 201, json={"proxyId": "p1"})
    instance = await tight.ok(
        "POST",
        "/proxy/instances",
        alice,
        201,
        json={"proxyId": "p1", "instanceData": {"instanceName": "a", "endpoint": "127.0.0.1:1"}},
    )
    path = f"/proxy/instances/{instance['id']}/health"
    assert (await tight.call("GET", "/proxies", alice)).status_code == 200  # the third
    _assert_429(await tight.call("GET", "/proxies", alice), "requests")
    report = {"healthStatus": "healthy"}
    assert [(await tight.call("PUT", path, alice, json=report)).status_code for _ in range(2)] == [
        200,
        200,
    ]
    _assert_429(await tight.call("PUT", path, alice, json=report), "reports")


async def test_heavy_reads_cost_the_rows_they_return(database_url: str, tokens: Tokens) -> None:
    """A list is let in while the rows budget is not in debt and pays what it listed."""
    async for api in _api(database_url, tokens, **(TIGHT | {"rate_limit_burst": 100})):
        await _heavy_reads_cost_the_rows_they_return(api)


async def _heavy_reads_cost_the_rows_they_return(tight: Api) -> None:
    # TIGHT: 10 rows/s, 1,000 at once; a list is charged its limit, refunded what it did not list
    alice = tight.tokens.alice
    await tight.ok("POST", "/proxy/failover/config", alice, 201, json={"proxyId": "p1"})
    start = datetime.now(UTC) + timedelta(seconds=1)
    seeded = [
        {"id": str(uuid.uuid4()), "proxy_id": "p1", "user_id": "alice"}
        | {"event_type": "failover", "reason": "seeded", "status": "completed"}
        | {"triggered_by": "system", "epoch": 1, "created_at": start + timedelta(seconds=n)}
        for n in range(300)
    ]
    assert tight.app is not None
    async with tight.app.state.runtime.service.store.engine.begin() as conn:
        await conn.execute(sa.insert(events), seeded)
    path = "/proxy/p1/failover/events?limit=1000"
    # A refused or empty list costs no rows, however large its limit: polling stays cheap.
    missing = await tight.call("GET", "/proxy/none/failover/events?limit=1000", alice)
    assert missing.status_code == 404
    for _ in range(3):  # 900 of the 1,000-row burst
        response = await tight.call("GET", path, alice)
        assert response.json()["count"] == 300
    assert (await tight.call("GET", path, alice)).status_code == 200  # admitted: into debt
    # 200 rows in debt at 10 rows/s: about 20 s to the next list; other reads go on.
    seconds = _assert_429(await tight.call("GET", path, alice), "heavy")
    assert 19 <= seconds <= 21
    assert (await tight.call("GET", "/proxies", tight.tokens.bob)).status_code == 200


async def test_heavy_reads_sent_together_cannot_all_pass_on_one_token(
    database_url: str, tokens: Tokens
) -> None:
    """Each is charged its limit when let in: of 20 reads at once, only what the burst covers."""
    settings = TIGHT | {"rate_limit_burst": 100, "rate_limit_heavy_rows_burst": 2000}
    async for api in _api(database_url, tokens, **settings):
        path = "/proxy/none/failover/events?limit=1000"  # 404: each refunds its 1,000 after
        statuses = await asyncio.gather(*(api.call("GET", path, tokens.alice) for _ in range(20)))
        answered = [response.status_code for response in statuses]
        assert answered.count(404) <= 3  # 2,000 rows: two, or three when one was refunded
        assert answered.count(429) >= 17


@pytest.mark.parametrize(
    ("method", "path", "query", "rows"),
    [
        ("GET", "/proxy/p/failover/events", b"", 50),
        ("GET", "/proxy/p/failover/events", b"status=failed&limit=1000", 1000),
        ("GET", "/proxy/p/failover/events", b"limit=7&type=failover", 7),
        ("GET", "/proxy/p/failover/events", b"limit=5000", 1000),
        ("GET", "/proxy/p/failover/events", b"limit=abc", 50),
        ("GET", "/proxy/p/failover/events", b"limit=0", 50),
        ("GET", "/proxy/p/failover/events", b"nolimit=7", 50),
        ("GET", "/proxy/p/webhooks/deliveries", b"limit=7", 7),
        ("GET", "/audit", b"", 100),
        ("POST", "/audit", b"", 0),
        ("GET", "/proxy/p/failover/events/x", b"", 0),
        ("GET", "/proxies", b"limit=1000", 0),
    ],
)
def test_the_lists_that_grow_ask_for_their_limit(
    method: str, path: str, query: bytes, rows: int
) -> None:
    assert requested_rows(method, path, query) == rows


async def test_zero_turns_rate_limits_off(database_url: str, tokens: Tokens) -> None:
    async for api in _api(database_url, tokens, rate_limit_per_second=0, rate_limit_burst=1):
        started = time.monotonic()
        answers = {(await api.call("GET", "/proxies", tokens.alice)).status_code for _ in range(50)}
        assert answers == {200}, time.monotonic() - started


async def test_default_limits_let_a_busy_client_through(api: Api) -> None:
    """Defaults: 400 at once and 200/s for a non-admin, so ordinary use never sees a 429."""
    alice = api.tokens.alice
    answers = [(await api.call("GET", "/proxies", alice)).status_code for _ in range(150)]
    assert set(answers) == {200}
