"""``POST``/``GET /v3/discovery:endpoints`` (Envoy REST-JSON EDS): what it answers, to whom, and
how it refuses; Envoy's own requests against the real binary are in test_dataplane_envoy.py."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from proxy_failover.core.envoy import EDS_TYPE_URL
from tests.helpers.api import Api
from tests.helpers.live_app import fail_over

PATH = "/v3/discovery:endpoints"
PROXY = "eds"


async def _proxy_with_three(api: Api) -> dict[str, str]:
    """edge-a active; edge-b and edge-c healthy backups. Returns name -> id."""
    alice = api.tokens.alice
    await api.ok("POST", "/proxy/failover/config", alice, 201, json={"proxyId": PROXY})
    ids: dict[str, str] = {}
    for rank, name in enumerate(("edge-a", "edge-b", "edge-c"), start=1):
        data = {"instanceName": name, "endpoint": f"10.0.0.{rank}:1935", "priority": rank}
        body = {"proxyId": PROXY, "instanceData": data}
        ids[name] = (await api.ok("POST", "/proxy/instances", alice, 201, json=body))["id"]
        await api.ok(
            "PUT",
            f"/proxy/instances/{ids[name]}/health",
            alice,
            json={"healthStatus": "healthy"},
        )
    await fail_over(api, PROXY, None, ids["edge-a"])
    return ids


def _request(*names: str, **extra: Any) -> dict[str, Any]:
    """What Envoy sends (snake_case, its node included)."""
    return {
        "version_info": "",
        "node": {"id": "edge-envoy", "cluster": "pfo", "extensions": [{"name": "x" * 200}] * 400},
        "resource_names": list(names),
        "type_url": EDS_TYPE_URL,
        **extra,
    }


def _priorities(response: dict[str, Any]) -> dict[int, list[str]]:
    (assignment,) = response["resources"]
    return {
        group["priority"]: [lb["endpoint"]["hostname"] for lb in group["lb_endpoints"]]
        for group in assignment["endpoints"]
    }


async def test_the_owner_gets_the_assignment_and_an_unchanged_state_the_same_version(
    api: Api,
) -> None:
    ids = await _proxy_with_three(api)
    body = _request(PROXY)
    assert len(json.dumps(body)) > 64 * 1024  # larger than every other route accepts
    response = await api.call("POST", PATH, api.tokens.alice, json=body)
    assert response.status_code == 200, response.text
    first = response.json()
    assert first["type_url"] == EDS_TYPE_URL
    assert first["resources"][0]["cluster_name"] == PROXY
    assert _priorities(first) == {0: ["edge-a"], 1: ["edge-b", "edge-c"]}
    address = first["resources"][0]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
    assert address == {"socket_address": {"address": "10.0.0.1", "port_value": 1935}}

    # Envoy sends back the version it holds; an unchanged state answers that very version.
    again = await api.call(
        "POST", PATH, api.tokens.alice, json=_request(PROXY, version_info=first["version_info"])
    )
    assert again.json() == first

    await fail_over(api, PROXY, ids["edge-a"], ids["edge-b"])
    moved = (await api.call("POST", PATH, api.tokens.alice, json=body)).json()
    assert moved["version_info"] != first["version_info"]
    assert _priorities(moved) == {0: ["edge-b"], 1: ["edge-a", "edge-c"]}

    # The GET answers the same, and the admin may read any proxy.
    by_get = await api.call("GET", PATH, api.tokens.admin, params={"resource_names": PROXY})
    assert by_get.status_code == 200, by_get.text
    assert by_get.json() == moved


async def test_camel_case_names_are_accepted_as_proto3_json_allows(api: Api) -> None:
    await _proxy_with_three(api)
    # What is not read is not walked either: a deep node is Envoy's business.
    deep: dict[str, object] = {"id": "envoy"}
    for _ in range(100):
        deep = {"nested": deep}
    response = await api.call("POST", PATH, api.tokens.alice, json=_request(PROXY, node=deep))
    assert response.status_code == 200, response.text
    body = {"resourceNames": [PROXY], "typeUrl": EDS_TYPE_URL, "versionInfo": "x"}
    response = await api.call("POST", PATH, api.tokens.alice, json=body)
    assert response.status_code == 200, response.text
    assert _priorities(response.json())[0] == ["edge-a"]


async def test_unknown_and_other_owners_proxies_answer_the_same_404(api: Api) -> None:
    await _proxy_with_three(api)
    bob = api.tokens.bob
    assert await api.error("POST", PATH, bob, json=_request(PROXY)) == (404, "PROXY_FAILOVER_002")
    assert await api.error("POST", PATH, bob, json=_request("nope")) == (404, "PROXY_FAILOVER_002")
    # One unknown name fails the whole request (Envoy keeps what it has and retries).
    mixed = _request(PROXY, "nope")
    assert await api.error("POST", PATH, api.tokens.alice, json=mixed) == (
        404,
        "PROXY_FAILOVER_002",
    )
    assert await api.error("POST", PATH, api.tokens.admin, json=mixed) == (
        404,
        "PROXY_FAILOVER_002",
    )
    response = await api.call("GET", PATH, bob, params={"resource_names": PROXY})
    assert response.status_code == 404


async def test_a_refused_request_leaves_no_read_running_behind_its_answer(api: Api) -> None:
    """The known proxy's read ends with the request, not after it on a connection nobody
    waits for (which a shutdown then finds still checked out)."""
    await _proxy_with_three(api)
    for names in ((PROXY, "nope"), ("nope", PROXY)):
        mixed = _request(*names)
        assert (await api.error("POST", PATH, api.tokens.admin, json=mixed))[0] == 404
        reads = [
            task
            for task in asyncio.all_tasks()
            if "get_desired_state" in getattr(task.get_coro(), "__qualname__", "")
        ]
        assert reads == []


async def test_bad_requests_are_refused_with_the_spec_codes(api: Api) -> None:
    alice = api.tokens.alice
    assert await api.error("POST", PATH, None, json=_request(PROXY)) == (401, "PROXY_FAILOVER_015")
    cases: list[dict[str, Any]] = [
        _request(),  # no cluster named: EDS has no wildcard
        _request(PROXY, type_url="type.googleapis.com/envoy.config.cluster.v3.Cluster"),
        _request("not a proxy id"),
        {"resource_names": "eds"},
        {"resource_names": [1]},
        {},
    ]
    for body in cases:
        assert await api.error("POST", PATH, alice, json=body) == (400, "PROXY_FAILOVER_001"), body
    assert await api.error("GET", PATH, alice, params={"resource_names": "a b"}) == (
        400,
        "PROXY_FAILOVER_001",
    )
    assert (await api.call("GET", PATH, alice)).status_code == 400
    raw_bodies = [
        b"[1]",
        b"\xff\xfe",
        b'{"resource_names": ["eds"], "version_info": NaN}',
        b'{"resource_names": ["eds"], "version_info": "\\u0000"}',
        b"{" * 100_000,
    ]
    for raw in raw_bodies:
        status = await api.error("POST", PATH, alice, content=raw)
        assert status == (400, "PROXY_FAILOVER_001"), raw[:40]
    latin = await api.call(
        "POST",
        PATH,
        alice,
        content=json.dumps(_request(PROXY)).encode(),
        headers={"Content-Type": "application/json; charset=latin-1"},
    )
    assert latin.status_code == 400
    huge = _request(PROXY, node={"id": "x" * (600 * 1024)})
    assert await api.error("POST", PATH, alice, json=huge) == (413, "PROXY_FAILOVER_017")


async def test_polling_is_a_read_and_leaves_no_audit_rows(api: Api) -> None:
    await _proxy_with_three(api)
    before = await api.ok("GET", "/audit", api.tokens.admin)
    for _ in range(3):
        response = await api.call("POST", PATH, api.tokens.alice, json=_request(PROXY))
        assert response.status_code == 200
    after = await api.ok("GET", "/audit", api.tokens.admin)
    assert [row for row in after if "discovery" in row["action"]] == []
    assert len(after) == len(before)
