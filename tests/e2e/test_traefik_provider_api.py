"""``GET /providers/traefik`` through the app: the caller's proxies only, the bare Traefik document,
the same bytes for the same state, and SPEC errors for bad input (the real Traefik polling it is
in test_dataplane_traefik.py)."""

from __future__ import annotations

from typing import Any

from tests.helpers.api import Api
from tests.helpers.live_app import fail_over

PATH = "/providers/traefik"


async def _proxy(api: Api, token: str, proxy_id: str, address: str) -> str:
    await api.ok("POST", "/proxy/failover/config", token, 201, json={"proxyId": proxy_id})
    body = {"proxyId": proxy_id, "instanceData": {"instanceName": "relay", "endpoint": address}}
    instance: dict[str, Any] = await api.ok("POST", "/proxy/instances", token, 201, json=body)
    await api.ok(
        "PUT",
        f"/proxy/instances/{instance['id']}/health",
        token,
        json={"healthStatus": "healthy"},
    )
    await fail_over(api, proxy_id, None, str(instance["id"]))
    return str(instance["id"])


async def _config(api: Api, token: str, **params: Any) -> dict[str, Any]:
    response = await api.call("GET", PATH, token, params=params)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    body: dict[str, Any] = response.json()
    return body


async def test_each_caller_gets_its_own_proxies_and_an_admin_every_one(api: Api) -> None:
    tokens = api.tokens
    await _proxy(api, tokens.alice, "alice-live", "10.0.0.1:1935")
    await _proxy(api, tokens.bob, "bob-live", "10.0.0.2:1935")

    alice = await _config(api, tokens.alice)
    assert set(alice) == {"http", "tcp"}  # no envelope: Traefik reads the document as is
    assert alice["tcp"]["services"] == {
        "pfo-alice-live": {"loadBalancer": {"servers": [{"address": "10.0.0.1:1935"}]}}
    }
    assert alice["http"]["services"]["pfo-alice-live"]["loadBalancer"]["servers"] == [
        {"url": "http://10.0.0.1:1935"}
    ]
    assert set((await _config(api, tokens.bob))["tcp"]["services"]) == {"pfo-bob-live"}
    admin = await _config(api, tokens.admin)
    assert set(admin["tcp"]["services"]) == {"pfo-alice-live", "pfo-bob-live"}
    only = await _config(api, tokens.admin, proxy="bob-live", scheme="https")
    assert only["http"]["services"] == {
        "pfo-bob-live": {"loadBalancer": {"servers": [{"url": "https://10.0.0.2:1935"}]}}
    }


async def test_standby_false_leaves_the_http_service_the_active_instance_alone(
    api: Api,
) -> None:
    first = await _proxy(api, api.tokens.alice, "pair", "10.0.0.1:1935")
    second = {"proxyId": "pair", "instanceData": {"instanceName": "b", "endpoint": "10.0.0.2:1"}}
    standby = await api.ok("POST", "/proxy/instances", api.tokens.alice, 201, json=second)
    health = {"healthStatus": "healthy"}
    path = f"/proxy/instances/{standby['id']}/health"
    await api.ok("PUT", path, api.tokens.alice, json=health)
    chained = (await _config(api, api.tokens.alice))["http"]["services"]
    assert chained["pfo-pair"]["failover"]["service"] == f"pfo-pair-{first}"
    assert chained["pfo-pair"]["failover"]["fallback"] == f"pfo-pair-{standby['id']}"
    alone = await _config(api, api.tokens.alice, standby="false")
    assert alone["http"]["services"] == {
        "pfo-pair": {"loadBalancer": {"servers": [{"url": "http://10.0.0.1:1935"}]}}
    }


async def test_an_unchanged_state_answers_the_same_bytes(api: Api) -> None:
    await _proxy(api, api.tokens.alice, "same", "10.0.0.1:1935")
    first = await api.call("GET", PATH, api.tokens.alice)
    second = await api.call("GET", PATH, api.tokens.alice)
    assert first.content == second.content  # Traefik skips an answer whose hash repeats


async def test_errors_are_spec_errors(api: Api) -> None:
    tokens = api.tokens
    await _proxy(api, tokens.bob, "bobs", "10.0.0.2:1935")
    assert await api.error("GET", PATH, None) == (401, "PROXY_FAILOVER_015")
    # another's proxy is as unknown as a missing one
    assert await api.error("GET", PATH, tokens.alice, params={"proxy": "bobs"}) == (
        404,
        "PROXY_FAILOVER_002",
    )
    assert await api.error("GET", PATH, tokens.admin, params={"proxy": "nope"}) == (
        404,
        "PROXY_FAILOVER_002",
    )
    assert await api.error("GET", PATH, tokens.alice, params={"proxy": "bad id!"}) == (
        400,
        "PROXY_FAILOVER_001",
    )
    assert await api.error("GET", PATH, tokens.alice, params={"scheme": "ftp"}) == (
        400,
        "PROXY_FAILOVER_001",
    )
    assert await api.error("GET", PATH, tokens.alice, params={"standby": "maybe"}) == (
        400,
        "PROXY_FAILOVER_001",
    )
    too_many = [("proxy", f"p{i}") for i in range(1001)]
    assert await api.error("GET", PATH, tokens.alice, params=too_many) == (
        400,
        "PROXY_FAILOVER_001",
    )
    assert (await _config(api, tokens.alice)) == {"http": {"services": {}}, "tcp": {"services": {}}}
