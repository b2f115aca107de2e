"""The outbound policy (docs/security.md): what a user may make proxy-failover connect to.

At registration the API refuses, with 400/001 and nothing stored, webhook URLs, endpoints and
recovery URLs the policy refuses to the caller; at connect time probes, recovery POSTs and webhook
deliveries go only to addresses the policy allows for whoever registered them, the very addresses
checked (a name that resolves elsewhere later, DNS rebinding, reaches nothing). Here the resolver
is injected to play the rebinding name; connections are real.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import pytest

from proxy_failover.adapters.outbound import OutboundGuard
from proxy_failover.adapters.probes import Prober, build_target
from proxy_failover.adapters.webhooks import DeliveryWorker
from proxy_failover.core.model import FailoverConfig, Instance, Notification
from proxy_failover.core.outbound import OutboundPolicy, parse_rules
from proxy_failover.core.webhooks import DeliveryStatus
from proxy_failover.entrypoints.api import create_app
from proxy_failover.store.repository import Store
from tests.helpers.api import Api, Tokens, api_settings, in_process
from tests.helpers.notifications import Repositories
from tests.helpers.processes import wait_for
from tests.helpers.webhook_receiver import WebhookReceiver

SECRET = "a-webhook-secret-of-some-length"
REBOUND = "rebound.example"  # resolves to nothing at registration, to loopback at connect time


async def _to_loopback(host: str, port: int) -> list[str]:
    if host == REBOUND:
        return ["127.0.0.1"]
    raise OSError(f"{host} does not resolve")


REBINDING = OutboundGuard(OutboundPolicy(), resolve=_to_loopback)


@pytest.fixture
async def strict_api(database_url: str, tokens: Tokens) -> AsyncIterator[Api]:
    """The app under the built-in policy (the suite otherwise allows loopback to everyone), with
    10.9.0.0/16 denied and 10.8.0.0/16 allowed."""
    settings = api_settings(database_url, outbound_allow="10.8.0.0/16", outbound_deny="10.9.0.0/16")
    app = create_app(settings)
    async with in_process(app, tokens) as api:
        yield api


REFUSED_TO_EVERYONE = [
    "http://169.254.169.254/latest/meta-data/",
    "http://metadata.google.internal/computeMetadata/v1/",
    "http://[::ffff:169.254.169.254]/",
    "http://0/",
    "http://10.9.0.7/hook",  # PFO_OUTBOUND_DENY
]
REFUSED_TO_NON_ADMINS = [
    "http://2130706433/",  # 127.0.0.1 as one number
    "http://127.1:8080/",
    "http://localhost:9/",
    "http://[::1]:9/",
    "http://10.0.0.1/hook",
    "http://192.168.1.1/hook",
    "http://172.16.5.5/hook",
]


async def _subscribe(api: Api, token: str, url: str) -> httpx.Response:
    return await api.call(
        "POST", "/proxy/edge/webhooks", token, json={"url": url, "secret": SECRET}
    )


async def test_webhook_urls_the_policy_refuses_are_400_and_nothing_is_stored(
    strict_api: Api,
) -> None:
    api, alice, admin = strict_api, strict_api.tokens.alice, strict_api.tokens.admin
    await api.ok("POST", "/proxy/failover/config", alice, 201, json={"proxyId": "edge"})
    for url in REFUSED_TO_EVERYONE + REFUSED_TO_NON_ADMINS:
        response = await _subscribe(api, alice, url)
        assert response.status_code == 400, (url, response.text)
        error = response.json()["error"]
        assert error["code"] == "PROXY_FAILOVER_001", url
        assert error["details"] == {"field": "url"}, url
        assert "outbound policy" in error["message"], error
    for url in REFUSED_TO_EVERYONE:
        assert (await _subscribe(api, admin, url)).status_code == 400, url
    assert await api.ok("GET", "/proxy/edge/webhooks", alice) == []

    for url in REFUSED_TO_NON_ADMINS:  # an admin may point webhooks inside the network
        assert (await _subscribe(api, admin, url)).status_code == 201, url
    for url in ("http://10.8.1.1/hook", "http://8.8.8.8/hook", "http://hook.invalid/"):
        assert (await _subscribe(api, alice, url)).status_code == 201, url  # allowed, public,
        # and a name that does not resolve yet (judged again when connecting)


async def test_instance_endpoints_and_recovery_urls_are_checked_on_register_and_patch(
    strict_api: Api,
) -> None:
    api, alice, admin = strict_api, strict_api.tokens.alice, strict_api.tokens.admin

    async def register(token: str, name: str, **fields: str) -> httpx.Response:
        body = {"proxyId": "edge", "instanceData": {"instanceName": name, **fields}}
        return await api.call("POST", "/proxy/instances", token, json=body)

    for fields in (
        {"endpoint": "127.0.0.1:8080"},
        {"endpoint": "http://169.254.169.254/health"},
        {"endpoint": "8.8.8.8:80", "recoveryUrl": "http://10.0.0.5/restart"},
    ):
        response = await register(alice, "probe-scan", **fields)
        assert response.status_code == 400, (fields, response.text)
        error = response.json()["error"]
        assert error["code"] == "PROXY_FAILOVER_001", error
        assert error["details"]["field"] in fields, error
    assert (await api.call("GET", "/proxy/edge/instances", alice)).status_code == 404  # none made

    public = await register(alice, "relay-a", endpoint="8.8.8.8:1935")
    assert public.status_code == 201, public.text
    relay_id = public.json()["data"]["id"]
    patch = await api.call(
        "PATCH", f"/proxy/instances/{relay_id}", alice, json={"endpoint": "10.0.0.7:1935"}
    )
    assert patch.status_code == 400
    assert patch.json()["error"]["details"] == {"field": "endpoint"}
    stored = await api.ok("GET", f"/proxy/instances/{relay_id}", alice)
    assert stored["endpoint"] == "8.8.8.8:1935"

    inside = await register(admin, "relay-b", endpoint="10.0.0.8:1935")
    assert inside.status_code == 201, inside.text
    metadata = await register(admin, "relay-c", endpoint="http://169.254.169.254/")
    assert metadata.status_code == 400


def _instance(endpoint: str, *, trusted: bool) -> Instance:
    return Instance("i-1", "edge", "alice", "relay", endpoint=endpoint, outbound_trusted=trusted)


async def test_probes_connect_only_to_checked_addresses(unused_tcp_port: int) -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", unused_tcp_port)
    prober = Prober(guard=REBINDING)
    config = FailoverConfig(id="c", proxy_id="edge", user_id="alice")
    endpoint = f"http://{REBOUND}:{unused_tcp_port}/"
    try:
        # a non-admin's name, accepted at registration, rebound to loopback: refused
        refused = await prober.probe(build_target(_instance(endpoint, trusted=False), config))
        assert not refused.success
        assert refused.error == (
            f"refused by the outbound policy: {REBOUND} (127.0.0.1) is a loopback address"
        )
        # the same for an admin's instance: probed, at the checked address
        allowed = await prober.probe(build_target(_instance(endpoint, trusted=True), config))
        assert allowed.success, allowed
        metadata = await prober.probe(
            build_target(_instance("169.254.169.254:80", trusted=True), config)
        )
        assert not metadata.success
        assert "link-local or metadata" in str(metadata.error)
    finally:
        await prober.aclose()
        server.close()
        await server.wait_closed()


async def test_recovery_posts_go_only_where_the_registrant_may_reach() -> None:
    receiver = await WebhookReceiver(SECRET).start()
    prober = Prober(guard=REBINDING)
    url = f"http://{REBOUND}:{receiver.port}/recover"
    try:
        refused = await prober.request_recovery(url, {"attempt": 1}, 2.0, trusted=False)
        assert not refused.success
        assert "outbound policy" in str(refused.error), refused
        assert receiver.received == []
        allowed = await prober.request_recovery(url, {"attempt": 1}, 2.0, trusted=True)
        assert allowed.error == "HTTP status 401", (
            allowed
        )  # arrived (the receiver wants a signature)
        assert len(receiver.received) == 1
        assert receiver.received[0].headers["host"] == f"{REBOUND}:{receiver.port}"
    finally:
        await prober.aclose()
        await receiver.stop()


async def test_webhook_deliveries_follow_the_subscribers_role_at_connect_time(
    store: Store, repos: Repositories
) -> None:
    hooks = repos.webhooks
    receiver = await WebhookReceiver(SECRET).start()
    worker = DeliveryWorker(repos.queue, poll_interval_seconds=0.05, guard=REBINDING)
    url = f"http://{REBOUND}:{receiver.port}/hook"
    now = datetime.now(UTC)
    try:
        await hooks.create_subscription("owned", "alice", url, SECRET, None, now)
        await hooks.create_subscription(
            "ops",
            "root",
            url,
            SECRET,
            None,
            now,
            include_health_detail=True,  # an admin's
        )
        for proxy in ("owned", "ops"):
            async with store.write() as unit:
                unit.notify(Notification("instance.unhealthy", proxy, 1, now, {}))
        worker.start()

        async def attempted() -> bool:
            owned = await hooks.list_deliveries("owned")
            ops = await hooks.list_deliveries("ops")
            return bool(owned and owned[0].attempts and ops and ops[0].attempts)

        await wait_for(attempted, within=10)
        owned = (await hooks.list_deliveries("owned"))[0]
        ops = (await hooks.list_deliveries("ops"))[0]
        assert owned.status is DeliveryStatus.PENDING  # failed, will retry, reaches nothing
        assert "outbound policy" in str(owned.last_error), owned
        assert ops.status is DeliveryStatus.DELIVERED, ops
        assert [r.payload["proxyId"] for r in receiver.received] == ["ops"]
    finally:
        await worker.stop()
        await receiver.stop()


def test_settings_parse_the_rules_and_refuse_bad_ones() -> None:
    settings = api_settings("sqlite+aiosqlite:///:memory:", outbound_deny="10.0.0.0/8, *.corp")
    assert settings.outbound_policy.deny == parse_rules(["10.0.0.0/8", "*.corp"])
    with pytest.raises(ValueError, match="not an IP address, network or host name"):
        api_settings("sqlite+aiosqlite:///:memory:", outbound_allow="10.0.0.0/33")
