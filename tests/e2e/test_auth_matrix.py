"""The authorisation matrix: each /proxy* endpoint by bad tokens, other owner, non-admin, admin."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import jwt

from tests.helpers.api import SECRET, Api

PROXY = "proxy-owned-by-alice"


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def bad_tokens() -> dict[str, str | None]:
    """Tokens that must all be refused with 401/015 (they would otherwise be admin)."""
    now = int(time.time())
    admin = {"sub": "root", "role": "admin", "iat": now, "exp": now + 600}
    return {
        "no token": None,
        "bad signature": jwt.encode(admin, "another-secret-" + "x" * 32, algorithm="HS256"),
        "expired": jwt.encode({**admin, "exp": now - 120}, SECRET, algorithm="HS256"),
        "alg none": f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(admin)}.",
        "not yet valid": jwt.encode({**admin, "nbf": now + 300}, SECRET, algorithm="HS256"),
        "no exp": jwt.encode({"sub": "root", "role": "admin"}, SECRET, algorithm="HS256"),
        "garbage": "not.a.jwt",
    }


@dataclass
class World:
    """Alice's proxy with two healthy instances, the active one set by an admin failover."""

    first: str
    second: str
    event: str


Body = dict[str, Any] | None
PathOf = Callable[[World, Api], Awaitable[str]]


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: PathOf
    body: Callable[[World], Body]
    admin_only: bool
    missing_code: str | None  # what another owner gets (None: nothing is owner-scoped)

    def label(self, world: World) -> str:
        return f"{self.method} {self.path.__name__}"


def fixed(template: str) -> PathOf:
    async def path(world: World, api: Api) -> str:
        return template.format(proxy=PROXY, i=world.first, e=world.event)

    path.__name__ = template
    return path


async def fresh_instance(world: World, api: Api) -> str:
    """DELETE needs an instance of its own each time it succeeds."""
    data = await api.ok(
        "POST",
        "/proxy/instances",
        api.tokens.alice,
        201,
        json={"proxyId": PROXY, "instanceData": {"instanceName": f"spare-{uuid.uuid4().hex}"}},
    )
    return f"/proxy/instances/{data['id']}"


def _no_body(world: World) -> Body:
    return None


def _const(body: dict[str, Any]) -> Callable[[World], Body]:
    return lambda world: body


ENDPOINTS: list[Endpoint] = [
    Endpoint(
        "POST",
        fixed("/proxy/failover/config"),
        _const({"proxyId": PROXY, "config": {"healthyThreshold": 2}}),
        False,
        "PROXY_FAILOVER_002",
    ),
    Endpoint("GET", fixed("/proxy/failover/config/{proxy}"), _no_body, False, "PROXY_FAILOVER_002"),
    Endpoint(
        "POST",
        fixed("/proxy/instances"),
        lambda world: {
            "proxyId": PROXY,
            "instanceData": {"instanceName": f"n-{uuid.uuid4().hex}", "priority": 500},
        },
        False,
        "PROXY_FAILOVER_002",
    ),
    Endpoint("GET", fixed("/proxy/{proxy}/instances"), _no_body, False, "PROXY_FAILOVER_002"),
    Endpoint("GET", fixed("/proxy/instances/{i}"), _no_body, False, "PROXY_FAILOVER_004"),
    Endpoint(
        "PUT",
        fixed("/proxy/instances/{i}/health"),
        _const({"healthStatus": "healthy", "metrics": {"cpuPercent": 1}}),
        False,
        "PROXY_FAILOVER_004",
    ),
    Endpoint(
        "PATCH",
        fixed("/proxy/instances/{i}"),
        _const({"metadata": {"k": "v"}}),
        False,
        "PROXY_FAILOVER_004",
    ),
    Endpoint("DELETE", fresh_instance, _no_body, False, "PROXY_FAILOVER_004"),
    Endpoint(
        "POST",
        fixed("/proxy/instances/{i}/checks"),
        _const({"success": True, "latencyMs": 3}),
        False,
        "PROXY_FAILOVER_004",
    ),
    Endpoint(
        "POST",
        fixed("/proxy/instances/{i}/metrics"),
        _const({"cpuPercent": 50}),
        False,
        "PROXY_FAILOVER_004",
    ),
    Endpoint("GET", fixed("/proxy/instances/{i}/metrics"), _no_body, True, None),
    Endpoint(
        "POST",
        fixed("/proxy/failover/evaluate"),
        _const({"proxyId": PROXY}),
        False,
        "PROXY_FAILOVER_002",
    ),
    Endpoint(
        "PUT",
        fixed("/proxy/failover/events/{e}/complete"),
        _const({"status": "completed"}),
        True,
        None,
    ),
    # after complete: the activation is closed, so the admin's switchover can run
    Endpoint(
        "POST",
        fixed("/proxy/failover/execute"),
        lambda world: {
            "proxyId": PROXY,
            "sourceInstanceId": world.first,
            "targetInstanceId": world.second,
        },
        True,
        None,
    ),
    Endpoint("GET", fixed("/proxy/{proxy}/redundancy"), _no_body, False, "PROXY_FAILOVER_002"),
    Endpoint("PUT", fixed("/proxy/{proxy}/redundancy"), _const({"isDegraded": False}), True, None),
    Endpoint("GET", fixed("/proxy/{proxy}/failover/events"), _no_body, False, "PROXY_FAILOVER_002"),
    Endpoint("GET", fixed("/proxy/{proxy}/route"), _no_body, False, "PROXY_FAILOVER_002"),
    Endpoint("GET", fixed("/proxy/{proxy}/explain"), _no_body, False, "PROXY_FAILOVER_002"),
    Endpoint("GET", fixed("/proxies"), _no_body, False, None),
]


async def _world(api: Api) -> World:
    alice, admin = api.tokens.alice, api.tokens.admin
    await api.ok("POST", "/proxy/failover/config", alice, 201, json={"proxyId": PROXY})
    ids = []
    for name, priority in (("edge-a", 1), ("edge-b", 2)):
        data = await api.ok(
            "POST",
            "/proxy/instances",
            alice,
            201,
            json={"proxyId": PROXY, "instanceData": {"instanceName": name, "priority": priority}},
        )
        ids.append(data["id"])
        await api.ok(
            "PUT", f"/proxy/instances/{data['id']}/health", alice, json={"healthStatus": "healthy"}
        )
    event = await api.ok(
        "POST",
        "/proxy/failover/execute",
        admin,
        json={"proxyId": PROXY, "sourceInstanceId": None, "targetInstanceId": ids[0]},
    )
    return World(first=ids[0], second=ids[1], event=event["id"])


async def test_authorisation_matrix(sqlite_api: Api) -> None:
    api = sqlite_api
    world = await _world(api)
    failures: list[str] = []

    async def send(endpoint: Endpoint, token: str | None) -> tuple[int, dict[str, Any]]:
        path = await endpoint.path(world, api)
        body = endpoint.body(world)
        kwargs: dict[str, Any] = {} if body is None else {"json": body}
        response = await api.call(endpoint.method, path, token, **kwargs)
        return response.status_code, response.json()

    def expect(cell: str, got: tuple[int, dict[str, Any]], status: int, code: str) -> None:
        actual = (got[0], got[1].get("error", {}).get("code"))
        if actual != (status, code):
            failures.append(f"{cell}: expected {status}/{code}, got {actual}")

    for endpoint in ENDPOINTS:
        label = endpoint.label(world)
        for name, token in bad_tokens().items():
            expect(f"{label} [{name}]", await send(endpoint, token), 401, "PROXY_FAILOVER_015")

        other = await send(endpoint, api.tokens.bob)
        if endpoint.admin_only:
            expect(f"{label} [other owner]", other, 403, "PROXY_FAILOVER_016")
        elif endpoint.missing_code is not None:
            expect(f"{label} [other owner]", other, 404, endpoint.missing_code)
        elif other[0] != 200:
            failures.append(f"{label} [other owner]: {other}")

        owner = await send(endpoint, api.tokens.alice)
        if endpoint.admin_only:
            expect(f"{label} [non-admin owner]", owner, 403, "PROXY_FAILOVER_016")
        elif owner[0] not in (200, 201):
            failures.append(f"{label} [non-admin owner]: {owner}")

        admin = await send(endpoint, api.tokens.admin)
        if admin[0] not in (200, 201):
            failures.append(f"{label} [admin]: {admin}")

    assert not failures, "\n".join(failures)
    # bob saw nothing of alice's: /proxies lists nothing for him
    assert await api.ok("GET", "/proxies", api.tokens.bob) == []


async def test_health_detail_is_hidden_from_non_admins(sqlite_api: Api) -> None:
    api = sqlite_api
    world = await _world(api)
    await api.ok(
        "POST",
        f"/proxy/instances/{world.first}/checks",
        api.tokens.alice,
        json={"success": False, "latencyMs": 9, "error": "timeout"},
    )
    for path in (f"/proxy/instances/{world.first}", f"/proxy/{PROXY}/instances"):
        as_owner = json.dumps(await api.ok("GET", path, api.tokens.alice))
        as_admin = json.dumps(await api.ok("GET", path, api.tokens.admin))
        assert "lastError" not in as_owner
        assert "lastLatencyMs" not in as_owner
        assert '"lastError": "timeout"' in as_admin


async def test_roles_claim_grants_admin(sqlite_api: Api) -> None:
    now = int(time.time())
    token = jwt.encode(
        {"sub": "ops", "roles": ["viewer", "admin"], "exp": now + 60}, SECRET, algorithm="HS256"
    )
    assert (await sqlite_api.call("GET", "/proxy/instances/x/metrics", token)).status_code == 404
    viewer = jwt.encode({"sub": "ops", "roles": ["viewer"], "exp": now + 60}, SECRET, "HS256")
    assert await sqlite_api.error("GET", "/proxy/instances/x/metrics", viewer) == (
        403,
        "PROXY_FAILOVER_016",
    )


async def test_clock_skew_within_30_seconds_is_tolerated(sqlite_api: Api) -> None:
    now = int(time.time())
    for claims in (
        {"sub": "alice", "exp": now - 10},
        {"sub": "alice", "exp": now + 60, "nbf": now + 10},
    ):
        token = jwt.encode(claims, SECRET, algorithm="HS256")
        assert (await sqlite_api.call("GET", "/proxies", token)).status_code == 200, claims


async def test_sub_with_control_characters_is_refused(api: Api) -> None:
    """A NUL in ``sub`` reached PostgreSQL as a user id and failed there (500/019)."""
    for sub in ["a\x00b", "tab\there", "line\nbreak"]:
        token = jwt.encode({"sub": sub, "exp": int(time.time()) + 60}, SECRET, algorithm="HS256")
        for method, path, kw in [
            ("GET", "/proxies", {}),
            ("POST", "/proxy/failover/config", {"json": {"proxyId": "sub-check"}}),
        ]:
            response = await api.call(method, path, token, **kw)
            assert response.status_code == 401, (sub, path, response.text)
            assert response.json()["error"]["code"] == "PROXY_FAILOVER_015"
    fine = jwt.encode(
        {"sub": "ünïcode user", "exp": int(time.time()) + 60}, SECRET, algorithm="HS256"
    )
    assert (await api.call("GET", "/proxies", fine)).status_code == 200
