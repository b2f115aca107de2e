"""Validation at the edge and the error contract: SPEC codes, never 422, never 500 for input."""

from __future__ import annotations

import gc
import json
import os
from pathlib import Path
from typing import Any

import pytest

from proxy_failover.entrypoints.api import create_app
from proxy_failover.entrypoints.api.middleware import MAX_BODY_BYTES
from tests.helpers.api import SECRET, Api, api_settings

PROXY = "proxy-123"
JSON = {"Content-Type": "application/json"}


async def _instance(api: Api) -> str:
    data = await api.ok(
        "POST",
        "/proxy/instances",
        api.tokens.alice,
        201,
        json={"proxyId": PROXY, "instanceData": {"instanceName": "edge-a"}},
    )
    return str(data["id"])


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"proxyId": PROXY, "config": {"failoverStrategy": "random"}}, "PROXY_FAILOVER_003"),
        ({"proxyId": PROXY, "config": {"unhealthyThreshold": 0}}, "PROXY_FAILOVER_001"),
        ({"proxyId": PROXY, "config": {"unhealthyThreshold": "3"}}, "PROXY_FAILOVER_001"),
        ({"proxyId": PROXY, "config": {"surprise": 1}}, "PROXY_FAILOVER_001"),
        ({"proxyId": PROXY, "config": {"failover_strategy": "priority"}}, "PROXY_FAILOVER_001"),
        ({"proxyId": "has space", "config": {}}, "PROXY_FAILOVER_001"),
        ({"proxyId": "failover", "config": {}}, "PROXY_FAILOVER_001"),
        ({"config": {}}, "PROXY_FAILOVER_001"),
        (
            {
                "proxyId": PROXY,
                "config": {"healthCheckIntervalSeconds": 1, "healthCheckTimeoutSeconds": 2},
            },
            "PROXY_FAILOVER_001",
        ),
        ([1, 2], "PROXY_FAILOVER_001"),
    ],
)
async def test_invalid_config_bodies(sqlite_api: Api, body: Any, code: str) -> None:
    assert await sqlite_api.error(
        "POST", "/proxy/failover/config", sqlite_api.tokens.alice, json=body
    ) == (400, code)
    assert await sqlite_api.error("GET", f"/proxy/failover/config/{PROXY}", sqlite_api.tokens.alice)


async def test_field_specific_codes(sqlite_api: Api) -> None:
    api, alice, admin = sqlite_api, sqlite_api.tokens.alice, sqlite_api.tokens.admin
    instance = await _instance(api)
    health = f"/proxy/instances/{instance}/health"
    cases: list[tuple[str, str, str, Any, str]] = [
        ("PUT", health, alice, {"healthStatus": "sick"}, "PROXY_FAILOVER_006"),
        ("PUT", health, alice, {"healthStatus": None}, "PROXY_FAILOVER_006"),
        ("PUT", health, alice, {}, "PROXY_FAILOVER_001"),
        (
            "PUT",
            health,
            alice,
            {"healthStatus": "healthy", "metrics": {"cpuPercent": 101}},
            "PROXY_FAILOVER_007",
        ),
        ("POST", f"/proxy/instances/{instance}/metrics", alice, {}, "PROXY_FAILOVER_007"),
        (
            "POST",
            f"/proxy/instances/{instance}/metrics",
            alice,
            {"errorRate": 2},
            "PROXY_FAILOVER_007",
        ),
        (
            "PUT",
            f"/proxy/{PROXY}/redundancy",
            admin,
            {"totalInstances": -1},
            "PROXY_FAILOVER_014",
        ),
        (
            "PUT",
            f"/proxy/{PROXY}/redundancy",
            admin,
            {"totalInstances": 1, "healthyInstances": 2},
            "PROXY_FAILOVER_014",
        ),
        (
            "PUT",
            f"/proxy/{PROXY}/redundancy",
            admin,
            {"totalInstances": 3, "redundancyLevel": "dual"},
            "PROXY_FAILOVER_014",
        ),
        (
            "POST",
            f"/proxy/instances/{instance}/checks",
            alice,
            {"success": "yes"},
            "PROXY_FAILOVER_001",
        ),
        (
            "PATCH",
            f"/proxy/instances/{instance}",
            alice,
            {"adminState": "off"},
            "PROXY_FAILOVER_001",
        ),
        (
            "PUT",
            "/proxy/failover/events/x/complete",
            admin,
            {"status": "pending"},
            "PROXY_FAILOVER_001",
        ),
    ]
    for method, path, token, body, code in cases:
        assert await api.error(method, path, token, json=body) == (400, code), (path, body)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"proxyId": "p"',
        b'{"proxyId": NaN}',
        b'{"proxyId": "p", "x": Infinity}',
        b'{"proxyId": "p", "x": -Infinity}',
        b'{"proxyId": "p", "x": 1e400}',
        b"\xff\xfe",
        b'{"proxyId": "p", "x": ' + b"[" * 40 + b"]" * 40 + b"}",
        b"[" * 100_00 + b"]" * 100_00,
        b"",
    ],
)
async def test_malformed_json_is_400_001(sqlite_api: Api, raw: bytes) -> None:
    status, code = await sqlite_api.error(
        "POST", "/proxy/failover/evaluate", sqlite_api.tokens.alice, content=raw, headers=JSON
    )
    assert (status, code) == (400, "PROXY_FAILOVER_001")


async def test_nesting_depth_limit_is_32(sqlite_api: Api) -> None:
    def nested(depth: int) -> bytes:
        # depth counts the outer object: {"proxyId":..., "metadata": {...}} nests within.
        inner = "1"
        for _ in range(depth - 2):
            inner = f'{{"a": {inner}}}'
        return (
            json.dumps({"proxyId": PROXY, "instanceData": {}})
            .replace(
                '"instanceData": {}',
                f'"instanceData": {{"instanceName": "deep", "metadata": {inner}}}',
            )
            .encode()
        )

    alice = sqlite_api.tokens.alice
    ok = await sqlite_api.call("POST", "/proxy/instances", alice, content=nested(32), headers=JSON)
    assert ok.status_code == 201, ok.text
    assert await sqlite_api.error(
        "POST", "/proxy/instances", alice, content=nested(33), headers=JSON
    ) == (400, "PROXY_FAILOVER_001")


async def test_non_json_content_type_is_400(sqlite_api: Api) -> None:
    response = await sqlite_api.call(
        "POST",
        "/proxy/failover/evaluate",
        sqlite_api.tokens.alice,
        content=b"proxyId=p",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 400
    assert "application/json" in response.json()["error"]["message"]


async def test_body_over_64_kib_by_header_is_413(sqlite_api: Api) -> None:
    big = b'{"proxyId": "' + b"a" * MAX_BODY_BYTES + b'"}'
    assert await sqlite_api.error(
        "POST", "/proxy/failover/evaluate", sqlite_api.tokens.alice, content=big, headers=JSON
    ) == (413, "PROXY_FAILOVER_017")


async def test_streamed_body_over_64_kib_is_413_without_reading_it_whole(
    sqlite_api: Api,
) -> None:
    sent = 0
    chunk = b" " * 8192

    async def endless() -> Any:
        nonlocal sent
        for _ in range(1000):  # 8 MB if read whole
            sent += len(chunk)
            yield chunk

    status, code = await sqlite_api.error(
        "POST", "/proxy/failover/evaluate", sqlite_api.tokens.alice, content=endless(), headers=JSON
    )
    assert (status, code) == (413, "PROXY_FAILOVER_017")
    assert sent <= MAX_BODY_BYTES + 2 * len(chunk)


async def test_a_body_of_exactly_64_kib_is_accepted(sqlite_api: Api) -> None:
    prefix = b'{"proxyId": "' + PROXY.encode() + b'", "x": "'
    body = prefix + b"a" * (MAX_BODY_BYTES - len(prefix) - 2) + b'"}'
    assert len(body) == MAX_BODY_BYTES
    # not 413: the unknown field is what is refused
    assert await sqlite_api.error(
        "POST", "/proxy/failover/evaluate", sqlite_api.tokens.alice, content=body, headers=JSON
    ) == (400, "PROXY_FAILOVER_001")


async def test_unknown_route_404_020_and_wrong_method_405_021(sqlite_api: Api) -> None:
    alice = sqlite_api.tokens.alice
    assert await sqlite_api.error("GET", "/nowhere", alice) == (404, "PROXY_FAILOVER_020")
    assert await sqlite_api.error("GET", "/proxy/a/b/c/d/e", None) == (404, "PROXY_FAILOVER_020")
    assert await sqlite_api.error("DELETE", "/proxies", alice) == (405, "PROXY_FAILOVER_021")
    assert await sqlite_api.error("GET", "/proxy/failover/execute", alice) == (
        405,
        "PROXY_FAILOVER_021",
    )


async def test_checks_come_in_spec_order(sqlite_api: Api) -> None:
    api = sqlite_api
    bad_body = {"proxyId": PROXY, "targetInstanceId": 5}
    # 401 before 403 before 400 before 404
    assert await api.error("POST", "/proxy/failover/execute", None, json=bad_body) == (
        401,
        "PROXY_FAILOVER_015",
    )
    assert await api.error(
        "POST", "/proxy/failover/execute", None, content=b"{oops", headers=JSON
    ) == (401, "PROXY_FAILOVER_015")
    assert await api.error("POST", "/proxy/failover/execute", api.tokens.alice, json=bad_body) == (
        403,
        "PROXY_FAILOVER_016",
    )
    assert await api.error("POST", "/proxy/failover/execute", api.tokens.admin, json=bad_body) == (
        400,
        "PROXY_FAILOVER_001",
    )
    missing = {"proxyId": "nope", "targetInstanceId": "x"}
    assert await api.error("POST", "/proxy/failover/execute", api.tokens.admin, json=missing) == (
        404,
        "PROXY_FAILOVER_002",
    )
    # bob's body is invalid: 400 even though the instance is not his (400 before 404)
    instance = await _instance(api)
    health = f"/proxy/instances/{instance}/health"
    assert await api.error("PUT", health, api.tokens.bob, json={"healthStatus": "x"}) == (
        400,
        "PROXY_FAILOVER_006",
    )
    assert await api.error("PUT", health, api.tokens.bob, json={"healthStatus": "healthy"}) == (
        404,
        "PROXY_FAILOVER_004",
    )


def _break(database: Path) -> None:
    os.replace(database, database.with_suffix(".moved"))
    for suffix in ("-wal", "-shm"):
        Path(f"{database}{suffix}").unlink(missing_ok=True)
    database.mkdir()


def _repair(database: Path) -> None:
    database.rmdir()
    os.replace(database.with_suffix(".moved"), database)


# aiosqlite drops the Connection object of a failed connect without closing it; collect those
# here (see the end of the test) so their ResourceWarning does not land in a later test.
@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_storage_outage_is_503_018_with_retry_after(sqlite_url: str, tmp_path: Path) -> None:
    """The database file disappears under a running app: 503 with Retry-After, then recovery."""
    import httpx

    from tests.helpers.api import Tokens

    tokens = Tokens.signed_with(SECRET)
    database = Path(sqlite_url.removeprefix("sqlite+aiosqlite:///"))
    app = create_app(api_settings(sqlite_url))
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://t") as http,
    ):
        api = Api(http, tokens)
        await api.ok("POST", "/proxy/failover/config", tokens.alice, 201, json={"proxyId": PROXY})
        events = f"/proxy/{PROXY}/failover/events"
        await api.ok("GET", events, tokens.alice)
        # The outage: the file becomes a directory, pooled connections are dropped.
        _break(database)
        await app.state.runtime.store.engine.dispose()

        response = await api.call("GET", events, tokens.alice)
        assert response.status_code == 503, response.text
        assert response.json()["error"]["code"] == "PROXY_FAILOVER_018"
        assert int(response.headers["Retry-After"]) > 0
        ready = await api.call("GET", "/readyz")
        assert ready.status_code == 503
        assert ready.headers["Retry-After"]

        _repair(database)
        await app.state.runtime.store.engine.dispose()
        assert (await api.call("GET", "/readyz")).status_code == 200
    gc.collect()
