"""PUT redundancy takes back what GET gave, checked as SPEC §7 says; execute refuses another
proxy's instance with 409/011; the limits that had drifted hold at the API. SQLite and PostgreSQL.
"""

from __future__ import annotations

from typing import Any

from tests.helpers.api import Api

PROXY = "proxy-val"
OTHER = "proxy-other"


async def register(api: Api, proxy: str, name: str, **fields: Any) -> dict[str, Any]:
    body = {"proxyId": proxy, "instanceData": {"instanceName": name, **fields}}
    created: dict[str, Any] = await api.ok(
        "POST", "/proxy/instances", api.tokens.admin, 201, json=body
    )
    return created


async def healthy(api: Api, instance_id: str) -> None:
    await api.ok(
        "PUT",
        f"/proxy/instances/{instance_id}/health",
        api.tokens.admin,
        json={"healthStatus": "healthy"},
    )


async def two_healthy(api: Api) -> tuple[dict[str, Any], dict[str, Any]]:
    first = await register(api, PROXY, "a", priority=1)
    second = await register(api, PROXY, "b", priority=2)
    await healthy(api, first["id"])
    await healthy(api, second["id"])
    return first, second


async def test_get_change_one_count_put_back_is_stored_as_given(api: Api) -> None:
    admin = api.tokens.admin
    first, second = await two_healthy(api)
    await api.ok(
        "POST",
        "/proxy/failover/execute",
        admin,
        json={"proxyId": PROXY, "targetInstanceId": first["id"], "reason": "start"},
    )
    status = await api.ok("GET", f"/proxy/{PROXY}/redundancy", admin)
    assert status["backupInstanceIds"] == [second["id"]]
    assert status["lastFailoverReason"] == "start"

    status["healthyInstances"] = 1
    status["unhealthyInstances"] = 1
    status["lastFailoverReason"] = "operator override"
    put = await api.ok("PUT", f"/proxy/{PROXY}/redundancy", admin, json=status)
    assert (put["healthyInstances"], put["unhealthyInstances"]) == (1, 1)
    assert put["lastFailoverReason"] == "operator override"
    assert put["overridden"] is True
    assert (put["epoch"], put["activeInstanceId"]) == (status["epoch"], first["id"])
    assert put["lastFailoverAt"] == status["lastFailoverAt"]
    assert put["updatedAt"] >= status["updatedAt"]
    assert await api.ok("GET", f"/proxy/{PROXY}/redundancy", admin) == put

    # the same body again (overridden now true, updatedAt older): still accepted
    again = await api.ok("PUT", f"/proxy/{PROXY}/redundancy", admin, json=put)
    assert again["healthyInstances"] == 1

    # backups may be reordered or emptied, as given
    emptied = await api.ok(
        "PUT", f"/proxy/{PROXY}/redundancy", admin, json={"backupInstanceIds": []}
    )
    assert emptied["backupInstanceIds"] == []


async def test_bad_redundancy_data_is_400_014_and_changes_nothing(api: Api) -> None:
    admin = api.tokens.admin
    first, second = await two_healthy(api)
    stranger = await register(api, OTHER, "x")
    before = await api.ok("GET", f"/proxy/{PROXY}/redundancy", admin)
    bad_bodies: list[dict[str, Any]] = [
        {"epoch": before["epoch"] + 1},
        {"proxyId": OTHER},
        {"activeInstanceId": first["id"]},  # there is no active instance yet
        {"backupInstanceIds": [stranger["id"]]},
        {"backupInstanceIds": [second["id"], second["id"]]},
        {"backupInstanceIds": ["x" * 65]},
        {"lastFailoverAt": "not a time"},
        {"updatedAt": 12},
        {"overridden": "yes"},
        {"totalInstances": 1, "healthyInstances": 2},
        {"redundancyLevel": "multi"},
        {"lastFailoverReason": "x" * 1001},
        {"totalInstances": -1},
    ]
    for body in bad_bodies:
        assert await api.error("PUT", f"/proxy/{PROXY}/redundancy", admin, json=body) == (
            400,
            "PROXY_FAILOVER_014",
        ), body
    assert await api.ok("GET", f"/proxy/{PROXY}/redundancy", admin) == before
    # an unknown field is 001, as everywhere
    assert await api.error("PUT", f"/proxy/{PROXY}/redundancy", admin, json={"nope": 1}) == (
        400,
        "PROXY_FAILOVER_001",
    )


async def test_execute_to_another_proxys_instance_is_409_011(api: Api) -> None:
    admin = api.tokens.admin
    await two_healthy(api)
    stranger = await register(api, OTHER, "x")
    await healthy(api, stranger["id"])
    before = await api.ok("GET", f"/proxy/{PROXY}/redundancy", admin)
    response = await api.call(
        "POST",
        "/proxy/failover/execute",
        admin,
        json={"proxyId": PROXY, "targetInstanceId": stranger["id"]},
    )
    assert response.status_code == 409, response.text
    error = response.json()["error"]
    assert error["code"] == "PROXY_FAILOVER_011"
    assert error["details"]["reason"] == "other proxy"
    assert await api.ok("GET", f"/proxy/{PROXY}/redundancy", admin) == before
    assert await api.ok("GET", f"/proxy/{PROXY}/failover/events", admin) == []
    # an id nobody has is still 404/004
    missing = "00000000-0000-4000-8000-000000000000"
    assert await api.error(
        "POST",
        "/proxy/failover/execute",
        admin,
        json={"proxyId": PROXY, "targetInstanceId": missing},
    ) == (404, "PROXY_FAILOVER_004")


async def test_instance_name_and_priority_limits_are_cores(api: Api) -> None:
    admin = api.tokens.admin
    assert (await register(api, PROXY, "n" * 128))["instanceName"] == "n" * 128
    bodies = [
        {"instanceName": "n" * 129},
        {"instanceName": "p", "priority": 1_000_001},
        {"instanceName": "p", "priority": -1_000_001},
    ]
    for data in bodies:
        assert await api.error(
            "POST", "/proxy/instances", admin, json={"proxyId": PROXY, "instanceData": data}
        ) == (400, "PROXY_FAILOVER_001"), data
    edge = await register(api, PROXY, "edge", priority=-1_000_000)
    assert edge["priority"] == -1_000_000
    assert await api.error(
        "PATCH", f"/proxy/instances/{edge['id']}", admin, json={"priority": 2**31 - 1}
    ) == (400, "PROXY_FAILOVER_001")
