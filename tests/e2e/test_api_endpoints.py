"""Every endpoint over HTTP, on SQLite and PostgreSQL: the seed's examples, envelopes, statuses."""

from __future__ import annotations

import re
from typing import Any

from starlette.types import Message, Receive, Scope, Send

from tests.helpers.api import Api

ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
PROXY = "proxy-123"


async def _register(api: Api, name: str, priority: int, proxy: str = PROXY) -> str:
    data = await api.ok(
        "POST",
        "/proxy/instances",
        api.tokens.alice,
        201,
        json={"proxyId": proxy, "instanceData": {"instanceName": name, "priority": priority}},
    )
    return str(data["id"])


async def _healthy(api: Api, *instance_ids: str) -> None:
    for instance_id in instance_ids:
        await api.ok(
            "PUT",
            f"/proxy/instances/{instance_id}/health",
            api.tokens.alice,
            json={"healthStatus": "healthy"},
        )


async def test_seed_examples_work_unchanged(api: Api) -> None:
    alice, admin = api.tokens.alice, api.tokens.admin
    response = await api.call(
        "POST",
        "/proxy/failover/config",
        alice,
        json={
            "proxyId": "proxy-123",
            "config": {
                "failoverStrategy": "priority",
                "healthCheckIntervalSeconds": 30,
                "unhealthyThreshold": 3,
                "enableAutoFailover": True,
            },
        },
    )
    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"data", "message"}
    config = body["data"]
    assert config["proxyId"] == PROXY
    assert config["userId"] == "alice"
    assert config["failoverStrategy"] == "priority"
    assert config["healthCheckTimeoutSeconds"] == 5
    assert config["healthCheck"] == {"type": "http", "path": "/health", "expectedStatus": "200-399"}
    assert ISO_Z.match(config["createdAt"])
    assert "failover_strategy" not in config

    got = await api.ok("GET", f"/proxy/failover/config/{PROXY}", alice)
    assert got == config

    first = await api.ok(
        "POST",
        "/proxy/instances",
        alice,
        201,
        json={
            "proxyId": "proxy-123",
            "instanceData": {"instanceName": "proxy-instance-1", "priority": 100, "weight": 100},
        },
    )
    second_id = await _register(api, "proxy-instance-2", 200)
    assert first["healthStatus"] == "unknown"
    assert first["isActive"] is False
    assert "lastError" not in first  # health-check detail is admin-only

    listed = (await api.call("GET", f"/proxy/{PROXY}/instances", alice)).json()
    assert listed["count"] == 2
    assert [item["instanceName"] for item in listed["data"]] == [
        "proxy-instance-1",
        "proxy-instance-2",
    ]

    healthy = await api.ok(
        "PUT",
        f"/proxy/instances/{first['id']}/health",
        alice,
        json={"healthStatus": "healthy", "metrics": {"cpuPercent": 85, "memoryPercent": 90}},
    )
    assert healthy["healthStatus"] == "healthy"
    await _healthy(api, second_id)

    evaluation = await api.ok("POST", "/proxy/failover/evaluate", alice, json={"proxyId": PROXY})
    assert evaluation["shouldFailover"] is True
    assert evaluation["reasonCode"] == "no_active_instance"
    assert evaluation["targetInstanceId"] == first["id"]

    event = await api.ok(
        "POST",
        "/proxy/failover/execute",
        admin,
        json={
            "proxyId": "proxy-123",
            "sourceInstanceId": evaluation["sourceInstanceId"],
            "targetInstanceId": evaluation["targetInstanceId"],
            "reason": "Instance unhealthy",
        },
    )
    assert event["status"] == "in_progress"
    assert event["reason"] == "Instance unhealthy"
    assert isinstance(event["startTime"], int)
    assert event["startTime"] > 1_600_000_000_000  # epoch milliseconds

    completed = await api.ok(
        "PUT",
        f"/proxy/failover/events/{event['id']}/complete",
        admin,
        json={"status": "completed", "durationMs": 1500},
    )
    assert completed["status"] == "completed"
    assert completed["durationMs"] == 1500
    assert ISO_Z.match(completed["completedAt"])

    redundancy = await api.ok("GET", f"/proxy/{PROXY}/redundancy", alice)
    assert redundancy["activeInstanceId"] == first["id"]
    assert redundancy["backupInstanceIds"] == [second_id]
    assert redundancy["redundancyLevel"] == "dual"
    assert redundancy["isDegraded"] is False

    overridden = await api.ok(
        "PUT",
        f"/proxy/{PROXY}/redundancy",
        admin,
        json={
            "totalInstances": 2,
            "healthyInstances": 2,
            "activeInstanceId": first["id"],
            "redundancyLevel": "dual",
            "isDegraded": False,
        },
    )
    assert overridden["overridden"] is True

    events = (await api.call("GET", f"/proxy/{PROXY}/failover/events", alice)).json()
    assert events["count"] == 1
    assert events["data"][0]["id"] == event["id"]


async def test_partial_config_update_keeps_other_fields_and_answers_201(api: Api) -> None:
    alice = api.tokens.alice
    body = {"proxyId": PROXY, "config": {"unhealthyThreshold": 5, "healthCheck": {"path": "/hz"}}}
    await api.ok("POST", "/proxy/failover/config", alice, 201, json=body)
    changed = await api.ok(
        "POST",
        "/proxy/failover/config",
        alice,
        201,
        json={"proxyId": PROXY, "config": {"healthCheck": {"type": "tcp"}}},
    )
    assert changed["unhealthyThreshold"] == 5
    assert changed["healthCheck"] == {"type": "tcp", "path": "/hz", "expectedStatus": "200-399"}


async def test_instances_patch_delete_and_get(api: Api) -> None:
    alice = api.tokens.alice
    low = await _register(api, "edge-b", 200)
    high = await _register(api, "edge-a", 10)
    listed = await api.ok("GET", f"/proxy/{PROXY}/instances", alice)
    assert [item["id"] for item in listed] == [high, low]  # preference order

    patched = await api.ok(
        "PATCH",
        f"/proxy/instances/{low}",
        alice,
        json={"priority": 1, "adminState": "drain", "metadata": {"rack": "r1"}},
    )
    assert (patched["priority"], patched["adminState"], patched["metadata"]) == (
        1,
        "drain",
        {"rack": "r1"},
    )
    got = await api.ok("GET", f"/proxy/instances/{low}", alice)
    assert got["priority"] == 1

    deleted = await api.ok("DELETE", f"/proxy/instances/{low}", alice)
    assert deleted == {"id": low}
    assert await api.error("GET", f"/proxy/instances/{low}", alice) == (404, "PROXY_FAILOVER_004")
    duplicate = {"proxyId": PROXY, "instanceData": {"instanceName": "edge-a"}}
    assert await api.error("POST", "/proxy/instances", alice, json=duplicate) == (
        409,
        "PROXY_FAILOVER_005",
    )


async def test_checks_drive_the_state_machine_and_metrics_are_admin_readable(api: Api) -> None:
    alice, admin = api.tokens.alice, api.tokens.admin
    instance = await _register(api, "edge-a", 1)
    failure = {"success": False, "latencyMs": 12.5, "error": "connection refused"}
    for _ in range(2):
        after = await api.ok("POST", f"/proxy/instances/{instance}/checks", alice, json=failure)
        assert after["healthStatus"] == "unknown"
    after = await api.ok("POST", f"/proxy/instances/{instance}/checks", alice, json=failure)
    assert (after["healthStatus"], after["consecutiveFailures"]) == ("unhealthy", 3)
    assert "lastError" not in after
    as_admin = await api.ok("GET", f"/proxy/instances/{instance}", admin)
    assert as_admin["lastError"] == "connection refused"
    assert as_admin["lastLatencyMs"] == 12.5

    sample = {"cpuPercent": 12, "connectionCount": 7}
    stored = await api.ok("POST", f"/proxy/instances/{instance}/metrics", alice, json=sample)
    assert stored["instanceId"] == instance
    assert "sample" not in stored  # samples are admin-only
    samples = await api.ok("GET", f"/proxy/instances/{instance}/metrics", admin)
    assert samples[0]["sample"]["cpuPercent"] == 12
    assert samples[0]["sample"]["connectionCount"] == 7
    assert (await api.ok("GET", f"/proxy/instances/{instance}", alice))["activeConnections"] == 7


async def test_events_filters_and_limit(api: Api) -> None:
    alice, admin = api.tokens.alice, api.tokens.admin
    first = await _register(api, "edge-a", 1)
    second = await _register(api, "edge-b", 2)
    await _healthy(api, first, second)
    activation = await api.ok(
        "POST",
        "/proxy/failover/execute",
        admin,
        json={"proxyId": PROXY, "sourceInstanceId": None, "targetInstanceId": first},
    )
    assert activation["reason"] == "Manual failover"
    await api.ok(
        "PUT",
        f"/proxy/failover/events/{activation['id']}/complete",
        admin,
        json={"status": "completed"},
    )
    switch = await api.ok(
        "POST",
        "/proxy/failover/execute",
        admin,
        json={"proxyId": PROXY, "sourceInstanceId": first, "targetInstanceId": second},
    )
    assert switch["eventType"] == "switchover"
    path = f"/proxy/{PROXY}/failover/events"

    async def ids(**params: Any) -> list[str]:
        return [event["id"] for event in await api.ok("GET", path, alice, params=params)]

    assert await ids() == [switch["id"], activation["id"]]  # newest first
    assert await ids(limit=1) == [switch["id"]]
    assert await ids(type="failover") == [activation["id"]]
    assert await ids(status="in_progress") == [switch["id"]]
    assert await ids(status="", type="") == [switch["id"], activation["id"]]
    assert await ids(before=switch["createdAt"]) == [activation["id"]]
    for bad in ({"limit": 0}, {"limit": 1001}, {"before": "yesterday"}, {"status": "done"}):
        assert await api.error("GET", path, alice, params=bad) == (400, "PROXY_FAILOVER_001")


async def test_route_explain_and_proxies(api: Api) -> None:
    alice, bob, admin = api.tokens.alice, api.tokens.bob, api.tokens.admin
    first = await _register(api, "edge-a", 1)
    await _healthy(api, first)
    assert await api.error("GET", f"/proxy/{PROXY}/route", alice) == (409, "PROXY_FAILOVER_008")
    await api.ok(
        "POST",
        "/proxy/failover/execute",
        admin,
        json={"proxyId": PROXY, "sourceInstanceId": None, "targetInstanceId": first},
    )
    route = await api.ok("GET", f"/proxy/{PROXY}/route", alice)
    assert route == {
        "proxyId": PROXY,
        "instanceId": first,
        "instanceName": "edge-a",
        "endpoint": None,
        "isActive": True,
        "epoch": 1,
        "loadBalanced": False,
        "trafficAddress": None,
    }
    explanation = await api.ok("GET", f"/proxy/{PROXY}/explain", alice)
    assert explanation["activeInstanceId"] == first
    assert explanation["instances"][0]["isEligible"] is True
    assert explanation["evaluation"]["reasonCode"] == "active_healthy"

    for token, expected in ((alice, [PROXY]), (bob, []), (admin, [PROXY])):
        listed = (await api.call("GET", "/proxies", token)).json()
        assert [entry["proxyId"] for entry in listed["data"]] == expected
        assert listed["count"] == len(expected)
    (entry,) = await api.ok("GET", "/proxies", alice)
    assert entry["userId"] == "alice"
    assert entry["redundancy"]["activeInstanceId"] == first


async def test_operations_endpoints_and_offline_docs(api: Api) -> None:
    assert (await api.call("GET", "/healthz")).json() == {"status": "ok"}
    assert (await api.call("GET", "/readyz")).json() == {"status": "ready"}
    document = (await api.call("GET", "/openapi.json")).json()
    paths = document["paths"]
    for path in (
        "/proxy/failover/config",
        "/proxy/failover/config/{proxyId}",
        "/proxy/instances",
        "/proxy/{proxyId}/instances",
        "/proxy/instances/{instanceId}/health",
        "/proxy/failover/evaluate",
        "/proxy/failover/execute",
        "/proxy/failover/events/{eventId}/complete",
        "/proxy/{proxyId}/redundancy",
        "/proxy/{proxyId}/failover/events",
        "/proxies",
        "/proxy/instances/{instanceId}",
        "/proxy/instances/{instanceId}/checks",
        "/proxy/instances/{instanceId}/metrics",
        "/proxy/{proxyId}/route",
        "/proxy/{proxyId}/explain",
    ):
        assert path in paths, path
    assert "422" not in str(document)
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"

    page = await api.call("GET", "/docs")
    assert page.status_code == 200
    assert "cdn" not in page.text.lower()
    assets = re.findall(r'(?:src|href)="(/docs/static/[^"]+)"', page.text)
    assert len(assets) == 3
    for asset in assets:
        served = await api.call("GET", asset)
        assert served.status_code == 200, asset
        assert len(served.content) > 500


async def test_missing_resources_answer_their_codes(api: Api) -> None:
    alice, admin = api.tokens.alice, api.tokens.admin
    unknown = "0b4f8a56-0000-4000-8000-000000000000"
    for token in (alice, admin):
        for method, path in (
            ("GET", "/proxy/failover/config/nope"),
            ("GET", "/proxy/nope/redundancy"),
            ("GET", "/proxy/nope/instances"),
            ("GET", "/proxy/nope/failover/events"),
            ("GET", "/proxy/nope/route"),
            ("GET", "/proxy/nope/explain"),
        ):
            assert await api.error(method, path, token) == (404, "PROXY_FAILOVER_002"), path
        assert await api.error("GET", f"/proxy/instances/{unknown}", token) == (
            404,
            "PROXY_FAILOVER_004",
        )
        for odd in ("not-a-uuid", "x" * 300, "%20"):
            assert await api.error("GET", f"/proxy/instances/{odd}", token) == (
                404,
                "PROXY_FAILOVER_004",
            )
    complete = {"status": "completed"}
    for event_id in (unknown, "y" * 300):
        path = f"/proxy/failover/events/{event_id}/complete"
        assert await api.error("PUT", path, admin, json=complete) == (404, "PROXY_FAILOVER_012")


async def test_redundancy_short_path_matches_the_route_and_never_reads_stale(api: Api) -> None:
    """GET redundancy has a short path (hotpath.py); a query string forces the full route."""
    alice, admin = api.tokens.alice, api.tokens.admin
    first = await _register(api, "edge-a", 1)
    path = f"/proxy/{PROXY}/redundancy"

    async def both() -> bytes:
        short = await api.call("GET", path, alice)
        routed = await api.call("GET", path + "?via=route", alice)
        assert short.status_code == routed.status_code == 200
        assert short.content == routed.content
        assert short.headers["content-type"] == routed.headers["content-type"]
        return short.content

    before = await both()
    assert b'"healthyInstances":0' in before
    await _healthy(api, first)  # a write, then at once a read: never the old value
    assert b'"healthyInstances":1' in await both()
    await api.ok(
        "POST",
        "/proxy/failover/execute",
        admin,
        json={"proxyId": PROXY, "sourceInstanceId": None, "targetInstanceId": first},
    )
    assert f'"activeInstanceId":"{first}"'.encode() in await both()


async def test_short_path_serves_only_success_and_leaves_the_rest_to_the_route(api: Api) -> None:
    """The short path answers a valid read itself and passes anything else to the full route."""
    from proxy_failover.entrypoints.api.hotpath import ShortPaths

    assert api.app is not None
    await _register(api, "edge-a", 1)
    passed_on: list[str] = []

    async def route(scope: Scope, receive: Receive, send: Send) -> None:
        passed_on.append(scope["path"])

    short = ShortPaths(route, api=api.app)

    async def get(path: str, token: str | None, query: bytes = b"") -> list[dict[str, Any]]:
        headers = [(b"authorization", f"Bearer {token}".encode())] if token else []
        scope = {"type": "http", "method": "GET", "path": path, "query_string": query}
        sent: list[dict[str, Any]] = []

        async def send(message: Message) -> None:
            sent.append(dict(message))

        async def receive() -> Message:
            return {"type": "http.request", "body": b""}

        await short({**scope, "headers": headers}, receive, send)
        return sent

    served = await get(f"/proxy/{PROXY}/redundancy", api.tokens.alice)
    assert served[0]["status"] == 200
    assert b'"proxyId":"proxy-123"' in served[1]["body"]
    assert passed_on == []
    for path, token, query in (
        (f"/proxy/{PROXY}/redundancy", None, b""),
        (f"/proxy/{PROXY}/redundancy", "not-a-token", b""),
        (f"/proxy/{PROXY}/redundancy", api.tokens.bob, b""),  # not his
        ("/proxy/missing/redundancy", api.tokens.admin, b""),
        (f"/proxy/{PROXY}/redundancy", api.tokens.alice, b"x=1"),
        (f"/proxy/{PROXY}/instances", api.tokens.alice, b""),
    ):
        assert await get(path, token, query) == []
    assert len(passed_on) == 6


async def test_health_short_path_serves_only_valid_reports_and_replays_the_body(api: Api) -> None:
    """PUT health has a short path too: a report the route would accept is answered there, as the
    route answers it; anything else reaches the route with its body intact."""
    from proxy_failover.entrypoints.api.hotpath import ShortPaths

    assert api.app is not None
    first = await _register(api, "edge-a", 1)
    passed_on: list[tuple[str, bytes]] = []

    async def route(scope: Scope, receive: Receive, send: Send) -> None:
        message = await receive()
        passed_on.append((scope["path"], message["body"]))

    short = ShortPaths(route, api=api.app)

    async def put(
        path: str,
        token: str | None,
        body: bytes,
        content_type: bytes = b"application/json",
        query: bytes = b"",
    ) -> list[dict[str, Any]]:
        headers = [(b"content-type", content_type)]
        if token:
            headers.append((b"authorization", f"Bearer {token}".encode()))
        scope: dict[str, Any] = {
            "type": "http",
            "method": "PUT",
            "path": path,
            "query_string": query,
            "headers": headers,
        }
        sent: list[dict[str, Any]] = []

        async def send(message: Message) -> None:
            sent.append(dict(message))

        async def receive() -> Message:
            return {"type": "http.request", "body": body, "more_body": False}

        await short(scope, receive, send)
        if sent:
            assert scope["path_params"] == {"instanceId": first}  # for the audit row
            assert scope["state"]["caller"].user_id == "alice"
        return sent

    path = f"/proxy/instances/{first}/health"
    served = await put(path, api.tokens.alice, b'{"healthStatus":"healthy"}')
    assert served[0]["status"] == 200
    assert b'"healthStatus":"healthy"' in served[1]["body"]
    assert b'"message":"Instance health updated"' in served[1]["body"]
    assert b"lastError" not in served[1]["body"]  # alice is no admin: the route's view
    assert passed_on == []
    refused = (
        (path, None, b'{"healthStatus":"healthy"}', b"application/json", b""),
        (path, "not-a-token", b'{"healthStatus":"healthy"}', b"application/json", b""),
        (path, api.tokens.bob, b'{"healthStatus":"healthy"}', b"application/json", b""),
        ("/proxy/instances/missing/health", api.tokens.admin, b'{"healthStatus":"healthy"}',
         b"application/json", b""),
        (path, api.tokens.alice, b'{"healthStatus":"sick"}', b"application/json", b""),
        (path, api.tokens.alice, b'{"healthStatus":"healthy","x":1}', b"application/json", b""),
        (path, api.tokens.alice, b'{"healthStatus":"healthy",', b"application/json", b""),
        (path, api.tokens.alice, b"", b"application/json", b""),
        (path, api.tokens.alice, b'{"healthStatus":"healthy","metrics":{"errorRate":NaN}}',
         b"application/json", b""),
        (path, api.tokens.alice, b'{"healthStatus":"healthy"}', b"text/plain", b""),
        (path, api.tokens.alice, b'{"healthStatus":"healthy"}', b"application/json", b"x=1"),
    )  # fmt: skip
    for request in refused:
        assert await put(*request) == []
    assert passed_on == [(request[0], request[2]) for request in refused]

    # Over HTTP the short path and the route (forced by a query string) answer alike.
    body = {"healthStatus": "unhealthy", "metrics": {"connectionCount": 3}}
    short_answer = await api.call("PUT", path, api.tokens.alice, json=body)
    routed_answer = await api.call("PUT", path + "?via=route", api.tokens.alice, json=body)
    assert short_answer.status_code == routed_answer.status_code == 200
    assert short_answer.headers["content-type"] == routed_answer.headers["content-type"]
    short_data, routed_data = short_answer.json(), routed_answer.json()
    assert short_data["message"] == routed_data["message"]
    short_instance, routed_instance = short_data["data"], routed_data["data"]
    assert short_instance.keys() == routed_instance.keys()
    differing = {key for key in short_instance if short_instance[key] != routed_instance[key]}
    assert differing <= {"lastHealthCheck", "updatedAt", "consecutiveFailures"}, differing
    for data in (short_instance, routed_instance):
        assert data["healthStatus"] == "unhealthy"
        assert data["activeConnections"] == 3


async def test_short_paths_answer_an_unavailable_database_themselves(api: Api) -> None:
    """A database that does not answer is 503/018 from the short path: the route would only wait
    on it a second time (the redundancy read answered after twice the deadline, 3.0 s)."""
    from proxy_failover.core.errors import StorageTimeout
    from proxy_failover.entrypoints.api.hotpath import ShortPaths

    assert api.app is not None
    first = await _register(api, "edge-a", 1)
    service = api.app.state.runtime.service
    asked: list[str] = []

    async def unavailable(*_args: Any, **_kw: Any) -> Any:
        asked.append("database")
        raise StorageTimeout("storage unavailable: no answer in time")

    passed_on: list[str] = []

    async def route(scope: Scope, receive: Receive, send: Send) -> None:
        passed_on.append(scope["path"])

    short = ShortPaths(route, api=api.app)
    service.get_redundancy_status = unavailable
    service.update_instance_health = unavailable
    calls = [
        ("GET", f"/proxy/{PROXY}/redundancy", b""),
        ("PUT", f"/proxy/instances/{first}/health", b'{"healthStatus":"healthy"}'),
    ]
    for method, path, body in calls:
        sent: list[dict[str, Any]] = []

        async def send(message: Message, sent: list[dict[str, Any]] = sent) -> None:
            sent.append(dict(message))

        async def receive(body: bytes = body) -> Message:
            return {"type": "http.request", "body": body, "more_body": False}

        headers = [
            (b"authorization", f"Bearer {api.tokens.alice}".encode()),
            (b"content-type", b"application/json"),
        ]
        scope = {"type": "http", "method": method, "path": path, "query_string": b""}
        await short({**scope, "headers": headers}, receive, send)
        assert sent[0]["status"] == 503, sent
        assert int(dict(sent[0]["headers"])[b"retry-after"]) >= 1
        assert b'"code":"PROXY_FAILOVER_018"' in sent[1]["body"]
    assert passed_on == []  # the route was not asked to try again
    assert asked == ["database", "database"]  # once per call
